//! Evidence-relevant configuration is on record: every change of retention policy, policy
//! rule or PII field policy (and every key rotation, in `keys.rs`) is a row of
//! `custody.config_log`, committed with the first epoch processed under it (so under that
//! epoch's seal), chained by digest to the row before, and checked by `custody verify`; an
//! unchanged configuration adds nothing.

use std::path::Path;
use std::process::Output;

use custody_tests::{config_changes, custody_output, generate_ndjson};
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
    std::fs::write(
        &path,
        format!(
            "[serve]\nlisten = \"off\"\n{}",
            // Retention is applied by `custody retention` below, not by the runs.
            extra.replace("[retention]\n", "[retention]\ninterval = \"0s\"\n")
        ),
    )
    .unwrap();
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
fn configuration_changes_are_on_record_in_the_config_log() {
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
    assert_eq!(first["recorded_by"], "custody run");
    // Recorded with the run's first epoch.
    assert_eq!(first["epoch"], 0);
    for section in [
        "retention",
        "policy",
        "pii",
        "vault",
        "residency",
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

    // A retention change, a new policy rule, a PII field policy: one row each, naming the
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

    // `custody retention` records the policy it applies before applying it (the generated
    // events are months old: 100 days expire them); a dry run records nothing.
    let e = dir.path().join("e.toml").to_str().unwrap().to_string();
    let e_text = std::fs::read_to_string(&d)
        .unwrap()
        .replace("days = 200", "days = 100");
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
    let applied = ok(custody_output(&[
        "--config",
        &e,
        "retention",
        "--warehouse",
        whs,
    ]));
    assert!(applied.contains("RETENTION_APPLIED"), "{applied}");
    let changes = config_changes(&wh);
    assert_eq!(changes.len(), 5);
    assert_eq!(changes[4]["changed"], json!(["retention"]));
    assert_eq!(changes[4]["recorded_by"], "custody retention");
    assert_eq!(changes[4]["config"]["retention"]["default"]["days"], 100);
    // Later runs under it add nothing.
    run(&e, &slice(dir.path(), &lines, 600, 700), &wh);
    assert_eq!(config_changes(&wh).len(), 5);

    // The log is checked by verify (digests, links, every row in a sealed epoch).
    let verified = ok(custody_output(&[
        "--config",
        &e,
        "verify",
        "--warehouse",
        whs,
    ]));
    assert!(verified.contains("(warehouse): ok"), "{verified}");
}
