//! A witness beside the pipeline: `custody witness` cosigns every tenant's checkpoints over
//! HTTP while the log grows, and `custody verify --witness … --witness-key …` alone (no
//! checkpoint held by hand) then catches truncation, rollback and whole-tenant deletion, each
//! of which passes verify without the witness.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use custody_tests::{await_line, custody_command, free_addr, get_json, manifest_dir, python};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TOKEN: &str = "token-root";

fn verify(target: &[&str], key: &str, witness: Option<(&str, &str)>) -> (bool, Value) {
    let mut cmd = custody_command();
    cmd.arg("verify")
        .arg("--json")
        .args(target)
        .args(["--trusted-key", key])
        .env("RUST_LOG", "warn");
    if let Some((source, wkey)) = witness {
        cmd.args(["--witness", source, "--witness-key", wkey]);
    }
    let out = cmd.output().unwrap();
    let reports = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.success(), reports)
}

/// The Python verifier on the same target: (passed, {tenant: report}).
fn verify_py(target: &[&str], key: &str, witness: Option<(&str, &str)>) -> (bool, Value) {
    let mut cmd = Command::new(python());
    cmd.arg(manifest_dir().join("py/verify_bundle.py"));
    match target {
        ["--export", dir] => cmd.arg(dir),
        other => cmd.args(other),
    };
    cmd.args(["--trusted-key", key.trim()]);
    if let Some((source, wkey)) = witness {
        cmd.args(["--witness", source, "--witness-key", wkey]);
    }
    let out = cmd.output().unwrap();
    let reports = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.success(), reports)
}

/// Both verifiers agree on the verdict; the kinds each reports for `tenant`.
fn verify_both(
    target: &[&str],
    key: &str,
    witness: Option<(&str, &str)>,
    tenant: &str,
) -> (bool, Vec<String>, Vec<String>) {
    let (ok, rust) = verify(target, key, witness);
    let (py_ok, py) = verify_py(target, key, witness);
    assert_eq!(
        ok, py_ok,
        "the verifiers disagree on {target:?}: {rust} {py}"
    );
    let py_kinds = py[tenant]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    (ok, kinds(&rust, tenant), py_kinds)
}

