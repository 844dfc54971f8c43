//! The warehouse under signature: an insider who can write every file of the warehouse and its
//! catalog (here: `tests/py/tamper_lake.py`, rewriting tables with pyiceberg) but does not hold
//! the signing key can neither change any table without `custody verify` finding it, nor get
//! the pipeline to sign on top of a forged or rolled-back state. Also: keys live outside the
//! warehouse, verify never writes, producers cannot write Custody's own event types and records
//! with duplicate members are quarantined.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use custody_operators::checkpoint::Signer;
use custody_tests::{custody_command, manifest_dir, python, read_columns, rows};
use serde_json::Value;
use sha2::Digest;

const SEED_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn trusted_key() -> String {
    hex::encode(Signer::from_seed(&[7; 32]).public_key().as_bytes())
}

fn run(args: &[&str]) -> Output {
    custody_command()
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

/// Both verifiers over a warehouse: (rust passed, rust reports, python passed, python reports).
fn verify_both(wh: &Path) -> (bool, Value, bool, Value) {
    let (rust_ok, rust) = verify(wh);
    let key = trusted_key();
    let out = Command::new(python())
        .arg(manifest_dir().join("py/verify_bundle.py"))
        .args(["--warehouse", wh.to_str().unwrap(), "--trusted-key", &key])
        .output()
        .unwrap();
    let py: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (rust_ok, rust, out.status.success(), py)
}

fn py_kinds(reports: &Value, log: &str) -> Vec<String> {
    reports[log]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// One class of tampering: the steps of seeded instance `seed` (tamper_lake.py arguments),
/// the log that must show it and the problem kind.
struct Class {
    name: &'static str,
    steps: fn(u64) -> Vec<Vec<String>>,
    log: fn(u64) -> String,
    kind: &'static str,
    /// The pipeline refuses to resume on it (its resumed state is what it changed).
    refused: bool,
}

fn tenant(seed: u64) -> String {
    format!("tenant-{:04}", seed % 6)
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn warehouse_log(_: u64) -> String {
    "(warehouse)".to_string()
}

fn classes() -> Vec<Class> {
    vec![
        Class {
            name: "quarantine-reason-edited",
            steps: |s| {
                let kind =
                    ["invalid_json", "duplicate_member", "reserved_event_type"][s as usize % 3];
                vec![args(&[
                    "edit",
                    "quarantine",
                    &format!("--where=reason_kind={kind}"),
                    "--set=reason=nothing to see",
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "quarantine-row-deleted",
            steps: |s| {
                let kind =
                    ["invalid_json", "duplicate_member", "reserved_event_type"][s as usize % 3];
                vec![args(&[
                    "delete",
                    "quarantine",
                    &format!("--where=reason_kind={kind}"),
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "quarantine-row-forged",
            steps: |s| {
                vec![args(&[
                    "dup",
                    "quarantine",
                    "--where=reason_kind=invalid_json",
                    &format!("--set=source_offset={}", 900_000 + s),
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "view-changelog-edited",
            steps: |s| {
                vec![args(&[
                    "edit",
                    "view_changes",
                    &format!("--where=tenant_id={}", tenant(s)),
                    &format!("--set=key=forged-{s}"),
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "view-changelog-deleted",
            steps: |s| {
                vec![args(&[
                    "delete",
                    "view_changes",
                    &format!("--where=tenant_id={}", tenant(s)),
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "epochs-row-edited",
            steps: |s| {
                vec![args(&[
                    "edit",
                    "epochs",
                    &format!("--where=epoch={}", s % 3),
                    "--set=events=0",
                ])]
            },
            log: warehouse_log,
            kind: "bad_seal",
            refused: false,
        },
        Class {
            name: "epochs-row-deleted",
            steps: |s| {
                vec![args(&[
                    "delete",
                    "epochs",
                    &format!("--where=epoch={}", 1 + s % 3),
                ])]
            },
            log: warehouse_log,
            kind: "bad_seal",
            refused: false,
        },
        Class {
            name: "event-epoch-raised",
            steps: |s| {
                vec![args(&[
                    "edit",
                    "events",
                    &format!("--where=tenant_id={}", tenant(s)),
                    &format!("--where=seq={}", 3 + s),
                    "--set=epoch=4",
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "event-source-offset-edited",
            steps: |s| {
                vec![args(&[
                    "edit",
                    "events",
                    &format!("--where=tenant_id={}", tenant(s)),
                    &format!("--where=seq={}", 7 * s),
                    "--set=source_offset=123456",
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: false,
        },
        Class {
            name: "tenant-deleted",
            steps: |s| {
                let t = format!("--where=tenant_id={}", tenant(s));
                vec![
                    args(&["delete", "events", &t]),
                    args(&["delete", "checkpoints", &t]),
                    args(&["delete", "chain_heads", &t]),
                ]
            },
            log: tenant,
            kind: "tenant_missing",
            refused: true,
        },
        Class {
            name: "tables-wiped",
            steps: |_| {
                vec![
                    args(&["delete", "events"]),
                    args(&["delete", "checkpoints"]),
                    args(&["delete", "chain_heads"]),
                ]
            },
            log: tenant,
            kind: "tenant_missing",
            refused: true,
        },
        Class {
            name: "checkpoint-duplicated",
            steps: |s| {
                vec![args(&[
                    "dup",
                    "checkpoints",
                    &format!("--where=tenant_id={}", tenant(s)),
                    &format!("--where=epoch={}", s % 3),
                ])]
            },
            log: tenant,
            kind: "checkpoint_chain",
            refused: false,
        },
        Class {
            name: "history-forged",
            steps: |s| {
                vec![args(&[
                    "forge-history",
                    &tenant(s),
                    &(20 + 9 * s).to_string(),
                ])]
            },
            log: tenant,
            kind: "checkpoint_chain",
            refused: true,
        },
        Class {
            name: "chain-heads-edited",
            steps: |s| {
                vec![args(&[
                    "edit",
                    "chain_heads",
                    &format!("--where=tenant_id={}", tenant(s)),
                    "--set=head_hash=0000000000000000000000000000000000000000000000000000000000000000",
                ])]
            },
            log: warehouse_log,
            kind: "table_modified",
            refused: true,
        },
    ]
}

/// Seeded instances per class.
const INSTANCES: u64 = 2;

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
    let (rust_ok, rust, py_ok, py) = verify_both(&clean);
    assert!(rust_ok && py_ok, "untouched warehouse failed: {rust} {py}");
    assert!(
        rust.as_array()
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
    let (rust_ok, rust, py_ok, py) = verify_both(&clean);
    assert!(rust_ok && py_ok, "resumed warehouse failed: {rust} {py}");

    let mut detected = 0;
    for class in classes() {
        for seed in 1..=INSTANCES {
            let name = format!("{}-{seed}", class.name);
            let wh = warehouse(dir.path(), &name, &input);
            for step in (class.steps)(seed) {
                let step: Vec<&str> = step.iter().map(String::as_str).collect();
                lake(&wh, &step);
            }
            let log = (class.log)(seed);
            let (rust_ok, rust, py_ok, py) = verify_both(&wh);
            assert!(
                !rust_ok,
                "{name}: custody verify passed a tampered warehouse: {rust}"
            );
            assert!(
                !py_ok,
                "{name}: the python verifier passed a tampered warehouse: {py}"
            );
            let found = kinds(&rust, &log);
            assert!(
                found.iter().any(|k| k == class.kind),
                "{name}: expected {} in {log}, got {found:?}: {rust}",
                class.kind
            );
            let found = py_kinds(&py, &log);
            assert!(
                found.iter().any(|k| k == class.kind),
                "{name}: python expected {} in {log}, got {found:?}: {py}",
                class.kind
            );
            if class.refused {
                refuses_to_resume(&wh, &one);
            }
            detected += 1;
            std::fs::remove_dir_all(&wh).ok();
        }
    }
    assert_eq!(detected, 14 * INSTANCES as usize);
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
    // The whole directory deleted to start over: a new history at the same path (the key
    // directory's record of the old one is kept aside, not in the way).
    let wh = warehouse(dir.path(), "started-over", &input);
    std::fs::remove_dir_all(&wh).unwrap();
    ok(&run(&[
        "run",
        "--input",
        one.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]));
    let kept = std::fs::read_dir(dir.path().join("started-over.keys"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("superseded")
        })
        .count();
    assert_eq!(kept, 1);
    let (passed, reports) = verify(&wh);
    assert!(passed, "{reports}");
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
    let out = custody_command()
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
    let out = custody_command()
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
    let out = custody_command()
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
