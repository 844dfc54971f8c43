//! The tamper battery: every class of tampering is detected by `custody verify` and by the
//! independent Python verifier (`tests/py/verify_bundle.py`), and an untouched warehouse and
//! bundle verify with zero problems.

use std::path::{Path, PathBuf};
use std::process::Command;

use custody_operators::checkpoint::Signer;
use custody_operators::hashing::chain_hash;
use custody_operators::verify::EventRow;
use custody_tests::{custody, custody_output, manifest_dir};
use serde_json::Value;

const TENANT: &str = "tenant-0001";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    warehouse: PathBuf,
    bundle: PathBuf,
    key: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let warehouse = root.join("wh");
    let out = custody_tests::custody_command()
        .args(["demo", "--events", "4000", "--tenants", "6", "--seed", "3"])
        .arg("--warehouse")
        .arg(&warehouse)
        .env("CUSTODY__PIPELINE__BATCH_SIZE", "700")
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = root.join("bundle");
    custody(&[
        "export",
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    let key_file = std::fs::read_dir(warehouse.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pub"))
        .unwrap();
    let key = std::fs::read_to_string(key_file)
        .unwrap()
        .trim()
        .to_string();
    Fixture {
        _dir: dir,
        root,
        warehouse,
        bundle,
        key,
    }
}

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_rows(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for name in ["events.ndjson", "checkpoints.ndjson", "registry.json"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join("keys").join(p.file_name().unwrap())).unwrap();
    }
}

/// Runs both verifiers; returns (rust reports, python report, rust ok, python ok).
fn verify_both(target: &[&str], key: &str, held: Option<&Path>) -> (Value, Value, bool, bool) {
    let mut args = vec!["verify", "--json", "--trusted-key", key];
    args.extend_from_slice(target);
    let held_str;
    if let Some(h) = held {
        held_str = h.to_str().unwrap().to_string();
        args.extend(["--checkpoint", &held_str]);
    }
    let out = custody_output(&args);
    let rust: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let rust_ok = out.status.success();
    let (python, python_ok) = if target[0] == "--export" {
        let python = std::env::var("CUSTODY_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/custody/venv/bin/python",
                std::env::var("HOME").unwrap()
            )
        });
        let script = manifest_dir().join("py/verify_bundle.py");
        let mut cmd = Command::new(python);
        cmd.arg(script).arg(target[1]).args(["--trusted-key", key]);
        if let Some(h) = held {
            cmd.arg("--checkpoint").arg(h);
        }
        let out = cmd.output().unwrap();
        (
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
            }),
            out.status.success(),
        )
    } else {
        (Value::Null, rust_ok)
    };
    (rust, python, rust_ok, python_ok)
}

fn tenant_report<'a>(rust: &'a Value, tenant: &str) -> &'a Value {
    rust.as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant_id"] == tenant)
        .unwrap_or_else(|| panic!("no report for {tenant}: {rust}"))
}

/// Applies `tamper` to a copy of the bundle and checks both verifiers flag `kind`.
fn expect_detected(
    fx: &Fixture,
    name: &str,
    kind: &str,
    first_bad: Option<u64>,
    held: Option<&Path>,
    tamper: impl FnOnce(&Path),
) {
    let dir = fx.root.join(format!("tampered-{name}"));
    copy_bundle(&fx.bundle, &dir);
    tamper(&dir);
    let (rust, python, rust_ok, python_ok) =
        verify_both(&["--export", dir.to_str().unwrap()], &fx.key, held);
    assert!(!rust_ok, "{name}: custody verify passed a tampered bundle");
    assert!(
        !python_ok,
        "{name}: the python verifier passed a tampered bundle"
    );
    let report = tenant_report(&rust, TENANT);
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&kind),
        "{name}: expected {kind}, got {report}"
    );
    let py_kinds: Vec<&str> = python[TENANT]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        py_kinds.contains(&kind),
        "{name}: python expected {kind}, got {python}"
    );
    if let Some(seq) = first_bad {
        assert_eq!(report["first_bad_seq"], seq, "{name}: {report}");
        assert_eq!(python[TENANT]["first_bad_seq"], seq, "{name}: {python}");
    }
    // Tenants that were not touched still verify (truncate-tail cuts every tenant back).
    for r in rust.as_array().unwrap() {
        if r["tenant_id"] != TENANT && r["tenant_id"] != "tenant-0002" && name != "truncate-tail" {
            assert!(r["problems"].as_array().unwrap().is_empty(), "{name}: {r}");
        }
    }
}

