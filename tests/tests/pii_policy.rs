//! Per-tenant PII configuration end to end: a tenant's custom pattern and dictionary are
//! tokenized with their own label, only in the fields its policy names; other tenants are not
//! affected.

use custody_tests::{custody, read_columns, rows};

fn event(tenant: &str, id: &str) -> String {
    serde_json::json!({
        "event_id": id,
        "schema_version": "1.0",
        "tenant_id": tenant,
        "session_id": "s-1",
        "agent_id": "a-1",
        "event_type": "TASK_FAILED",
        "timestamp": "2026-03-08T14:47:00Z",
        "parent_event_id": null,
        "payload": {
            "reason": "escalate to ops@example.com",
            "last_state": "EMP-123456 discussed Project Falcon with jane@example.com"
        }
    })
    .to_string()
}

#[test]
fn custom_rules_and_field_policies_are_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        format!("{}\n{}\n", event("acme", "e-1"), event("globex", "e-2")),
    )
    .unwrap();
    let config = dir.path().join("custody.toml");
    std::fs::write(
        &config,
        r#"
[pii.custom.employee_id]
pattern = "EMP-[0-9]{6}"
tenants = ["acme"]

[pii.custom.codename]
words = ["project falcon"]
tenants = ["acme"]

[pii.tenants.acme]
fields = ["TASK_FAILED.last_state"]
"#,
    )
    .unwrap();
    let wh = dir.path().join("wh");
    custody(&[
        "--config",
        config.to_str().unwrap(),
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    let tables = read_columns(&wh, &["events:tenant_id,payload"]);
    let payload = |tenant: &str| -> serde_json::Value {
        let row = rows(&tables, "events")
            .iter()
            .find(|e| e["tenant_id"] == tenant)
            .unwrap();
        serde_json::from_str(row["payload"].as_str().unwrap()).unwrap()
    };
    let acme = payload("acme");
    let state = acme["last_state"].as_str().unwrap();
    assert!(state.starts_with("<EMPLOYEE_ID:tok_"), "{state}");
    assert!(
        state.contains("<CODENAME:tok_") && state.contains("<EMAIL:tok_"),
        "{state}"
    );
    assert!(!state.contains("EMP-123456") && !state.contains("Falcon"));
    // acme's policy scans last_state only.
    assert_eq!(acme["reason"], "escalate to ops@example.com");
    // globex: default fields, built-in recognizers only.
    let globex = payload("globex");
    let state = globex["last_state"].as_str().unwrap();
    assert!(
        state.starts_with("EMP-123456 discussed Project Falcon with <EMAIL:tok_"),
        "{state}"
    );
    assert!(globex["reason"].as_str().unwrap().contains("<EMAIL:tok_"));
}
