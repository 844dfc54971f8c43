//! Restarts change nothing: a warehouse built by runs killed with SIGKILL at every commit point
//! (inside epoch 0, before and after every table of a commit, at the commit point itself, and
//! at timed points) holds exactly what one uninterrupted run over the same file holds: the same
//! events (hashes, seqs, epochs), quarantine, chain heads, emitter heads, checkpoints (but for
//! their signing time and signature), epochs, and every view table's net state. `custody
//! verify` passes on it. The input mixes in malformed records, among them timestamps with a
//! multi-byte character where a digit belongs (which once panicked a worker and hung the
//! pipeline), and breaks of agents' emitter-side chains, whose state must survive restarts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use custody_operators::merkle;
use custody_tests::{
    KillOnDrop, StderrWatch, await_line, custody, custody_command, free_addr, generate_ndjson,
    get_json, read_columns, rows, serve_command,
};
use serde_json::Value;

const BATCH: &str = "5000";

/// Malformed lines mixed into the input, each quarantined with a reason.
const POISON: &[&str] = &[
    r#"{"event_id":"x","schema_version":"1.0","tenant_id":"tenant-0000","session_id":"s","agent_id":"a","event_type":"TASK_INITIATED","timestamp":"2026-01-01T00:00:0€Z","payload":{}}"#,
    r#"{"event_id":"y","schema_version":"1.0","tenant_id":"tenant-0001","session_id":"s","agent_id":"a","event_type":"TASK_INITIATED","timestamp":"2026-01-01T00:00:00€","payload":{}}"#,
    "not json at all",
    "{\"truncated\": ",
    "\u{feff}{}",
];

