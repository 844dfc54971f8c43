//! Malformed input never crashes the pipeline and is never dropped: every bad line lands in
//! `custody.quarantine` with its reason, good lines around it are accepted, counts balance.

use std::io::Write;

use custody_tests::{custody, generate_ndjson, read_tables, rows};

fn valid(tenant: &str, id: &str) -> String {
    serde_json::json!({
        "event_id": id,
        "schema_version": "1.0",
        "tenant_id": tenant,
        "session_id": "s-1",
        "agent_id": "a-1",
        "event_type": "TASK_FAILED",
        "timestamp": "2026-03-08T14:47:00Z",
        "parent_event_id": null,
        "payload": {"reason": "timeout", "last_state": "mail ops@example.com"}
    })
    .to_string()
}

#[test]
fn malformed_lines_are_quarantined_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let good = valid("acme", "e-1");
    let mut bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"event_id\": \"x\", broken".to_vec(), "invalid_json"),
        (
            good.replace("\"tenant_id\":\"acme\",", "").into_bytes(),
            "invalid_envelope",
        ),
        (
            good.replace("\"schema_version\":\"1.0\"", "\"schema_version\":\"9.1\"")
                .into_bytes(),
            "unsupported_version",
        ),
        (
            good.replace("\"reason\":\"timeout\"", "\"reason\":42")
                .into_bytes(),
            "invalid_payload",
        ),
        (
            good.replace("\"session_id\":\"s-1\"", "\"session_id\":7")
                .into_bytes(),
            "invalid_envelope",
        ),
        (
            b"{\"tenant_id\": \"acme\", \"x\": \"\xff\xfe\"}".to_vec(),
            "invalid_utf8",
        ),
        (b"[1, 2, 3]".to_vec(), "not_an_object"),
        (Vec::new(), "invalid_json"),
        (
            good.replace("TASK_FAILED", "TASK_EXPLODED").into_bytes(),
            "unknown_event_type",
        ),
        (
            good.replace("2026-03-08T14:47:00Z", "08/03/2026")
                .into_bytes(),
            "invalid_timestamp",
        ),
    ];
    let mut huge = b"{\"tenant_id\":\"acme\",\"pad\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 10 << 20));
    huge.extend(b"\"}");
    bad.push((huge, "too_large"));

    writeln!(f, "{}", valid("acme", "e-0")).unwrap();
    for (i, (line, _)) in bad.iter().enumerate() {
        f.write_all(line).unwrap();
        f.write_all(b"\n").unwrap();
        writeln!(f, "{}", valid("globex", &format!("g-{i}"))).unwrap();
    }
    drop(f);
    let n_good = bad.len() + 1;
    let n = bad.len() + n_good;

    let wh = dir.path().join("wh");
    let stdout = custody(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains(&format!(
            "{n} in = {n_good} accepted + {} quarantined (balanced)",
            bad.len()
        )),
        "{stdout}"
    );
    let tables = read_tables(&wh);
    assert_eq!(rows(&tables, "events").len(), n_good);
    let mut quarantine = rows(&tables, "quarantine").clone();
    quarantine.sort_by_key(|q| q["source_offset"].as_i64().unwrap());
    assert_eq!(quarantine.len(), bad.len());
    for (q, (line, kind)) in quarantine.iter().zip(&bad) {
        assert_eq!(q["reason_kind"], *kind, "{q}");
        assert!(!q["reason"].as_str().unwrap().is_empty());
        assert_eq!(q["raw_len"].as_i64().unwrap(), line.len() as i64);
        let redacted = q["raw_redacted"].as_str().unwrap();
        assert!(!redacted.contains("ops@example.com"), "{redacted}");
    }
    let reasons: Vec<&str> = quarantine
        .iter()
        .map(|q| q["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons[1].contains("missing field `tenant_id`"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("\"9.1\""), "{reasons:?}");
    assert!(reasons[10].contains("byte limit"), "{reasons:?}");
}

/// The emitter-side chain: an event lost between producer and pipeline makes the agent's next
/// event point at a predecessor the pipeline never saw; that event is quarantined with the
/// reason, and the agent's chain continues after it.
#[test]
fn emitter_chain_break_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    generate_ndjson(&input, 300, 3);
    let text = std::fs::read_to_string(&input).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let lost = lines.remove(150);
    let lost: serde_json::Value = serde_json::from_str(lost).unwrap();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let wh = dir.path().join("wh");
    let stdout = custody(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("299 in = 298 accepted + 1 quarantined (balanced)"),
        "{stdout}"
    );
    let tables = read_tables(&wh);
    let q = &rows(&tables, "quarantine")[0];
    assert_eq!(q["reason_kind"], "emitter_chain_break");
    assert_eq!(q["tenant_id"], lost["tenant_id"]);
    assert!(
        q["reason"]
            .as_str()
            .unwrap()
            .contains(lost["agent_id"].as_str().unwrap()),
        "{q}"
    );
}
