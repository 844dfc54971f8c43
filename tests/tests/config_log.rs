//! Evidence-relevant configuration is chained: every change of retention policy, policy rule
//! or PII field policy (and every key rotation, in `keys.rs`) is a `CONFIG_CHANGED` event of
//! the system log (`_custody`), appended before anything runs under it, chained, checkpointed
//! and verified like any tenant's log; an unchanged configuration adds nothing, and no
//! producer can write to the system log.

use std::path::Path;
use std::process::Output;

use custody_tests::{config_changes, custody_output, generate_ndjson, read_columns, rows};
use serde_json::{Value, json};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A configuration file of `extra` settings layered over the defaults.
fn config(dir: &Path, name: &str, extra: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("[serve]\nlisten = \"off\"\n{extra}")).unwrap();
    path.to_str().unwrap().to_string()
}

fn run(cfg: &str, input: &Path, wh: &Path) -> String {
    ok(custody_output(&[
        "--config",
        cfg,
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]))
}

/// Lines `from..to` of `all` as a new input file.
fn slice(dir: &Path, all: &[&str], from: usize, to: usize) -> std::path::PathBuf {
    let path = dir.join(format!("part-{from}.ndjson"));
    std::fs::write(&path, all[from..to].join("\n") + "\n").unwrap();
    path
}

#[test]
fn configuration_changes_are_chained_in_the_system_log() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    generate_ndjson(&input, 800, 3);
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let wh = dir.path().join("wh");

    let base = "[retention]\ndays = 400\n";
    let a = config(dir.path(), "a", base);
    run(&a, &slice(dir.path(), &lines, 0, 200), &wh);
    let changes = config_changes(&wh);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let first = &changes[0];
    assert!(first["previous_digest"].is_null());
    assert_eq!(first["requested_by"], "custody run");
    for section in [
        "retention",
        "policy",
        "pii",
        "vault",
        "identity",
        "detection",
        "keys",
    ] {
        assert!(
            first["changed"]
                .as_array()
                .unwrap()
                .contains(&json!(section)),
            "{section}: {first}"
        );
    }
    assert_eq!(first["config"]["retention"]["default"]["days"], 400);
    // Its digest is the SHA-256 of the recorded configuration's canonical JSON.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        first["config"].to_string().as_bytes(),
    ));
    assert_eq!(first["digest"], digest);

    // Unchanged: nothing more is recorded.
    run(&a, &slice(dir.path(), &lines, 200, 300), &wh);
    assert_eq!(config_changes(&wh).len(), 1);

    // A retention change, a new policy rule, a PII field policy: one event each, naming the
    // section, linked to the one before.
    let b = config(dir.path(), "b", "[retention]\ndays = 200\n");
    run(&b, &slice(dir.path(), &lines, 300, 400), &wh);
    let c = config(
        dir.path(),
        "c",
        "[retention]\ndays = 200\n\
         [[policy.rules]]\nid = \"no-wire\"\ndescription = \"No wire transfers\"\n\
         kind = \"deny\"\ntools = [\"wire.*\"]\n",
    );
    run(&c, &slice(dir.path(), &lines, 400, 500), &wh);
    let d = config(
        dir.path(),
        "d",
        "[retention]\ndays = 200\n\
         [[policy.rules]]\nid = \"no-wire\"\ndescription = \"No wire transfers\"\n\
         kind = \"deny\"\ntools = [\"wire.*\"]\n\
         [pii.tenants.tenant-0001]\nfields = [\"TASK_FAILED.last_state\"]\n",
    );
    run(&d, &slice(dir.path(), &lines, 500, 600), &wh);
    let changes = config_changes(&wh);
    let sections: Vec<&Value> = changes.iter().map(|c| &c["changed"]).collect();
    assert_eq!(
        sections,
        [
            &first["changed"],
            &json!(["retention"]),
            &json!(["policy"]),
            &json!(["pii"])
        ]
    );
    for pair in changes.windows(2) {
        assert_eq!(pair[1]["previous_digest"], pair[0]["digest"]);
    }
    assert_eq!(changes[1]["config"]["retention"]["default"]["days"], 200);
    assert!(
        changes[2]["config"]["policy"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "no-wire")
    );
    assert_eq!(
        changes[3]["config"]["pii"]["tenants"]["tenant-0001"]["fields"],
        json!(["TASK_FAILED.last_state"])
    );

    // `custody retention` records the policy it applies first; a dry run records nothing.
    let e = dir.path().join("e.toml").to_str().unwrap().to_string();
    let e_text = std::fs::read_to_string(&d)
        .unwrap()
        .replace("days = 200", "days = 190");
    std::fs::write(&e, e_text).unwrap();
    let whs = wh.to_str().unwrap();
    ok(custody_output(&[
        "--config",
        &e,
        "retention",
        "--dry-run",
        "--warehouse",
        whs,
    ]));
    assert_eq!(config_changes(&wh).len(), 4);
    ok(custody_output(&[
        "--config",
        &e,
        "retention",
        "--warehouse",
        whs,
    ]));
    let changes = config_changes(&wh);
    assert_eq!(changes.len(), 5);
    assert_eq!(changes[4]["changed"], json!(["retention"]));
    assert_eq!(changes[4]["requested_by"], "custody retention");

    // No producer writes to the system log: an event claiming it is quarantined.
    let forged = lines[600].replacen(
        r#""tenant_id":"tenant-0000""#,
        r#""tenant_id":"_custody""#,
        1,
    );
    let forged = if forged == lines[600] {
        let mut v: Value = serde_json::from_str(lines[600]).unwrap();
        v["tenant_id"] = json!("_custody");
        v.to_string()
    } else {
        forged
    };
    let claim = dir.path().join("claim.ndjson");
    std::fs::write(&claim, format!("{forged}\n{}\n", lines[601])).unwrap();
    let out = run(&e, &claim, &wh);
    assert!(out.contains("2 in = 1 accepted + 1 quarantined"), "{out}");
    let tables = read_columns(&wh, &["quarantine:reason_kind"]);
    assert!(
        rows(&tables, "quarantine")
            .iter()
            .any(|q| q["reason_kind"] == "reserved_tenant"),
        "{tables}"
    );
    assert_eq!(config_changes(&wh).len(), 5);

    // The system log is verified like every log.
    let verified = ok(custody_output(&[
        "--config",
        &e,
        "verify",
        "--warehouse",
        whs,
    ]));
    assert!(verified.contains("_custody: ok (5 events"), "{verified}");

    // A producer bound to the system log is a configuration error.
    let bound = config(
        dir.path(),
        "bound",
        "[identity]\nmode = \"signed-header\"\n\
         [identity.producers.p]\ntenant = \"_custody\"\nkey_hex = \"00ff\"\n",
    );
    let refused = custody_output(&[
        "--config",
        &bound,
        "run",
        "--input",
        claim.to_str().unwrap(),
        "--warehouse",
        whs,
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is Custody's system log"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