/// The generated workload with a poison line after every 997th line.
fn workload(dir: &Path, events: u64, tenants: usize) -> std::path::PathBuf {
    let clean = dir.join("clean.ndjson");
    generate_ndjson(&clean, events, tenants);
    let path = dir.join("input.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let text = std::fs::read_to_string(&clean).unwrap();
    for (i, line) in text.lines().enumerate() {
        writeln!(out, "{line}").unwrap();
        if i % 997 == 996 {
            writeln!(out, "{}", POISON[(i / 997) % POISON.len()]).unwrap();
        }
        if i % 1499 == 1498 {
            // The same event again under a new id: it claims the agent's previous event as
            // its predecessor, which the agent's emitter chain has moved past (a break), and
            // the agent's next event then breaks too. Emitter chains must survive restarts.
            let replayed = line.replacen("\"event_id\":\"", "\"event_id\":\"replayed-", 1);
            writeln!(out, "{replayed}").unwrap();
        }
    }
    out.flush().unwrap();
    path
}

fn run_command(input: &Path, wh: &Path) -> Command {
    let mut command = custody_command();
    command
        .args(["run", "--input", input.to_str().unwrap()])
        .args(["--warehouse", wh.to_str().unwrap()])
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env("RUST_LOG", "warn")
        .env("CUSTODY__PIPELINE__BATCH_SIZE", BATCH)
        // Snapshots (and heads files) within the few epochs of these inputs.
        .env("CUSTODY__VIEWS__SNAPSHOT_EVERY_EPOCHS", "2")
        .env("CUSTODY__VIEWS__CLOCK_TICK", "0s")
        .env("CUSTODY_SIGNING_KEY", "07".repeat(32));
    command
}

/// Runs to the end of the input; returns stdout.
fn run_to_end(input: &Path, wh: &Path) -> String {
    let out = run_command(input, wh).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs until failpoint `point` halts it (or `fallback` passes), then SIGKILLs it. Returns
/// whether the failpoint fired and whether the run had already finished.
fn run_and_kill(input: &Path, wh: &Path, point: &str, fallback: Duration) -> (bool, bool) {
    let mut child = run_command(input, wh)
        .env("CUSTODY_FAILPOINT", format!("{point}#1"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watch = StderrWatch::new(&mut child, "failpoint");
    let fired = watch.wait(fallback);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let status = child.wait().unwrap();
    let lines = watch.lines();
    assert!(
        fired || !finished || status.success(),
        "run stopped by itself with {status} at {point}:\n{lines}"
    );
    (fired, finished)
}

/// The columns compared, per table: everything but signing times, signatures and what
/// depends on them.
const COMPARED: &[&str] = &[
    "events:tenant_id,seq,event_id,event_type,session_id,agent_id,user_id,event_time,\
     parent_event_id,payload,hash,source,source_offset,epoch",
    "quarantine:source,source_offset,epoch,reason_kind,reason,tenant_id,raw_len,raw_sha256,\
     raw_redacted",
    "chain_heads:tenant_id,seq,head_hash,epoch_events,epoch,merkle_range",
    "emitter_heads:tenant_id,agent_id,last_sha256,epoch",
    "checkpoints:tenant_id,tree_size,root,chain_head,epoch,key_id",
    "epochs:epoch,source,positions,events,quarantined,checkpoints",
    "view_changes:view,tenant_id,key,row,diff",
];

/// A table's rows as a sorted multiset; view changelogs netted to their current rows.
fn contents(tables: &Value, table: &str) -> Vec<String> {
    let mut out: Vec<String> = if table.starts_with("view_") {
        let mut net: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows(tables, table) {
            let mut r = r.clone();
            let diff = r["diff"].as_i64().unwrap();
            r.as_object_mut().unwrap().remove("diff");
            *net.entry(r.to_string()).or_default() += diff;
        }
        for (row, n) in &net {
            assert!(
                (0..=1).contains(n),
                "{table}: {row} nets to {n} (a row written twice or retracted unwritten)"
            );
        }
        net.into_iter()
            .filter(|(_, n)| *n == 1)
            .map(|(r, _)| r)
            .collect()
    } else {
        rows(tables, table).iter().map(Value::to_string).collect()
    };
    out.sort();
    out
}

fn assert_same_as_reference(wh: &Path, reference: &Path) {
    let (got, want) = (
        read_columns(wh, COMPARED),
        read_columns(reference, COMPARED),
    );
    for spec in COMPARED {
        let table = spec.split(':').next().unwrap();
        let (g, w) = (contents(&got, table), contents(&want, table));
        if g != w {
            let missing: Vec<_> = w.iter().filter(|r| !g.contains(r)).take(3).collect();
            let extra: Vec<_> = g.iter().filter(|r| !w.contains(r)).take(3).collect();
            panic!(
                "{table}: {} rows, the uninterrupted run has {}; missing {missing:#?}, extra \
                 {extra:#?}",
                g.len(),
                w.len()
            );
        }
    }
    assert!(!contents(&want, "quarantine").is_empty());
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    assert!(verified.contains("all ok"), "{verified}");
}

fn reference(dir: &Path, input: &Path) -> std::path::PathBuf {
    let wh = dir.join("reference");
    let out = run_to_end(input, &wh);
    assert!(out.contains("(balanced)"), "{out}");
    wh
}

/// Every commit point of a run, each once (in the first epoch the run reaches it), over
/// 200,000 events, then timed kills; the final run completes the input.
#[test]
fn kills_at_every_commit_point_equal_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path(), 200_000, 20);
    let reference = reference(dir.path(), &input);
    let wh = dir.path().join("crashed");
    let mut points: Vec<String> = custody_points();
    points.extend(["timed:3000", "timed:6000", "timed:9000"].map(String::from));
    let mut fired = 0;
    for point in &points {
        let (ok, finished) = match point.strip_prefix("timed:") {
            Some(ms) => {
                let (_, finished) = run_and_kill(
                    &input,
                    &wh,
                    "never",
                    Duration::from_millis(ms.parse().unwrap()),
                );
                (false, finished)
            }
            None => run_and_kill(&input, &wh, point, Duration::from_secs(90)),
        };
        eprintln!("{point}: halted there: {ok}");
        fired += usize::from(ok);
        assert!(
            !finished,
            "the input ran out before {point}: make it longer"
        );
    }
    assert_eq!(
        fired,
        points.len() - 3,
        "every failpoint is reached in every epoch"
    );
    let last = run_to_end(&input, &wh);
    assert!(last.contains("(balanced)"), "{last}");
    assert_same_as_reference(&wh, &reference);
}

/// A crash inside the very first epoch's commit, at each stage of it, on a fresh warehouse.
#[test]
fn a_crash_inside_epoch_0_at_any_table_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path(), 12_000, 4);
    let reference = reference(dir.path(), &input);
    for point in [
        "files-written",
        "after-commit:epochs",
        "before-commit:events",
        "after-commit:events",
        "after-commit:quarantine",
        "after-commit:checkpoints",
        "after-commit:view_changes",
        "after-commit:emitter_heads",
    ] {
        let wh = dir.path().join(point.replace(':', "-"));
        let (fired, _) = run_and_kill(&input, &wh, point, Duration::from_secs(60));
        assert!(fired, "{point} was never reached");
        run_to_end(&input, &wh);
        assert_same_as_reference(&wh, &reference);
    }
}

