//! Retention over a synthetic 400-day span of three tenants with different policies (180 days,
//! 365 days, 180 days with model decisions kept 30): `custody retention` removes exactly the
//! events past their policy (pyiceberg reads back the rest), no byte of them is left in any
//! file of the warehouse (raw bytes, and every value and statistic of every Parquet file,
//! referenced or not), `custody verify` passes and reports the expired ranges, inclusion
//! proofs of retained events verify against the signed checkpoints, the retention report
//! equals its golden file, the pipeline resumes over the trimmed log, and a later application
//! removes quarantined records and their sealed copies too.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;

use custody_operators::merkle;
use custody_schemas::time::{format_rfc3339, parse_rfc3339};
use custody_tests::{
    await_line, custody_command, files_under, found_under, free_addr, get_json, manifest_dir,
    python, read_columns, read_tables, rows, serve_command, spanned_workload,
};
use serde_json::{Value, json};

const DAY_US: i64 = 86_400_000_000;
const SIGNING_KEY: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// Days each tenant keeps each event type (`None`: the tenant's days).
fn policy_days(tenant: &str, event_type: &str) -> Option<i64> {
    if event_type == "RETENTION_APPLIED" {
        return None;
    }
    Some(match (tenant, event_type) {
        ("tenant-0001", _) => 365,
        ("tenant-0002", "MODEL_DECISION") => 30,
        _ => 180,
    })
}

/// Whether an event of `tenant` and `event_type` at `time_us` expires at `now_us`.
fn expires(tenant: &str, event_type: &str, time_us: i64, now_us: i64) -> bool {
    let today = now_us.div_euclid(DAY_US) * DAY_US;
    policy_days(tenant, event_type).is_some_and(|d| time_us < today - d * DAY_US)
}