fn kinds(reports: &Value, tenant: &str) -> Vec<String> {
    reports
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tenant_id"] == tenant)
        .flat_map(|r| r["problems"].as_array().cloned().unwrap_or_default())
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

fn edit(path: &Path, keep: impl Fn(&Value) -> bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| keep(&serde_json::from_str(l).unwrap()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).unwrap();
}

fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for name in ["events.ndjson", "checkpoints.ndjson", "registry.json"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn a_witness_catches_truncation_rollback_and_tenant_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("custody.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api.tokens.root]\nsha256 = \"{}\"\ntenant = \"*\"\nrole = \"admin\"\n",
            hex::encode(Sha256::digest(TOKEN))
        ),
    )
    .unwrap();
    let wh = dir.path().join("wh");
    let addr = free_addr();
    // The pipeline, serving; no clock ticks, so the log only grows with the workload.
    let child = custody_command()
        .args(["--config", cfg.to_str().unwrap(), "demo", "--serve"])
        .args(["--events", "2400", "--tenants", "4", "--seed", "5"])
        .args(["--warehouse", wh.to_str().unwrap()])
        .env("CUSTODY__SERVE__LISTEN", &addr)
        .env("CUSTODY__VIEWS__CLOCK_TICK", "0s")
        .env("CUSTODY__PIPELINE__BATCH_SIZE", "500")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pipeline = await_line(child, "serving until interrupted");
    let log_key = dir.path().join("wh.keys/signing.pub");
    let key = std::fs::read_to_string(&log_key).unwrap();

    // The witness: its own key and state, beside the pipeline.
    let wdir = dir.path().join("witness");
    let waddr = free_addr();
    let child = custody_command()
        .args(["witness", "--log", &format!("http://{addr}")])
        .args(["--log-key", log_key.to_str().unwrap()])
        .args(["--token", TOKEN, "--interval", "200ms"])
        .args(["--state", wdir.to_str().unwrap(), "--listen", &waddr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let witness = await_line(child, "/cosigned");
    let witness_url = format!("http://{waddr}");
    let wkey = wdir.join("witness.pub");
    // Until it has cosigned every tenant's latest checkpoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, latest) = get_json(&addr, "/v1/checkpoints", TOKEN);
        let (_, cosigned) = get_json(&waddr, "/cosigned", "");
        let latest = latest["checkpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let done = latest.len() == 4
            && latest.iter().all(|cp| {
                cosigned["tenants"][cp["tenant_id"].as_str().unwrap()]["checkpoint"] == *cp
            });
        if done {
            assert!(
                cosigned["alarms"].as_array().unwrap().is_empty(),
                "{cosigned}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not witnessed: {cosigned}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Without --log-key a witness trusts the key the log serves on first use and pins it: the
    // same state then refuses a log under another key.
    let tofu = dir.path().join("witness-tofu");
    let once = |extra: &[&str]| {
        custody_command()
            .args(["witness", "--log", &format!("http://{addr}"), "--once"])
            .args(["--token", TOKEN, "--state", tofu.to_str().unwrap()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = once(&[]);
    assert!(first.status.success(), "{first:?}");
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("witnessed 4 tenant(s); 0 alarm(s)"),
        "{first:?}"
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("trust on first use"),
        "{first:?}"
    );
    let pinned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tofu.join("cosigned.json")).unwrap()).unwrap();
    assert_eq!(pinned["log_key"].as_str().unwrap(), key.trim());
    assert!(once(&[]).status.success(), "the pinned key is used again");
    let another = custody_operators::checkpoint::Signer::from_seed(&[7u8; 32]).public_key();
    let other = once(&["--log-key", &hex::encode(another.as_bytes())]);
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("follows the log key"),
        "{other:?}"
    );

    drop(pipeline);
    let witness_args = Some((witness_url.as_str(), wkey.to_str().unwrap()));

    // Untouched: passes with and without the witness.
    let whs = wh.to_str().unwrap();
    let (ok, reports) = verify(&["--warehouse", whs], &key, witness_args);
    assert!(ok, "untouched warehouse failed with the witness: {reports}");
    let bundle = dir.path().join("bundle");
    let out = custody_command()
        .args([
            "export",
            "--warehouse",
            whs,
            "--out",
            bundle.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (ok, reports) = verify(&["--export", bundle.to_str().unwrap()], &key, witness_args);
    assert!(ok, "untouched bundle failed with the witness: {reports}");
    let (ok, reports) = verify_py(&["--export", bundle.to_str().unwrap()], &key, witness_args);
    assert!(
        ok,
        "untouched bundle failed with the witness (python): {reports}"
    );
    let (ok, reports) = verify_py(&["--warehouse", whs], &key, witness_args);
    assert!(
        ok,
        "untouched warehouse failed with the witness (python): {reports}"
    );

    // Truncation: every tenant cut back to the previous epoch, consistently. The export's
    // sealed registry pins every tenant's latest checkpoint, so this is caught without a
    // witness too (a witness also catches it with an older export's registry).
    let cps: Vec<Value> = std::fs::read_to_string(bundle.join("checkpoints.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = cps
        .iter()
        .map(|c| c["epoch"].as_u64().unwrap())
        .max()
        .unwrap();
    let size_before = |t: &str| {
        cps.iter()
            .find(|c| c["tenant_id"] == t && c["epoch"].as_u64() == Some(last - 1))
            .map_or(0, |c| c["tree_size"].as_i64().unwrap())
    };
    let truncated = dir.path().join("truncated");
    copy_bundle(&bundle, &truncated);
    edit(&truncated.join("events.ndjson"), |e| {
        e["seq"].as_i64().unwrap() < size_before(e["tenant_id"].as_str().unwrap())
    });
    edit(&truncated.join("checkpoints.ndjson"), |c| {
        c["epoch"].as_u64() != Some(last)
    });
    let target = ["--export", truncated.to_str().unwrap()];
    let (ok, rust, py) = verify_both(&target, &key, None, "tenant-0000");
    assert!(
        !ok && rust.iter().any(|k| k == "truncated") && py.iter().any(|k| k == "truncated"),
        "a consistent truncation passed the sealed registry: {rust:?} {py:?}"
    );
    let (ok, rust, py) = verify_both(&target, &key, witness_args, "tenant-0000");
    assert!(!ok);
    let truncated = "truncated".to_string();
    assert!(
        rust.contains(&truncated) && py.contains(&truncated),
        "{rust:?} {py:?}"
    );

    // Whole-tenant deletion: every row of tenant-0002 gone.
    let deleted = dir.path().join("deleted");
    copy_bundle(&bundle, &deleted);
    for file in ["events.ndjson", "checkpoints.ndjson"] {
        edit(&deleted.join(file), |r| r["tenant_id"] != "tenant-0002");
    }
    let target = ["--export", deleted.to_str().unwrap()];
    let (ok, _, _) = verify_both(&target, &key, None, "tenant-0002");
    assert!(ok, "a deleted tenant passes without a witness");
    let (ok, rust, py) = verify_both(&target, &key, witness_args, "tenant-0002");
    assert!(!ok);
    let missing = "tenant_missing".to_string();
    assert!(
        rust.contains(&missing) && py.contains(&missing),
        "{rust:?} {py:?}"
    );

    // Rollback: every table of the warehouse moved back to its previous metadata.
    let out = Command::new(python())
        .arg(manifest_dir().join("py/tamper_lake.py"))
        .args([whs, "rollback"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (py_ok, py) = verify_py(&["--warehouse", whs], &key, witness_args);
    assert!(!py_ok, "rollback not caught by the witness (python): {py}");
    let (ok, reports) = verify(&["--warehouse", whs], &key, witness_args);
    assert!(!ok, "rollback not caught by the witness: {reports}");
    let caught = reports
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["problems"].as_array().cloned().unwrap_or_default())
        .any(|p| p["kind"] == "truncated" || p["kind"] == "unwitnessed");
    assert!(caught, "{reports}");
    drop(witness);
}
