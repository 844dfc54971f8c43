//! Exactly-once under crashes: 200,000 events over 20 tenants on a real broker (tansu); the
//! pipeline is killed with SIGKILL at 10 seeded points, several of them inside an epoch's
//! multi-table commit (failpoints), and restarted each time. At the end the lake holds every
//! event exactly once, in per-tenant order, and the chains verify. A second test restarts the
//! broker under a running pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use custody_tests::{
    CHAIN_COLUMNS, StderrWatch, Tansu, assert_chains_link, custody, custody_command,
    generate_ndjson, read_columns, rows, view_rows,
};

const TOPIC: &str = "agent-events";

/// Where and how a run is stopped.
#[derive(Debug)]
enum Kill {
    /// Halt at this failpoint (`NAME#N`), then SIGKILL.
    At(&'static str, u64),
    /// SIGKILL after this long.
    After(Duration),
}

/// A small deterministic generator (xorshift64*), so the points are the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn spawn_run(broker: &str, wh: &Path, failpoint: Option<String>, idle_exit: &str) -> Child {
    let mut command = custody_command();
    command
        .args([
            "run", "--kafka", broker, "--topic", TOPIC, "--group", "crash",
        ])
        .args([
            "--warehouse",
            wh.to_str().unwrap(),
            "--idle-exit",
            idle_exit,
        ])
        .args(["--listen", "off"])
        .env("RUST_LOG", "warn")
        .env("CUSTODY__PIPELINE__BATCH_SIZE", "5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = failpoint {
        command.env("CUSTODY_FAILPOINT", f);
    }
    command.spawn().expect("spawn custody run")
}

/// Runs the pipeline until `kill` says, then SIGKILLs it. Returns whether it was stopped
/// inside a commit (the failpoint fired) rather than having finished first.
fn run_and_kill(broker: &str, wh: &Path, kill: &Kill) -> bool {
    match kill {
        Kill::At(name, nth) => {
            let mut child = spawn_run(broker, wh, Some(format!("{name}#{nth}")), "60s");
            let watch = StderrWatch::new(&mut child, "failpoint");
            let fired = watch.wait(Duration::from_secs(120));
            child.kill().unwrap();
            child.wait().unwrap();
            fired
        }
        Kill::After(d) => {
            let mut child = spawn_run(broker, wh, None, "60s");
            std::thread::sleep(*d);
            child.kill().unwrap();
            child.wait().unwrap();
            false
        }
    }
}

fn produce(broker: &str, n: u64, tenants: usize) {
    let out = custody(&[
        "generate",
        "--events",
        &n.to_string(),
        "--tenants",
        &tenants.to_string(),
        "--seed",
        "2026",
        "--kafka",
        broker,
        "--topic",
        TOPIC,
        "--partitions",
        "4",
    ]);
    assert!(
        out.contains(&format!("produced {n} of {n} events")),
        "{out}"
    );
}

/// Runs to the end of the topic; returns stdout.
fn run_to_end(broker: &str, wh: &Path) -> String {
    let out = spawn_run(broker, wh, None, "8s")
        .wait_with_output()
        .expect("custody run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "final run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every event exactly once, per-tenant order kept, chains linked and verified.
fn assert_exactly_once(wh: &Path, n: usize, tenants: usize) {
    let tables = read_columns(
        wh,
        &[
            &format!("{CHAIN_COLUMNS},source,source_offset"),
            "quarantine:reason_kind",
        ],
    );
    let events = rows(&tables, "events");
    assert!(rows(&tables, "quarantine").is_empty());
    assert_eq!(events.len(), n, "events in the lake");
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), n, "duplicate event ids");
    assert_eq!(assert_chains_link(events), tenants);
    // Per-tenant order: seq follows the source order (a tenant's events share a partition).
    let mut by_tenant: BTreeMap<&str, Vec<(i64, &str, i64)>> = BTreeMap::new();
    for e in events {
        by_tenant
            .entry(e["tenant_id"].as_str().unwrap())
            .or_default()
            .push((
                e["seq"].as_i64().unwrap(),
                e["source"].as_str().unwrap(),
                e["source_offset"].as_i64().unwrap(),
            ));
    }
    for (tenant, mut chain) in by_tenant {
        chain.sort();
        for w in chain.windows(2) {
            assert_eq!(w[0].1, w[1].1, "tenant {tenant} spans partitions");
            assert!(
                w[0].2 < w[1].2,
                "tenant {tenant}: seq order != offset order"
            );
        }
    }
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    assert!(verified.contains("all ok"), "{verified}");
}

#[test]
fn kill_9_at_ten_points_loses_and_duplicates_nothing() {
    let (n, tenants) = (200_000u64, 20);
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start_persistent(dir.path());
    produce(&broker.addr, n, tenants);
    let wh = dir.path().join("wh");

    let mut rng = Rng(0x00C0_FFEE);
    let points = [
        "after-commit:events",
        "",
        "after-commit:chain_heads",
        "before-ack",
        "after-commit:checkpoints",
        "",
        "commit-start",
        "after-commit:view_changes",
        "after-commit:epochs",
        "",
    ];
    let mut inside_commit = 0;
    for (round, point) in points.iter().enumerate() {
        let kill = if point.is_empty() {
            Kill::After(Duration::from_millis(1500 + rng.below(3000)))
        } else {
            Kill::At(point, 1 + rng.below(2))
        };
        let fired = run_and_kill(&broker.addr, &wh, &kill);
        eprintln!("round {round}: {kill:?} (halted at the failpoint: {fired})");
        if matches!(kill, Kill::At(..)) {
            assert!(fired, "round {round}: {kill:?} was never reached");
            inside_commit += 1;
        }
    }
    assert_eq!(inside_commit, 7);
    let last = run_to_end(&broker.addr, &wh);
    assert!(last.contains("(balanced)"), "{last}");
    assert_exactly_once(&wh, n as usize, tenants);
}