fn edit_events(dir: &Path, f: impl FnOnce(&mut Vec<Value>)) {
    let path = dir.join("events.ndjson");
    let mut rows = read_rows(&path);
    f(&mut rows);
    write_rows(&path, &rows);
}

fn edit_checkpoints(dir: &Path, f: impl FnOnce(&mut Vec<Value>)) {
    let path = dir.join("checkpoints.ndjson");
    let mut rows = read_rows(&path);
    f(&mut rows);
    write_rows(&path, &rows);
}

fn position(rows: &[Value], tenant: &str, seq: i64) -> usize {
    rows.iter()
        .position(|r| r["tenant_id"] == tenant && r["seq"] == seq)
        .unwrap()
}

fn tenant_len(rows: &[Value], tenant: &str) -> i64 {
    rows.iter().filter(|r| r["tenant_id"] == tenant).count() as i64
}

#[test]
fn tamper_battery() {
    let fx = fixture();

    // Zero false positives: the untouched warehouse and bundle verify, in both verifiers.
    let (rust, python, rust_ok, python_ok) =
        verify_both(&["--export", fx.bundle.to_str().unwrap()], &fx.key, None);
    assert!(
        rust_ok && python_ok,
        "untouched bundle failed: {rust} {python}"
    );
    let (rust, _, ok, _) = verify_both(
        &["--warehouse", fx.warehouse.to_str().unwrap()],
        &fx.key,
        None,
    );
    assert!(ok, "untouched warehouse failed: {rust}");
    let tenants = rust
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tenant_id"] != "(warehouse)")
        .count();
    assert_eq!(tenants, 6);

    // Seeded instances of the row classes: other positions of the log each time.
    for seed in 0..3u64 {
        let k = seed * 37 % 50;
        expect_detected(
            &fx,
            &format!("payload-byte-{seed}"),
            "modified",
            Some(10 + k),
            None,
            |d| {
                edit_events(d, |rows| {
                    let i = position(rows, TENANT, 10 + k as i64);
                    let payload = rows[i]["payload"].as_str().unwrap().to_string();
                    let at = payload.find(':').unwrap() + 2;
                    let mut bytes = payload.into_bytes();
                    bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
                    rows[i]["payload"] = Value::from(String::from_utf8(bytes).unwrap());
                })
            },
        );
        expect_detected(
            &fx,
            &format!("header-field-{seed}"),
            "modified",
            Some(12 + k),
            None,
            |d| {
                edit_events(d, |rows| {
                    let i = position(rows, TENANT, 12 + k as i64);
                    rows[i]["agent_id"] = Value::from("agent-evil");
                })
            },
        );
        expect_detected(
            &fx,
            &format!("delete-{seed}"),
            "gap",
            Some(7 + k),
            None,
            |d| {
                edit_events(d, |rows| {
                    let i = position(rows, TENANT, 7 + k as i64);
                    rows.remove(i);
                })
            },
        );
        expect_detected(
            &fx,
            &format!("reorder-{seed}"),
            "broken_link",
            Some(20 + k),
            None,
            |d| {
                edit_events(d, |rows| {
                    // Swap the content of two events, keeping the sequence numbers in place.
                    let (a, b) = (
                        position(rows, TENANT, 20 + k as i64),
                        position(rows, TENANT, 21 + k as i64),
                    );
                    let (mut ra, mut rb) = (rows[a].clone(), rows[b].clone());
                    ra["seq"] = Value::from(21 + k);
                    rb["seq"] = Value::from(20 + k);
                    rows[a] = rb;
                    rows[b] = ra;
                })
            },
        );
        expect_detected(
            &fx,
            &format!("fork-{seed}"),
            "fork",
            Some(15 + k),
            None,
            |d| {
                edit_events(d, |rows| {
                    let i = position(rows, TENANT, 15 + k as i64);
                    let mut twin = rows[i].clone();
                    twin["event_id"] = Value::from("forked-event");
                    rows.insert(i + 1, twin);
                })
            },
        );
    }
    for seed in 0..3u64 {
        expect_detected(
            &fx,
            &format!("swap-signatures-{seed}"),
            "bad_signature",
            None,
            None,
            |d| {
                edit_checkpoints(d, |cps| {
                    let ids: Vec<usize> = (0..cps.len())
                        .filter(|&i| cps[i]["tenant_id"] == TENANT)
                        .collect();
                    let (a, b) = (ids[seed as usize], ids[seed as usize + 1]);
                    let sa = cps[a]["signature"].clone();
                    cps[a]["signature"] = cps[b]["signature"].clone();
                    cps[b]["signature"] = sa;
                })
            },
        );
        expect_detected(
            &fx,
            &format!("forged-key-{seed}"),
            "unknown_key",
            None,
            None,
            |d| {
                let attacker = Signer::from_seed(&[9; 32]);
                edit_checkpoints(d, |cps| {
                    let forged = attacker.checkpoint(
                        TENANT,
                        1 + seed,
                        &[7; 32],
                        &[7; 32],
                        999 + seed,
                        1_800_000_000_000_000,
                        &[0; 32],
                    );
                    cps.push(serde_json::to_value(forged).unwrap());
                });
                // The attacker also ships their key in the bundle: it is still not trusted.
                std::fs::write(
                    d.join("keys").join(format!("{}.pub", attacker.key_id())),
                    hex::encode(attacker.public_key().as_bytes()),
                )
                .unwrap();
            },
        );
        expect_detected(
            &fx,
            &format!("replay-cross-tenant-{seed}"),
            "unattested",
            None,
            None,
            |d| {
                // Copy an event of tenant-0002 into tenant-0001's log and recompute every hash, as
                // an attacker with write access could: only the signed checkpoints catch it.
                edit_events(d, |rows| {
                    let n = tenant_len(rows, TENANT);
                    let last = &rows[position(rows, TENANT, n - 1)];
                    let mut prev = [0u8; 32];
                    hex::decode_to_slice(last["hash"].as_str().unwrap(), &mut prev).unwrap();
                    let mut copy: EventRow = serde_json::from_value(
                        rows[position(rows, "tenant-0002", 3 + seed as i64)].clone(),
                    )
                    .unwrap();
                    copy.tenant_id = TENANT.to_string();
                    copy.seq = n;
                    let leaf = copy.recompute_leaf().unwrap();
                    copy.prev_hash = hex::encode(prev);
                    copy.leaf_hash = hex::encode(leaf);
                    copy.hash = hex::encode(chain_hash(&prev, &leaf));
                    rows.push(serde_json::to_value(copy).unwrap());
                })
            },
        );
    }

    // Truncating the tail consistently (events and the checkpoints that covered them) leaves
    // a log that agrees with its own remaining checkpoints; a checkpoint held elsewhere
    // (here: the latest one, as a customer or auditor would keep) catches it.
    let held = fx.root.join("held.ndjson");
    let cps = read_rows(&fx.bundle.join("checkpoints.ndjson"));
    let latest = cps
        .iter()
        .filter(|c| c["tenant_id"] == TENANT)
        .max_by_key(|c| c["epoch"].as_u64().unwrap())
        .unwrap()
        .clone();
    write_rows(&held, std::slice::from_ref(&latest));
    let earlier_size = cps
        .iter()
        .filter(|c| {
            c["tenant_id"] == TENANT && c["tree_size"].as_u64() < latest["tree_size"].as_u64()
        })
        .map(|c| c["tree_size"].as_i64().unwrap())
        .max()
        .unwrap();
    let truncate = |d: &Path| {
        edit_events(d, |rows| {
            rows.retain(|r| r["tenant_id"] != TENANT || r["seq"].as_i64().unwrap() < earlier_size)
        });
        edit_checkpoints(d, |cps| {
            cps.retain(|c| {
                c["tenant_id"] != TENANT || c["tree_size"].as_i64().unwrap() <= earlier_size
            })
        });
    };
    // One tenant cut back consistently (its events and the checkpoints that covered them): its
    // checkpoints now stop before the latest one the export's sealed registry pins.
    expect_detected(
        &fx,
        "truncate-one-tenant",
        "truncated",
        None,
        None,
        truncate,
    );
    // A checkpoint removed from a tenant's chain of checkpoints (the first, or in the middle).
    for seed in 0..3usize {
        expect_detected(
            &fx,
            &format!("checkpoint-removed-{seed}"),
            "checkpoint_chain",
            None,
            None,
            |d| {
                edit_checkpoints(d, |cps| {
                    let i = (0..cps.len())
                        .filter(|&i| cps[i]["tenant_id"] == TENANT)
                        .nth(seed * 2)
                        .unwrap();
                    cps.remove(i);
                })
            },
        );
    }
    // Every tenant cut back to the previous epoch, consistently: only memory from outside the
    // bundle (a held checkpoint, a witness) can tell.
    let last_epoch = cps
        .iter()
        .map(|c| c["epoch"].as_u64().unwrap())
        .max()
        .unwrap();
    let sizes_before: std::collections::HashMap<String, i64> = cps
        .iter()
        .filter(|c| c["epoch"].as_u64() == Some(last_epoch - 1))
        .map(|c| {
            (
                c["tenant_id"].as_str().unwrap().to_string(),
                c["tree_size"].as_i64().unwrap(),
            )
        })
        .collect();
    let truncate_all = |d: &Path| {
        edit_events(d, |rows| {
            rows.retain(|r| {
                r["seq"].as_i64() < sizes_before.get(r["tenant_id"].as_str().unwrap()).copied()
            })
        });
        edit_checkpoints(d, |cps| {
            cps.retain(|c| c["epoch"].as_u64() != Some(last_epoch))
        });
    };
    let consistent = fx.root.join("truncated-consistent");
    copy_bundle(&fx.bundle, &consistent);
    truncate_all(&consistent);
    // The export's sealed registry pins every tenant's latest checkpoint under the last seal:
    // a consistent truncation of every tenant no longer holds them.
    let (_, _, ok, py_ok) = verify_both(&["--export", consistent.to_str().unwrap()], &fx.key, None);
    assert!(
        !ok && !py_ok,
        "a consistent truncation of every tenant passed ({ok}, {py_ok})"
    );
    // Without the sealed registry nothing pins the tails: the bundle itself is refused.
    std::fs::remove_file(consistent.join("registry.json")).unwrap();
    let (rust, _, ok, py_ok) =
        verify_both(&["--export", consistent.to_str().unwrap()], &fx.key, None);
    assert!(!ok && !py_ok, "a bundle without its sealed registry passed");
    assert!(rust.to_string().contains("no sealed registry"), "{rust}");
    expect_detected(
        &fx,
        "truncate-tail",
        "truncated",
        Some(sizes_before[TENANT] as u64),
        Some(&held),
        truncate_all,
    );

    // Roll the warehouse itself back to older Iceberg snapshots of the events and checkpoints
    // tables (the catalog points at the previous metadata): the held checkpoint catches it.
    let mut all_held = Vec::new();
    for tenant in ["tenant-0000", TENANT, "tenant-0002"] {
        all_held.push(
            cps.iter()
                .filter(|c| c["tenant_id"] == tenant)
                .max_by_key(|c| c["epoch"].as_u64().unwrap())
                .unwrap()
                .clone(),
        );
    }
    write_rows(&held, &all_held);
    let status = Command::new(std::env::var("CUSTODY_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/custody/venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    }))
    .arg("-c")
    .arg(
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
         n=c.execute(\"update iceberg_tables set metadata_location=previous_metadata_location \
         where table_name in ('events','checkpoints')\").rowcount; c.commit(); assert n==2, n",
    )
    .arg(fx.warehouse.join("catalog.db"))
    .status()
    .unwrap();
    assert!(status.success());
    let (rust, _, ok, _) = verify_both(
        &["--warehouse", fx.warehouse.to_str().unwrap()],
        &fx.key,
        Some(&held),
    );
    assert!(!ok, "rollback not detected: {rust}");
    let truncated = rust
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["kind"] == "truncated")
        })
        .count();
    assert!(truncated >= 1, "{rust}");
}
