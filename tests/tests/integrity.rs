//! The warehouse under signature: an insider who can write every file of the warehouse and its
//! catalog (here: `tests/py/tamper_lake.py`, rewriting tables with pyiceberg) but does not hold
//! the signing key can neither change any table without `custody verify` finding it, nor get
//! the pipeline to sign on top of a forged or rolled-back state. Also: keys live outside the
//! warehouse, verify never writes, producers cannot write Custody's own event types and records
//! with duplicate members are quarantined.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use custody_operators::checkpoint::Signer;
use custody_tests::{custody_bin, manifest_dir, python, read_columns, rows};
use serde_json::Value;
use sha2::Digest;

const SEED_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn trusted_key() -> String {
    hex::encode(Signer::from_seed(&[7; 32]).public_key().as_bytes())
}

fn run(args: &[&str]) -> Output {
    Command::new(custody_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env("CUSTODY__PIPELINE__BATCH_SIZE", "600")
        .env("CUSTODY_SIGNING_KEY", SEED_HEX)
        .output()
        .expect("spawn custody")
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Input with bad records among good ones: a record that is not JSON, a record claiming two
/// tenants, a producer writing Custody's own event types.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("input.ndjson");
    ok(&run(&[
        "generate",
        "--events",
        "3000",
        "--tenants",
        "6",
        "--seed",
        "3",
        "--out",
        path.to_str().unwrap(),
    ]));
    let mut text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let sample: Value = serde_json::from_str(lines[0]).unwrap();
    let mut extra = vec!["{not json".to_string()];
    // Duplicate tenant_id: a gateway reading the first member would disagree with one reading
    // the last.
    let mut dup = lines[1].trim_end_matches('}').to_string();
    dup.push_str(",\"tenant_id\":\"tenant-0005\"}");
    extra.push(dup);
    for (t, payload) in [
        (
            "DATA_ERASED",
            serde_json::json!({"scope":"tenant","keys_destroyed":0,"requested_by":"x","reason":"r"}),
        ),
        (
            "AUDIT_LOG_ACCESSED",
            serde_json::json!({"principal":"p","role":"admin","method":"GET","path":"/","status":200}),
        ),
    ] {
        let mut e = sample.clone();
        e["event_id"] = Value::from(format!("forged-{t}"));
        e["event_type"] = Value::from(t);
        e["payload"] = payload;
        extra.push(e.to_string());
    }
    text.push_str(&extra.join("\n"));
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh warehouse `name` under `dir` holding `input`.
fn warehouse(dir: &Path, name: &str, input: &Path) -> PathBuf {
    let wh = dir.join(name);
    ok(&run(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]));
    wh
}

fn lake(wh: &Path, args: &[&str]) {
    let out = Command::new(python())
        .arg(manifest_dir().join("py/tamper_lake.py"))
        .arg(wh)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tamper_lake {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `custody verify --json` of a warehouse: (passed, reports).
fn verify(wh: &Path) -> (bool, Value) {
    let key = trusted_key();
    let out = run(&[
        "verify",
        "--json",
        "--trusted-key",
        &key,
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    let reports = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), reports)
}

fn kinds(reports: &Value, log: &str) -> Vec<String> {
    reports
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["tenant_id"] == log)
        .flat_map(|r| r["problems"].as_array().cloned().unwrap_or_default())
        .map(|p| p["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn refuses_to_resume(wh: &Path, one: &Path) -> String {
    let name = wh.file_name().unwrap().to_string_lossy().into_owned();
    let out = run(&[
        "run",
        "--input",
        one.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && stderr.contains("does not match its signatures"),
        "{name}: the pipeline resumed on a tampered warehouse: {stderr}"
    );
    stderr
}

type Mutation = (
    &'static str,
    Vec<Vec<&'static str>>,
    &'static str,
    &'static str,
);

#[test]
fn every_table_is_under_the_epoch_seals() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let one = dir.path().join("one.ndjson");
    ok(&run(&[
        "generate",
        "--events",
        "3",
        "--tenants",
        "2",
        "--seed",
        "77",
        "--out",
        one.to_str().unwrap(),
    ]));

    // Zero false positives: untouched, and after a restart that resumes on it.
    let clean = warehouse(dir.path(), "clean", &input);
    let (passed, reports) = verify(&clean);
    assert!(passed, "untouched warehouse failed: {reports}");
    assert!(
        reports
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tenant_id"] == "(warehouse)")
    );
    ok(&run(&[
        "run",
        "--input",
        one.to_str().unwrap(),
        "--warehouse",
        clean.to_str().unwrap(),
    ]));
    let (passed, reports) = verify(&clean);
    assert!(passed, "resumed warehouse failed: {reports}");

    let t1 = "--where=tenant_id=tenant-0001";
    let mutations: Vec<Mutation> = vec![
        (
            "quarantine-reason-edited",
            vec![vec![
                "edit",
                "quarantine",
                "--where=reason_kind=invalid_json",
                "--set=reason=nothing to see",
            ]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "quarantine-row-deleted",
            vec![vec![
                "delete",
                "quarantine",
                "--where=reason_kind=invalid_json",
            ]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "quarantine-row-forged",
            vec![vec![
                "dup",
                "quarantine",
                "--where=reason_kind=invalid_json",
                "--set=source_offset=999999",
            ]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "view-changelog-edited",
            vec![vec!["edit", "view_event_counts", t1, "--set=count=1"]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "view-changelog-deleted",
            vec![vec!["delete", "view_event_counts", t1]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "epochs-row-edited",
            vec![vec!["edit", "epochs", "--where=epoch=1", "--set=events=0"]],
            "(warehouse)",
            "bad_seal",
        ),
        (
            "epochs-row-deleted",
            vec![vec!["delete", "epochs", "--where=epoch=1"]],
            "(warehouse)",
            "bad_seal",
        ),
        (
            "event-epoch-raised",
            vec![vec!["edit", "events", t1, "--where=seq=5", "--set=epoch=4"]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "event-source-offset-edited",
            vec![vec![
                "edit",
                "events",
                t1,
                "--where=seq=6",
                "--set=source_offset=123456",
            ]],
            "(warehouse)",
            "table_modified",
        ),
        (
            "tenant-deleted",
            vec![
                vec!["delete", "events", "--where=tenant_id=tenant-0002"],
                vec!["delete", "checkpoints", "--where=tenant_id=tenant-0002"],
                vec!["delete", "chain_heads", "--where=tenant_id=tenant-0002"],
            ],
            "tenant-0002",
            "tenant_missing",
        ),
        (
            "tables-wiped",
            vec![
                vec!["delete", "events"],
                vec!["delete", "checkpoints"],
                vec!["delete", "chain_heads"],
            ],
            "tenant-0003",
            "tenant_missing",
        ),
        (
            "checkpoint-duplicated",
            vec![vec!["dup", "checkpoints", t1, "--where=epoch=2"]],
            "tenant-0001",
            "checkpoint_chain",
        ),
        (
            "history-forged",
            vec![vec!["forge-history", "tenant-0001", "40"]],
            "tenant-0001",
            "checkpoint_chain",
        ),
        (
            "chain-heads-edited",
            vec![vec![
                "edit",
                "chain_heads",
                t1,
                "--set=head_hash=0000000000000000000000000000000000000000000000000000000000000000",
            ]],
            "(warehouse)",
            "table_modified",
        ),
    ];
    // The pipeline refuses to sign on top of these (its resumed state is what they changed;
    // the others leave it intact, and verify reports them).
    let refused_on_resume = [
        "tenant-deleted",
        "tables-wiped",
        "history-forged",
        "chain-heads-edited",
    ];
    for (name, steps, log, kind) in mutations {
        let wh = warehouse(dir.path(), name, &input);
        for step in &steps {
            lake(&wh, step);
        }
        let (passed, reports) = verify(&wh);
        assert!(
            !passed,
            "{name}: verify passed a tampered warehouse: {reports}"
        );
        let found = kinds(&reports, log);
        assert!(
            found.iter().any(|k| k == kind),
            "{name}: expected {kind} in {log}, got {found:?}: {reports}"
        );
        if refused_on_resume.contains(&name) {
            refuses_to_resume(&wh, &one);
        }
    }
}

#[test]
fn a_rolled_back_or_wiped_warehouse_is_not_signed_again() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let one = dir.path().join("one.ndjson");
    ok(&run(&[
        "generate",
        "--events",
        "3",
        "--tenants",
        "2",
        "--seed",
        "78",
        "--out",
        one.to_str().unwrap(),
    ]));
    // Every table's catalog pointer moved back to its previous metadata: a consistent older
    // state, which only memory outside the warehouse (the key directory's record of the last
    // seal, a witness, a held checkpoint) can tell apart.
    let wh = warehouse(dir.path(), "rolled-back", &input);
    lake(&wh, &["rollback"]);
    let stderr = refuses_to_resume(&wh, &one);
    assert!(stderr.contains("rolled back"), "{stderr}");
    // The catalog emptied of every table: not a fresh start.
    let wh = warehouse(dir.path(), "wiped", &input);
    for table in ["events", "checkpoints", "chain_heads", "epochs"] {
        lake(&wh, &["drop", table]);
    }
    let out = run(&[
        "run",
        "--input",
        one.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a wiped warehouse was signed again");
}

#[test]
fn verify_never_writes_and_trusts_no_key_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let wh = warehouse(dir.path(), "wh", &input);
    // The secret key is beside the warehouse, not in it, and only its owner can read it.
    let keys = dir.path().join("wh.keys");
    assert!(keys.join("signing.pub").is_file());
    assert!(!wh.join("keys/signing.key").exists());
    // (CUSTODY_SIGNING_KEY was set: no seed file; make one the default way.)
    let other = dir.path().join("other");
    let out = Command::new(custody_bin())
        .args([
            "demo",
            "--events",
            "20",
            "--warehouse",
            other.to_str().unwrap(),
        ])
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env_remove("CUSTODY_SIGNING_KEY")
        .output()
        .unwrap();
    ok(&out);
    let seed = dir.path().join("other.keys/signing.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&seed).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "seed readable by others: {mode:o}");
    assert!(
        std::fs::read_dir(other.join("keys"))
            .unwrap()
            .all(|e| { e.unwrap().path().extension().is_some_and(|x| x == "pub") })
    );
    // A world-readable key is refused, and so is a short PII master key.
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(custody_bin())
        .args([
            "demo",
            "--events",
            "20",
            "--warehouse",
            other.to_str().unwrap(),
        ])
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env_remove("CUSTODY_SIGNING_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by others"));
    let out = Command::new(custody_bin())
        .args(["demo", "--events", "20", "--warehouse"])
        .arg(dir.path().join("third"))
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env("CUSTODY_MASTER_KEY", "ab")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));

    // A trusted key taken from inside the data under verification is refused.
    let published = std::fs::read_dir(wh.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pub"))
        .unwrap();
    let out = run(&[
        "verify",
        "--warehouse",
        wh.to_str().unwrap(),
        "--trusted-key",
        published.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside"));
    let out = run(&[
        "verify",
        "--warehouse",
        wh.to_str().unwrap(),
        "--trusted-key",
        keys.join("signing.pub").to_str().unwrap(),
    ]);
    ok(&out);

    // Verify opens everything read-only: a dropped table is reported, not re-created.
    lake(&wh, &["drop", "quarantine"]);
    let digest = |p: &Path| hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()));
    let before = digest(&wh.join("catalog.db"));
    let (passed, _) = verify(&wh);
    assert!(!passed);
    let out = run(&[
        "verify",
        "--warehouse",
        wh.to_str().unwrap(),
        "--trusted-key",
        &trusted_key(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("custody.quarantine is missing"));
    assert_eq!(
        before,
        digest(&wh.join("catalog.db")),
        "verify wrote to the catalog"
    );
}

#[test]
fn producers_cannot_write_custody_events_or_claim_two_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let wh = warehouse(dir.path(), "wh", &input);
    let tables = read_columns(
        &wh,
        &[
            "quarantine:reason_kind,reason,tenant_id",
            "events:event_type",
        ],
    );
    let quarantine = rows(&tables, "quarantine");
    let kind = |k: &str| quarantine.iter().filter(|r| r["reason_kind"] == k).count();
    assert_eq!(kind("reserved_event_type"), 2, "{quarantine:?}");
    assert_eq!(kind("duplicate_member"), 1, "{quarantine:?}");
    let dup = quarantine
        .iter()
        .find(|r| r["reason_kind"] == "duplicate_member")
        .unwrap();
    let reason = dup["reason"].as_str().unwrap();
    assert!(reason.contains("tenant-0005"), "{reason}");
    assert!(dup["tenant_id"].is_string());
    let events = rows(&tables, "events");
    assert!(
        !events
            .iter()
            .any(|e| e["event_type"] == "DATA_ERASED" || e["event_type"] == "AUDIT_LOG_ACCESSED"),
        "a producer wrote Custody's own event type"
    );
    assert_eq!(events.len() + quarantine.len(), 3004);
}