#[test]
fn broker_restart_during_the_run_loses_and_duplicates_nothing() {
    let (n, tenants) = (60_000u64, 20);
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start_persistent(dir.path());
    produce(&broker.addr, n, tenants);
    let wh = dir.path().join("wh");

    let child = spawn_run(&broker.addr, &wh, None, "20s");
    std::thread::sleep(Duration::from_secs(3));
    broker.kill();
    std::thread::sleep(Duration::from_secs(4));
    broker.restart();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&wh, n as usize, tenants);
}

/// Re-running over the same input ingests nothing twice, and an operator's forced skip is
/// recorded as a gap marker in quarantine, once.
#[test]
fn reruns_are_idempotent_and_forced_skips_leave_a_gap_marker() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    generate_ndjson(&input, 300, 3);
    let wh = dir.path().join("wh");
    let (input, wh_arg) = (input.to_str().unwrap(), wh.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--input", input, "--warehouse", wh_arg];
        args.extend_from_slice(extra);
        custody(&args)
    };
    let skip = [
        "--force-skip",
        "0:100",
        "--skip-reason",
        "INC-42 poison records",
    ];
    let first = run(&skip);
    assert!(
        first.contains("201 in = 200 accepted + 1 quarantined (balanced)"),
        "{first}"
    );
    for again in [run(&[]), run(&skip)] {
        assert!(
            again.contains("0 in = 0 accepted + 0 quarantined (balanced)"),
            "{again}"
        );
    }
    let tables = read_columns(&wh, &["events:event_id", "quarantine:reason_kind,reason"]);
    assert_eq!(rows(&tables, "events").len(), 200);
    let quarantine = rows(&tables, "quarantine");
    assert_eq!(quarantine.len(), 1);
    assert_eq!(quarantine[0]["reason_kind"], "operator_skip");
    assert_eq!(
        quarantine[0]["reason"],
        "gap: an operator skipped offsets 0..=99 of partition 0: INC-42 poison records"
    );
}

/// The views survive restarts: after two runs over the two halves of a workload, the view
/// changelogs in the lake net out to exactly what a recomputation over the events gives
/// (each restart rebuilds the views' state from the lake before going on).
#[test]
fn views_resume_their_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.ndjson");
    generate_ndjson(&all, 4000, 5);
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let wh = dir.path().join("wh");
    for (i, half) in lines.chunks(2000).enumerate() {
        let path = dir.path().join(format!("part{i}.ndjson"));
        std::fs::write(&path, half.join("\n") + "\n").unwrap();
        custody(&[
            "run",
            "--input",
            path.to_str().unwrap(),
            "--warehouse",
            wh.to_str().unwrap(),
        ]);
    }
    let tables = read_columns(
        &wh,
        &[
            "events:tenant_id,event_type,event_id,payload",
            "view_changes:view,tenant_id,key,row,diff",
        ],
    );
    // Recomputed from the events.
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut escalations = BTreeSet::new();
    let mut decisions: Vec<(String, String)> = Vec::new();
    for e in rows(&tables, "events") {
        let (tenant, ty) = (
            e["tenant_id"].as_str().unwrap(),
            e["event_type"].as_str().unwrap(),
        );
        *counts.entry((tenant.into(), ty.into())).or_default() += 1;
        let payload: serde_json::Value =
            serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
        match ty {
            "HUMAN_ESCALATION_TRIGGERED" => {
                escalations.insert((
                    tenant.to_string(),
                    e["event_id"].as_str().unwrap().to_string(),
                ));
            }
            "HUMAN_REVIEW_DECISION" => decisions.push((
                tenant.to_string(),
                payload["escalation_event_id"].as_str().unwrap().to_string(),
            )),
            _ => {}
        }
    }
    // The changelog, netted.
    let mut net: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    for r in &view_rows(&tables, "event_counts") {
        *net.entry((
            r["tenant_id"].as_str().unwrap().into(),
            r["event_type"].as_str().unwrap().into(),
            r["count"].as_i64().unwrap(),
        ))
        .or_default() += r["diff"].as_i64().unwrap();
    }
    let current: BTreeMap<(String, String), i64> = net
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|((t, ty, c), d)| {
            assert_eq!(d, 1, "({t}, {ty}, {c}) nets to {d}");
            ((t, ty), c)
        })
        .collect();
    assert_eq!(current, counts);

    let mut reviews: BTreeMap<String, i64> = BTreeMap::new();
    for (tenant, escalation) in &decisions {
        if escalations.contains(&(tenant.clone(), escalation.clone())) {
            *reviews.entry(tenant.clone()).or_default() += 1;
        }
    }
    let mut net: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for r in &view_rows(&tables, "hitl_latency") {
        *net.entry((
            r["tenant_id"].as_str().unwrap().into(),
            r["reviews"].as_i64().unwrap(),
        ))
        .or_default() += r["diff"].as_i64().unwrap();
    }
    let current: BTreeMap<String, i64> = net
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|((t, n), d)| {
            assert_eq!(d, 1);
            (t, n)
        })
        .collect();
    assert!(!reviews.is_empty());
    assert_eq!(current, reviews);
}