/// `custody ARGS` with the test's signing key, asserting success; stdout.
fn run(args: &[&str]) -> String {
    let out = custody_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .env("CUSTODY_SIGNING_KEY", SIGNING_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custody {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(dir: &Path) -> String {
    let path = dir.join("custody.toml");
    std::fs::write(
        &path,
        r#"
[serve]
listen = "off"
[vault]
tokens = true
content = true
[retention]
days = 180
interval = "0s"
[tenants.tenant-0001]
retention_days = 365
[tenants.tenant-0002]
retention_event_types = { MODEL_DECISION = 30 }
"#,
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// `v` with every time written relative to `now_us` (`now-123456s`).
fn relative(v: &Value, now_us: i64) -> Value {
    match v {
        Value::String(s) => match parse_rfc3339(s) {
            Ok(t) => json!(format!("now{:+}s", (t - now_us) / 1_000_000)),
            Err(_) => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| relative(x, now_us)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), relative(x, now_us)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// A retention report without what depends on the run (signatures, epochs, offsets, the
/// day it runs).
fn stable(report: &Value, now_us: i64) -> Value {
    let rows: Vec<Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!({
                "requirement": r["requirement"],
                "metric": r["metric"],
                "status": r["status"],
                "value": relative(&r["value"], now_us),
            })
        })
        .collect();
    json!({"report": report["report"], "tenant_id": report["tenant_id"], "rows": rows})
}

#[test]
fn retention_removes_exactly_the_expired_events_and_every_proof_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // Up to noon today: the cutoffs (whole days back from midnight) fall at fixed points.
    let (lines, now_us) = spanned_workload(dir.path(), 3000, 3, 400);
    let now = format_rfc3339(now_us);
    // The last 300 events arrive after the first application.
    let (first, later) = lines.split_at(lines.len() - 300);
    let input = dir.path().join("events.ndjson");
    let mut text = first.join("\n") + "\n";
    // Rejected records of two tenants (quarantined, and sealed in the vault).
    text.push_str(
        "{\"tenant_id\":\"tenant-0000\",\"event_type\":\"TASK_FAILED\",\"payload\":{\"reason\":\"quarantined kestrel memo\"}}\n",
    );
    text.push_str(
        "{\"tenant_id\":\"tenant-0001\",\"event_type\":\"TASK_FAILED\",\"payload\":{\"reason\":\"quarantined osprey memo\"}}\n",
    );
    std::fs::write(&input, &text).unwrap();
    let cfg = config(dir.path());
    let wh = dir.path().join("wh");
    let whs = wh.to_str().unwrap();
    run(&[
        "--config",
        &cfg,
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        whs,
    ]);

    // What expires at `now`, from the input alone.
    let parsed: Vec<Value> = first
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let time = |e: &Value| parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
    let field = |e: &Value, f: &str| e[f].as_str().unwrap().to_string();
    // A legal hold on tenant-0000's first session, which retention would otherwise remove.
    let held_session = field(
        parsed
            .iter()
            .find(|e| e["tenant_id"] == "tenant-0000")
            .unwrap(),
        "session_id",
    );
    let hold = run(&[
        "--config",
        &cfg,
        "hold",
        "place",
        "--warehouse",
        whs,
        "--tenant",
        "tenant-0000",
        "--session",
        &held_session,
        "--hold-id",
        "H-42",
        "--reason",
        "matter 42",
        "--requested-by",
        "counsel@tenant-0000",
    ]);
    assert_eq!(hold.trim(), "H-42");
    let held =
        |e: &Value| e["tenant_id"] == "tenant-0000" && e["session_id"] == held_session.as_str();
    let (gone, kept): (Vec<&Value>, Vec<&Value>) = parsed.iter().partition(|e| {
        !held(e)
            && expires(
                &field(e, "tenant_id"),
                &field(e, "event_type"),
                time(e),
                now_us,
            )
    });
    let held_expired = parsed
        .iter()
        .filter(|e| held(e) && expires("tenant-0000", &field(e, "event_type"), time(e), now_us))
        .count();
    assert!(held_expired > 0);
    assert!(
        gone.len() > 1000 && kept.len() > 1000,
        "{} {}",
        gone.len(),
        kept.len()
    );
    // Model decisions of tenant-0002 expire after 30 days, its other events after 180.
    assert!(gone.iter().any(|e| e["tenant_id"] == "tenant-0002"
        && e["event_type"] == "MODEL_DECISION"
        && time(e) > now_us - 100 * DAY_US));
    // The sealed content of expired events, as stored before.
    let before = read_tables(&wh);
    let gone_ids: HashSet<String> = gone.iter().map(|e| field(e, "event_id")).collect();
    let sealed_gone: Vec<String> = rows(&before, "vault")
        .iter()
        .filter(|v| {
            v["kind"] == "content"
                && gone_ids.contains(v["ref"].as_str().unwrap().split('#').next().unwrap())
        })
        .map(|v| v["sealed"].as_str().unwrap().to_string())
        .collect();
    assert!(sealed_gone.len() > 100, "{}", sealed_gone.len());

    let out = run(&[
        "--config",
        &cfg,
        "retention",
        "--warehouse",
        whs,
        "--now",
        &now,
    ]);
    assert!(out.contains("recorded as RETENTION_APPLIED"), "{out}");

    // Exactly the expired events are gone; each tenant's application is recorded.
    let tables = read_columns(
        &wh,
        &[
            "events:tenant_id,seq,event_id,event_type,payload",
            "expired",
            "quarantine",
        ],
    );
    let stored: BTreeSet<String> = rows(&tables, "events")
        .iter()
        .filter(|e| {
            !["RETENTION_APPLIED", "LEGAL_HOLD_PLACED"].contains(&e["event_type"].as_str().unwrap())
        })
        .map(|e| field(e, "event_id"))
        .collect();
    let want: BTreeSet<String> = kept.iter().map(|e| field(e, "event_id")).collect();
    assert_eq!(stored, want);
    let applied: Vec<&Value> = rows(&tables, "events")
        .iter()
        .filter(|e| e["event_type"] == "RETENTION_APPLIED")
        .collect();
    assert_eq!(applied.len(), 3);
    let mut declared: BTreeMap<String, Value> = BTreeMap::new();
    for e in &applied {
        let tenant = field(e, "tenant_id");
        let payload: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
        let expired = gone
            .iter()
            .filter(|g| g["tenant_id"] == tenant.as_str())
            .count();
        assert_eq!(payload["expired_events"], expired as u64, "{payload}");
        let held_here = if tenant == "tenant-0000" {
            held_expired
        } else {
            0
        };
        assert_eq!(payload["held_events"], held_here as u64, "{payload}");
        let leaves = rows(&tables, "expired")
            .iter()
            .filter(|x| x["tenant_id"] == tenant.as_str())
            .count();
        assert_eq!(leaves, expired, "{tenant}");
        declared.insert(tenant, payload["expired_ranges"].clone());
    }
    // Rejected records are not yet past any policy.
    assert_eq!(rows(&tables, "quarantine").len(), 2);

    // Erasure of a held tenant is refused, naming the hold.
    let refused = custody_command()
        .args([
            "--config",
            &cfg,
            "erase",
            "--warehouse",
            whs,
            "--tenant",
            "tenant-0000",
        ])
        .args(["--requested-by", "dpo@tenant-0000", "--reason", "GDPR-1"])
        .env("CUSTODY_SIGNING_KEY", SIGNING_KEY)
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("legal hold") && why.contains("H-42"),
        "{why}"
    );

    // No byte of them is left: ids (text and 16 bytes) and sealed content, in any file.
    let referenced: HashSet<String> = kept
        .iter()
        .filter_map(|e| e["parent_event_id"].as_str().map(str::to_string))
        .collect();
    let mut needles: Vec<String> = gone_ids.difference(&referenced).cloned().collect();
    needles.extend(sealed_gone.iter().cloned());
    assert!(needles.len() > 1000);
    let left = found_under(&wh, &needles);
    assert!(
        left.is_empty(),
        "{} expired values remain, e.g. {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
    // The search finds what is kept (it can fail).
    let kept_ids: Vec<String> = want.iter().take(50).cloned().collect();
    assert_eq!(found_under(&wh, &kept_ids).len(), 50);

    // The chains verify through the expired leaves, and verify says which were expired.
    let verified: Value = serde_json::from_str(&run(&[
        "--config",
        &cfg,
        "verify",
        "--warehouse",
        whs,
        "--json",
    ]))
    .unwrap();
    for report in verified.as_array().unwrap() {
        assert_eq!(report["problems"], json!([]), "{report}");
        if let Some(ranges) = declared.get(report["tenant_id"].as_str().unwrap()) {
            assert_eq!(&report["expired_ranges"], ranges, "{report}");
        }
    }

    // So do an export of the log, and the independent verifier (written from the format's
    // specification) on both.
    let key = files_under(&wh.join("keys"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "pub"))
        .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
        .unwrap();
    let bundle = dir.path().join("bundle");
    let bundle_s = bundle.to_str().unwrap();
    run(&[
        "--config",
        &cfg,
        "export",
        "--warehouse",
        whs,
        "--out",
        bundle_s,
    ]);
    assert!(bundle.join("expired.ndjson").exists());
    let exported: Value = serde_json::from_str(&run(&[
        "--config",
        &cfg,
        "verify",
        "--export",
        bundle_s,
        "--trusted-key",
        &key,
        "--json",
    ]))
    .unwrap();
    for source in [vec!["--warehouse", whs], vec![bundle_s]] {
        let out = Command::new(python())
            .arg(manifest_dir().join("py/verify_bundle.py"))
            .args(&source)
            .args(["--trusted-key", &key])
            .output()
            .unwrap();
        let py: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(out.status.success(), "{source:?}: {py}");
        for (tenant, ranges) in &declared {
            assert_eq!(&py[tenant]["expired_ranges"], ranges, "{source:?}");
        }
    }
    for report in exported.as_array().unwrap() {
        assert_eq!(report["problems"], json!([]), "{report}");
        if let Some(ranges) = declared.get(report["tenant_id"].as_str().unwrap()) {
            assert_eq!(&report["expired_ranges"], ranges, "{report}");
        }
    }

    // Inclusion proofs of retained events verify against the signed checkpoints, and the
    // retention report is as recorded.
    let addr = free_addr();
    let mut serve = serve_command(&wh, &addr);
    serve.args(["--config", &cfg]);
    let server = await_line(serve.spawn().unwrap(), "views rebuilt");
    // The reports first: each request is chained into its tenant's log once answered.
    let golden = manifest_dir().join("golden/retention-report.json");
    let mut reports = serde_json::Map::new();
    for tenant in ["tenant-0001", "tenant-0002"] {
        let (code, report) = get_json(
            &addr,
            &format!("/v1/tenants/{tenant}/reports/eu-ai-act-retention"),
            "",
        );
        assert_eq!(code, 200, "{report}");
        reports.insert(tenant.to_string(), stable(&report, now_us));
    }
    let hash = |v: &Value| -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    for e in kept.iter().step_by(97) {
        let path = format!(
            "/v1/tenants/{}/proofs/inclusion?event_id={}",
            field(e, "tenant_id"),
            field(e, "event_id")
        );
        let (code, p) = get_json(&addr, &path, "");
        assert_eq!(code, 200, "{path}: {p}");
        let proof: Vec<[u8; 32]> = p["proof"].as_array().unwrap().iter().map(hash).collect();
        assert!(merkle::verify_inclusion(
            &hash(&p["leaf_hash"]),
            p["seq"].as_u64().unwrap(),
            p["tree_size"].as_u64().unwrap(),
            &proof,
            &hash(&p["checkpoint"]["root"]),
        ));
    }
    // An administrator places a hold over the API (open here: development mode); the serving
    // pipeline chains it, and the API lists it.
    let range_from = format_rfc3339(now_us - 300 * DAY_US);
    let range_to = format_rfc3339(now_us - 250 * DAY_US);
    let (code, placed) = custody_tests::post_json(
        &addr,
        "/v1/tenants/tenant-0001/holds",
        "",
        &json!({"hold_id": "H-API", "from": range_from, "to": range_to, "reason": "regulator inquiry"}),
    );
    assert_eq!(code, 202, "{placed}");
    let (code, bad) = custody_tests::post_json(
        &addr,
        "/v1/tenants/tenant-0001/holds",
        "",
        &json!({"session_id": "s", "agent_id": "a", "reason": "two scopes"}),
    );
    assert_eq!(code, 400, "{bad}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, list) = get_json(&addr, "/v1/tenants/tenant-0001/holds", "");
        assert_eq!(code, 200, "{list}");
        if list["holds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hold_id"] == "H-API")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the API's hold was not chained: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    drop(server);
    let got = serde_json::to_string_pretty(&Value::Object(reports)).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    assert_eq!(
        got,
        std::fs::read_to_string(&golden).unwrap(),
        "{}",
        golden.display()
    );

    // The pipeline resumes over the trimmed log.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str(&(later.join("\n") + "\n"));
    std::fs::write(&input, text).unwrap();
    run(&[
        "--config",
        &cfg,
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        whs,
    ]);
    let events = read_columns(&wh, &["events:event_id,event_type"]);
    assert_eq!(
        rows(&events, "events")
            .iter()
            .filter(|e| e["event_type"] != "AUDIT_LOG_ACCESSED")
            .count(),
        kept.len() + 3 + 2 + later.len(),
        "retained, applications, holds and later events"
    );
    let listed: Value = serde_json::from_str(&run(&[
        "--config",
        &cfg,
        "hold",
        "list",
        "--warehouse",
        whs,
        "--json",
    ]))
    .unwrap();
    let ids: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hold_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["H-42", "H-API"]));
    // The session hold is released: the session goes with the next application.
    run(&[
        "--config",
        &cfg,
        "hold",
        "release",
        "--warehouse",
        whs,
        "--tenant",
        "tenant-0000",
        "--hold-id",
        "H-42",
        "--reason",
        "matter closed",
        "--requested-by",
        "counsel@tenant-0000",
    ]);

    // Later, every event of tenant-0000 and its rejected record are past its 180 days;
    // tenant-0001's record is within its 365.
    let later_now = format_rfc3339(now_us + 200 * DAY_US);
    let sealed_records = |tenant: &str| -> Vec<String> {
        rows(&read_tables(&wh), "vault")
            .iter()
            .filter(|v| v["kind"] == "quarantine" && v["tenant_id"] == tenant)
            .map(|v| v["sealed"].as_str().unwrap().to_string())
            .collect()
    };
    let quarantined_sealed = sealed_records("tenant-0000");
    assert_eq!(quarantined_sealed.len(), 1);
    run(&[
        "--config",
        &cfg,
        "retention",
        "--warehouse",
        whs,
        "--now",
        &later_now,
    ]);
    let tables = read_tables(&wh);
    let records: Vec<&Value> = rows(&tables, "quarantine").iter().collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["tenant_id"], "tenant-0001");
    assert_eq!(sealed_records("tenant-0001").len(), 1);
    assert!(sealed_records("tenant-0000").is_empty());
    let left: Vec<&str> = rows(&tables, "events")
        .iter()
        .filter(|e| e["tenant_id"] == "tenant-0000")
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    let lifecycle = [
        "RETENTION_APPLIED",
        "LEGAL_HOLD_PLACED",
        "LEGAL_HOLD_RELEASED",
    ];
    assert!(left.iter().all(|t| lifecycle.contains(t)), "{left:?}");
    // tenant-0001's events in the API's held range are kept; its others before the cutoff go.
    let (from_us, to_us) = (now_us - 300 * DAY_US, now_us - 250 * DAY_US);
    let in_range: BTreeSet<String> = parsed
        .iter()
        .filter(|e| e["tenant_id"] == "tenant-0001" && (from_us..to_us).contains(&time(e)))
        .map(|e| field(e, "event_id"))
        .collect();
    assert!(!in_range.is_empty());
    let stored_0001: BTreeSet<String> = rows(&tables, "events")
        .iter()
        .filter(|e| e["tenant_id"] == "tenant-0001")
        .map(|e| field(e, "event_id"))
        .collect();
    assert!(in_range.is_subset(&stored_0001));
    assert!(!parsed.iter().any(|e| e["tenant_id"] == "tenant-0001"
        && time(e) < from_us
        && stored_0001.contains(&field(e, "event_id"))));
    assert!(found_under(&wh, &quarantined_sealed).is_empty());
    assert!(found_under(&wh, &["quarantined kestrel memo".to_string()]).is_empty());
    let verified: Value = serde_json::from_str(&run(&[
        "--config",
        &cfg,
        "verify",
        "--warehouse",
        whs,
        "--json",
    ]))
    .unwrap();
    for report in verified.as_array().unwrap() {
        assert_eq!(report["problems"], json!([]), "{report}");
    }

    // Erasure overriding the API's hold is recorded with the hold it overrode.
    let out = run(&[
        "--config",
        &cfg,
        "erase",
        "--warehouse",
        whs,
        "--tenant",
        "tenant-0001",
        "--requested-by",
        "dpo@tenant-0001",
        "--reason",
        "GDPR-2",
        "--override-hold",
        "court order 7",
    ]);
    assert!(out.contains("overrode 1 legal hold(s): H-API"), "{out}");
    let erased = read_columns(&wh, &["events:tenant_id,event_type,payload"]);
    let payload: Value = rows(&erased, "events")
        .iter()
        .find(|e| e["tenant_id"] == "tenant-0001" && e["event_type"] == "DATA_ERASED")
        .map(|e| serde_json::from_str(e["payload"].as_str().unwrap()).unwrap())
        .unwrap();
    assert_eq!(payload["overridden_holds"], json!(["H-API"]));
    assert_eq!(payload["override_reason"], "court order 7");
}
