//! Crypto-shredding: with the vault on, a tenant's token values and text content are sealed
//! under its data keys and only commitments are chained. `custody reveal` works (and is
//! recorded) until `custody erase`; afterwards no plaintext of the tenant's PII or content is
//! anywhere under the warehouse (every file's bytes, and every decoded table value), reveal
//! fails, the erasure is a chained event, and `custody verify` still passes. The same search
//! finds the content in a warehouse without the vault, so it can fail.

use std::path::Path;

use custody_schemas::EventType;
use custody_tests::{custody, custody_output, files_under, generate_ndjson, read_tables, rows};
use serde_json::Value;

const TENANT: &str = "tenant-0000";

/// Every string in `v`.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Plaintext the tenant sent: PII values and the non-PII fragments of its text fields, less
/// values that are not the tenant's content (tool names also found in other fields or other
/// tenants' events).
fn needles(input: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(input).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut public = Vec::new();
    for event in &events {
        if event["tenant_id"] != TENANT {
            strings(event, &mut public);
            continue;
        }
        let ty = EventType::parse(event["event_type"].as_str().unwrap()).unwrap();
        for (field, value) in event["payload"].as_object().unwrap() {
            if !ty.text_fields().contains(&field.as_str()) {
                strings(value, &mut public);
            }
        }
    }
    let public: std::collections::HashSet<&str> = public.into_iter().collect();
    let mut out = Vec::new();
    for event in &events {
        if event["tenant_id"] != TENANT {
            continue;
        }
        let ty = EventType::parse(event["event_type"].as_str().unwrap()).unwrap();
        for field in ty.text_fields() {
            let Some(text) = event["payload"][*field].as_str() else {
                continue;
            };
            let mut last = 0;
            for span in custody_operators::pii::scan(text) {
                out.push(text[span.start..span.end].to_string());
                out.push(text[last..span.start].trim().to_string());
                last = span.end;
            }
            out.push(text[last..].trim().to_string());
        }
    }
    out.retain(|n| n.len() >= 10 && !public.contains(n.as_str()));
    out.sort();
    out.dedup();
    out
}

/// The needles found in the warehouse: in any file's bytes, or in any decoded table value.
fn found(wh: &Path, needles: &[String]) -> Vec<String> {
    // Lossy UTF-8 keeps every ASCII byte in place, and the needles are valid UTF-8.
    let mut haystacks: Vec<String> = files_under(wh)
        .into_iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
        .collect();
    haystacks.push(read_tables(wh).to_string());
    needles
        .iter()
        .filter(|n| haystacks.iter().any(|h| h.contains(n.as_str())))
        .cloned()
        .collect()
}