/// The failpoints the binary knows, in commit order (`custody failpoints`).
fn custody_points() -> Vec<String> {
    custody(&["failpoints"])
        .lines()
        .map(str::to_string)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The views a tenant is served, normalized: without the epoch they reflect and without the
/// counts of API access events (the requests themselves add those, at their own pace).
fn served(addr: &str, tenant: &str) -> Vec<(String, Value)> {
    let views = [
        "event-counts",
        "hitl-latency",
        "sessions",
        "causal-chains",
        "hitl-groups",
        "sla-breaches",
        "policy-violations",
        "alerts",
        "model-versions",
    ];
    views
        .iter()
        .map(|view| {
            // The keyed views page (`limit`); the two summary views take no parameters.
            let path = match *view {
                "event-counts" | "hitl-latency" => format!("/v1/tenants/{tenant}/views/{view}"),
                _ => format!("/v1/tenants/{tenant}/views/{view}?limit=10000"),
            };
            let (code, mut body) = get_json(addr, &path, "");
            assert_eq!(code, 200, "{path}: {body}");
            let o = body.as_object_mut().unwrap();
            o.remove("epoch");
            if let Some(by_type) = o.get_mut("by_type").and_then(Value::as_object_mut) {
                by_type.remove("AUDIT_LOG_ACCESSED");
                let total: i64 = by_type.values().filter_map(Value::as_i64).sum();
                o.insert("total".into(), total.into());
            }
            (view.to_string(), body)
        })
        .collect()
}

fn tenants(addr: &str) -> Vec<String> {
    let (_, body) = get_json(addr, "/v1/tenants", "");
    body["tenants"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Waits until `addr` serves every event of the input (but API access) for every tenant.
fn wait_for_events(addr: &str, accepted: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let total: i64 = tenants(addr)
            .iter()
            .map(|t| served(addr, t)[0].1["total"].as_i64().unwrap_or(0))
            .sum();
        if total == accepted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "served {total} of {accepted}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every view a tenant is served after restarts (kills at commit points, then `custody serve`)
/// equals what the run that ingested everything without a restart serves.
#[test]
fn served_answers_after_restarts_equal_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = workload(dir.path(), 15_000, 3);
    // The uninterrupted run serves on after its input.
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let uninterrupted = KillOnDrop(
        run_command(&input, &dir.path().join("a"))
            .args(["--serve", "--listen", &addr_a])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wh = dir.path().join("b");
    for point in [
        "after-commit:epochs",
        "after-commit:view_changes",
        "before-ack",
    ] {
        let (fired, _) = run_and_kill(&input, &wh, point, Duration::from_secs(60));
        assert!(fired, "{point}");
    }
    run_to_end(&input, &wh);
    // What the lake holds: every event the input had, less what was quarantined.
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    let accepted: i64 = verified
        .split("verified ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{verified}"));
    let mut restarted = serve_command(&wh, &addr_b)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The views come back from their last snapshot, not from every event.
    let restored = StderrWatch::new(&mut restarted, "restoring the views' state");
    let restarted = await_line(restarted, "views rebuilt");
    assert!(
        restored.wait(Duration::from_secs(1)),
        "the restart did not restore the views' snapshot"
    );
    wait_for_events(&addr_a, accepted);
    wait_for_events(&addr_b, accepted);
    let names = tenants(&addr_a);
    assert_eq!(names.len(), 3);
    assert_eq!(tenants(&addr_b), names);
    for tenant in &names {
        for ((view, a), (_, b)) in served(&addr_a, tenant).iter().zip(served(&addr_b, tenant)) {
            assert_eq!(*a, b, "{tenant} {view}: uninterrupted vs restarted");
            if view == "sessions" {
                // A restart once lost every session's user.
                let rows = a["rows"].as_array().unwrap();
                assert!(rows.iter().any(|r| !r["user_id"].is_null()), "{a}");
            }
            if view == "causal-chains" {
                assert!(!a["rows"].as_array().unwrap().is_empty(), "{a}");
            }
        }
    }
    // The proofs, from the proof store on disk (caught up after each kill), prove the same
    // leaves and verify against the tenant's signed checkpoint.
    let lines = std::fs::read_to_string(&input).unwrap();
    let mut proved = 0;
    for line in lines.lines().step_by(997) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(tenant), Some(id)) = (event["tenant_id"].as_str(), event["event_id"].as_str())
        else {
            continue;
        };
        let path = format!("/v1/tenants/{tenant}/proofs/inclusion?event_id={id}");
        let (code_a, a) = get_json(&addr_a, &path, "");
        let (code_b, b) = get_json(&addr_b, &path, "");
        // The logs differ only after the input: API access events join them as requests come.
        assert_eq!(
            (code_a, &a["seq"], &a["leaf_hash"]),
            (code_b, &b["seq"], &b["leaf_hash"]),
            "{path}"
        );
        if code_a != 200 {
            continue;
        }
        let hash = |v: &Value| -> [u8; 32] {
            hex::decode(v.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        let proof: Vec<[u8; 32]> = a["proof"].as_array().unwrap().iter().map(hash).collect();
        assert!(
            merkle::verify_inclusion(
                &hash(&a["leaf_hash"]),
                a["seq"].as_u64().unwrap(),
                a["tree_size"].as_u64().unwrap(),
                &proof,
                &hash(&a["checkpoint"]["root"]),
            ),
            "{path}: {a}"
        );
        for (addr, p) in [(&addr_a, &a), (&addr_b, &b)] {
            let size = p["tree_size"].as_u64().unwrap();
            let path = format!(
                "/v1/tenants/{tenant}/proofs/consistency?from={}&to={size}",
                size / 3 + 1
            );
            let (code, c) = get_json(addr, &path, "");
            assert_eq!(code, 200, "{path}: {c}");
            let proof: Vec<[u8; 32]> = c["proof"].as_array().unwrap().iter().map(hash).collect();
            assert_eq!(c["to_root"], p["checkpoint"]["root"], "{path}");
            assert!(
                merkle::verify_consistency(
                    size / 3 + 1,
                    size,
                    &hash(&c["from_root"]),
                    &hash(&c["to_root"]),
                    &proof
                ),
                "{path}: {c}"
            );
        }
        proved += 1;
    }
    assert!(proved >= 10, "only {proved} inclusion proofs");
    drop((uninterrupted, restarted));
}

/// A restart reads the chain and emitter heads from the newest sealed heads file and only
/// the rows of the epochs after it: what it resumes from equals what the tables' whole
/// history gives, and so do the source positions (whose older Iceberg snapshots are
/// expired). A heads file whose bytes do not match its sealed digest is passed over.
#[test]
fn heads_from_the_heads_file_equal_the_whole_history() {
    use custody_operators::sinks::iceberg::Warehouse;
    let dir = tempfile::tempdir().unwrap();
    // 8 epochs of 5,000: heads files at the snapshot epochs, rows after the last of them.
    let input = workload(dir.path(), 37_000, 7);
    let wh = dir.path().join("wh");
    let out = run_command(&input, &wh).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resume = || {
        runtime.block_on(async {
            let w = Warehouse::open(&wh).await.unwrap();
            let state = w.resume_state().await.unwrap();
            let mut emitters: Vec<_> = state.emitters.into_iter().collect();
            emitters.sort();
            let sources = (
                state.positions,
                state.fingerprints,
                state.byte_positions,
                state.last_clock,
            );
            (state.last_epoch, state.heads, emitters, sources)
        })
    };
    let heads_files = || -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(wh.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("heads-")
            })
            .collect();
        files.sort();
        files
    };
    let files = heads_files();
    assert!(files.len() >= 2, "heads files: {files:?}");
    // Snapshots of the epochs before the oldest heads file kept are expired.
    let snapshots = runtime.block_on(async {
        let w = Warehouse::open(&wh).await.unwrap();
        let t = w.table("epochs").await.unwrap();
        t.metadata().snapshots().count()
    });
    let from_file = resume();
    assert!(
        (snapshots as u64) < from_file.0.unwrap() + 1,
        "{snapshots} snapshots for {:?} epochs",
        from_file.0
    );
    assert!(from_file.0 > Some(0) && !from_file.1.is_empty() && !from_file.2.is_empty());
    // The views' snapshot: read back in chunks of whole lines that make up the file; the
    // newest one altered is passed over for the one before it.
    let latest = || {
        runtime.block_on(async {
            let w = Warehouse::open(&wh).await.unwrap();
            w.latest_snapshot(from_file.0.unwrap()).await.unwrap()
        })
    };
    let (epoch, chunks) = latest().expect("a views' snapshot");
    let path = wh.join(Warehouse::snapshot_path(epoch));
    assert_eq!(chunks.concat(), std::fs::read(&path).unwrap());
    assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
    let bytes = std::fs::read(&path).unwrap();
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] = if altered[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&path, &altered).unwrap();
    let older = latest().expect("an older views' snapshot");
    assert!(older.0 < epoch, "{} after {epoch}", older.0);
    std::fs::write(&path, &bytes).unwrap();
    // The newest heads file altered: passed over for the one before it.
    let newest = files.last().unwrap();
    let text = std::fs::read_to_string(newest).unwrap();
    std::fs::write(newest, text.replacen('0', "1", 1)).unwrap();
    assert_eq!(resume(), from_file);
    for f in heads_files() {
        std::fs::remove_file(f).unwrap();
    }
    assert_eq!(resume(), from_file);
}