fn config(dir: &Path, vault: bool) -> String {
    let path = dir.join(format!("vault-{vault}.toml"));
    std::fs::write(
        &path,
        format!("[vault]\ntokens = {vault}\ncontent = {vault}\n[serve]\nlisten = \"off\"\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn erased_tenants_leave_no_plaintext_and_chains_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    let input_arg = input.to_str().unwrap();
    generate_ndjson(&input, 600, 3);
    // A rejected record of the tenant: its redacted copy is sealed too.
    let rejected = "quarantined nightingale dossier";
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str(&format!(
        "{{\"tenant_id\":\"{TENANT}\",\"event_type\":\"TASK_FAILED\",\"payload\":{{\"reason\":\"{rejected}\"}}}}\n"
    ));
    std::fs::write(&input, text).unwrap();
    let mut needles = needles(&input);
    needles.push(rejected.to_string());
    assert!(needles.len() > 100, "{}", needles.len());

    // Without the vault, the content is in the lake (the search can find it).
    let plain = dir.path().join("plain");
    let cfg = config(dir.path(), false);
    custody(&[
        "--config",
        &cfg,
        "run",
        "--input",
        input_arg,
        "--warehouse",
        plain.to_str().unwrap(),
    ]);
    let in_plain = found(&plain, &needles);
    assert!(in_plain.len() > 50 && in_plain.iter().any(|n| n == rejected));

    // With the vault.
    let wh = dir.path().join("wh");
    let whs = wh.to_str().unwrap();
    let cfg = config(dir.path(), true);
    custody(&[
        "--config",
        &cfg,
        "run",
        "--input",
        input_arg,
        "--warehouse",
        whs,
    ]);
    let tables = read_tables(&wh);
    let token = rows(&tables, "vault")
        .iter()
        .find(|v| v["tenant_id"] == TENANT && v["kind"] == "token")
        .map(|v| v["ref"].as_str().unwrap().to_string())
        .unwrap();
    // `custody COMMAND --warehouse WH ARGS` under the vault configuration.
    let admin = |command: &str, args: &[&str]| {
        let mut all = vec!["--config", cfg.as_str(), command, "--warehouse", whs];
        all.extend_from_slice(args);
        custody_output(&all)
    };
    let reveal = |tenant: &str, token: &str, reason: &str| {
        let by = format!("dpo@{tenant}");
        admin(
            "reveal",
            &[
                "--tenant",
                tenant,
                "--token",
                token,
                "--requested-by",
                &by,
                "--reason",
                reason,
            ],
        )
    };
    let succeeded = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let revealed = succeeded(reveal(TENANT, &token, "DSAR-1"));
    let sent = std::fs::read_to_string(&input).unwrap();
    assert!(
        !revealed.trim().is_empty() && sent.contains(revealed.trim()),
        "{revealed}"
    );

    // A field's content, named by the commitment that replaced it or by event and field.
    let (event_id, field, commitment) = rows(&tables, "events")
        .iter()
        .filter(|e| e["tenant_id"] == TENANT)
        .find_map(|e| {
            let payload: Value = serde_json::from_str(e["payload"].as_str()?).ok()?;
            let (field, value) = payload
                .as_object()?
                .iter()
                .find(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("<CONTENT:tok_")))?;
            Some((
                e["event_id"].as_str()?.to_string(),
                field.clone(),
                value.as_str()?.to_string(),
            ))
        })
        .expect("a content commitment in the tenant's events");
    let content = succeeded(reveal(TENANT, &commitment, "DSAR-1b"));
    assert!(
        serde_json::from_str::<Value>(content.trim()).is_ok(),
        "the revealed content is the field's JSON: {content}"
    );
    let by_field = succeeded(reveal(TENANT, &format!("{event_id}#{field}"), "DSAR-1c"));
    assert_eq!(by_field, content);

    let erased = succeeded(admin(
        "erase",
        &[
            "--tenant",
            TENANT,
            "--requested-by",
            "dpo@tenant-0000",
            "--reason",
            "GDPR Art. 17 request 42",
        ],
    ));
    assert!(
        erased.contains("data key(s) of \"tenant-0000\""),
        "{erased}"
    );

    assert_eq!(
        found(&wh, &needles),
        Vec::<String>::new(),
        "plaintext left after erasure"
    );
    let again = reveal(TENANT, &token, "DSAR-2");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("irrecoverable"));
    let content_again = reveal(TENANT, &commitment, "DSAR-2b");
    assert!(!content_again.status.success());
    assert!(String::from_utf8_lossy(&content_again.stderr).contains("irrecoverable"));

    // The tenant's token key went with the erasure: the same value arriving again gets a
    // token that cannot be linked to the old one.
    let template: Value = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["tenant_id"] == TENANT && e["event_type"] == "TASK_INITIATED")
        .unwrap();
    let mut again_event = template.clone();
    again_event["event_id"] = Value::from("after-erasure-1");
    again_event["payload"]["goal"] = Value::from(format!("contact {} again", revealed.trim()));
    let later = dir.path().join("later.ndjson");
    std::fs::write(&later, format!("{again_event}\n")).unwrap();
    custody(&[
        "--config",
        &cfg,
        "run",
        "--input",
        later.to_str().unwrap(),
        "--warehouse",
        whs,
    ]);
    let tables_after = read_tables(&wh);
    let vault_after = rows(&tables_after, "vault");
    assert_eq!(
        vault_after
            .iter()
            .filter(|v| v["ref"] == token.as_str())
            .count(),
        1,
        "the erased tenant's old token was made again for the same value"
    );
    assert!(
        vault_after.len() > rows(&tables, "vault").len(),
        "the new event's value was sealed under a new token"
    );

    let verified = custody(&["verify", "--warehouse", whs]);
    assert!(verified.contains("all ok"), "{verified}");
    let tables = read_tables(&wh);
    let types: Vec<&str> = rows(&tables, "events")
        .iter()
        .filter(|e| e["tenant_id"] == TENANT && e["agent_id"] == "custody")
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    // Three reveals (a token, a commitment, an event's field) and one erasure.
    assert_eq!(types.len(), 4, "{types:?}");
    assert!(types.contains(&"DATA_REIDENTIFIED") && types.contains(&"DATA_ERASED"));
    // Other tenants' keys are intact; one data subject can be erased alone.
    let others: Vec<String> = rows(&tables, "vault")
        .iter()
        .filter(|v| v["tenant_id"] == "tenant-0001" && v["kind"] == "token")
        .map(|v| v["ref"].as_str().unwrap().to_string())
        .take(2)
        .collect();
    let (subject, other) = (&others[0], &others[1]);
    succeeded(admin(
        "erase",
        &[
            "--tenant",
            "tenant-0001",
            "--subject",
            subject,
            "--requested-by",
            "dpo@tenant-0001",
            "--reason",
            "erase one subject",
        ],
    ));
    assert!(!reveal("tenant-0001", subject, "DSAR-4").status.success());
    succeeded(reveal("tenant-0001", other, "DSAR-3"));
}
