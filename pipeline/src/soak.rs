//! `custody bench --soak`: the whole pipeline over a long generated stream, to show that its
//! memory and per-event cost do not grow with history, and that a restart does not either.
//!
//! The generator (sessions that start and end, over `--tenants` tenants) writes an NDJSON file
//! of `events` + [`TAIL`] events. Then, with the file pipeline (all views, Iceberg commits,
//! proofs):
//! 1. one run over the first `events` events, then a clean stop: every million committed
//!    events it prints RSS (its largest sample over that million, and the peak so far), CPU µs
//!    per event, events/s over the last million, and the views' state gauges;
//! 2. [`RESTARTS`] restarts of that warehouse, each taking a share of the tail; then the proof
//!    latencies from the proof store they leave;
//! 3. in a second warehouse, a run over the first [`FIRST_STOP`] events, and as many restarts
//!    over the next [`TAIL`].
//!
//! The restarts print the time from the call to the views being served again and to the first
//! new epoch committed (ingesting again), after [`FIRST_STOP`] and after `events` events: the
//! median of the restarts and each of them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_operators::Metrics;
use custody_operators::record::RawRecord;
use custody_operators::sources::ndjson::NdjsonSource;
use custody_operators::sources::{BytePosition, Source};
use custody_reports::live::LiveViews;
use custody_reports::proofs::LiveLogs;

use crate::dataflow::{RunOptions, run_pipeline};
use crate::generate::{Generator, GeneratorConfig};

/// Where the second warehouse's first run stops (the early restart point).
pub const FIRST_STOP: u64 = 2_000_000;
/// Events after `events`, taken by the restart after the whole stream.
pub const TAIL: u64 = 50_000;
/// Report interval, events.
const EVERY: u64 = 1_000_000;

/// The process's resident set and its peak, bytes (`/proc/self/status`).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time used by the process so far (user + system), seconds (`/proc/self/stat`, in
/// clock ticks of 1/100 s, the Linux `USER_HZ`).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the `)`.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The first `limit` records of a source.
struct Limited {
    inner: Box<dyn Source>,
    left: u64,
}

impl Source for Limited {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn fingerprint(&self) -> custody_operators::Result<Option<String>> {
        self.inner.fingerprint()
    }
    fn matches_fingerprint(&self, then: &str) -> custody_operators::Result<bool> {
        self.inner.matches_fingerprint(then)
    }
    fn seek(
        &mut self,
        durable: &std::collections::BTreeMap<i32, i64>,
    ) -> custody_operators::Result<()> {
        self.inner.seek(durable)?;
        let done = durable.get(&0).map_or(0, |last| (*last + 1) as u64);
        self.left = self.left.saturating_sub(done);
        Ok(())
    }
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> custody_operators::Result<Option<Vec<RawRecord>>> {
        if self.left == 0 {
            return Ok(None);
        }
        let batch = self.inner.next_batch(max.min(self.left as usize), wait)?;
        self.left -= batch.as_ref().map_or(0, |b| b.len() as u64);
        Ok(batch)
    }
    fn ack(
        &mut self,
        positions: &custody_operators::sinks::iceberg::SourcePositions,
    ) -> custody_operators::Result<()> {
        self.inner.ack(positions)
    }
    fn byte_position(&self) -> Option<BytePosition> {
        self.inner.byte_position()
    }
    fn seek_to(&mut self, at: &BytePosition) -> custody_operators::Result<bool> {
        self.inner.seek_to(at)
    }
}

/// Every `custody_view_state` gauge, as `view/kind=value` (the views' state sizes).
fn state_gauges(metrics: &Metrics) -> String {
    use prometheus::core::Collector;
    let mut out: Vec<String> = Vec::new();
    for family in metrics.view_state.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map_or("", |l| l.value())
                    .to_string()
            };
            out.push(format!(
                "{}/{}={}",
                label("view"),
                label("kind"),
                m.get_gauge().get_value()
            ));
        }
    }
    out.sort();
    out.join(" ")
}

/// What one run took.
struct RunFigures {
    /// From the call to the views being served (rebuilt from the warehouse).
    ready: Option<Duration>,
    /// From the call to the first epoch committed.
    first_commit: Option<Duration>,
    committed: u64,
    /// The proof state the run served.
    logs: Arc<Mutex<LiveLogs>>,
}

/// Runs the pipeline over the first `limit` lines of `file` into `opts.warehouse`, printing
/// the figures every million events committed (counted from `base`).
fn run(
    opts: &RunOptions,
    file: &Path,
    limit: u64,
    base: u64,
    report: bool,
) -> anyhow::Result<RunFigures> {
    let called = Instant::now();
    let metrics = Metrics::new();
    let live = Arc::new(Mutex::new(LiveViews::default()));
    let logs = Arc::new(Mutex::new(LiveLogs::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let source = Limited {
        inner: Box::new(NdjsonSource::file(file, opts.decode.max_event_bytes)?),
        left: limit,
    };
    let ready = Arc::new(Mutex::new(None::<Duration>));
    let first_commit = Arc::new(Mutex::new(None::<Duration>));
    let watcher = {
        let (metrics, stop, live) = (metrics.clone(), Arc::clone(&stop), Arc::clone(&live));
        let (ready, first_commit) = (Arc::clone(&ready), Arc::clone(&first_commit));
        std::thread::spawn(move || {
            let committed = || {
                metrics.events_accepted.get()
                    + metrics.sink_rows.with_label_values(&["quarantine"]).get()
            };
            let (mut mark_events, mut mark_cpu, mut mark_at) =
                (base, cpu_seconds(), Instant::now());
            // The largest RSS sampled over the current million: the state's size, free of
            // where in its epoch cycle a single reading happens to fall.
            let (mut window_max, mut ticks) = (0u64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                ticks += 1;
                if report && ticks.is_multiple_of(10) {
                    window_max = window_max.max(rss().0);
                }
                let n = committed();
                if n > 0
                    && let Ok(mut f) = first_commit.lock()
                    && f.is_none()
                {
                    *f = Some(called.elapsed());
                }
                if (live.lock().is_ok_and(|l| l.epoch().is_some()) || n > 0 || base == 0)
                    && let Ok(mut r) = ready.lock()
                    && r.is_none()
                {
                    *r = Some(called.elapsed());
                }
                let total = base + n;
                if report && total / EVERY > mark_events / EVERY {
                    let (cpu, now) = (cpu_seconds(), Instant::now());
                    let (rss, peak) = rss();
                    let window = window_max.max(rss);
                    window_max = 0;
                    let done = (total - mark_events) as f64;
                    let state = |kind: &str| {
                        metrics
                            .view_state
                            .with_label_values(&["session_scoped", kind])
                            .get()
                    };
                    let live_rows = live.lock().map_or(0, |l| l.live_rows());
                    println!(
                        "  {:>5.1}M events: RSS {:>6.0} MB (max over this million {:>6.0} MB, peak {:>6.0} MB), {:>6.1} µs CPU/event, {:>8.0} events/s; open sessions {} ({} events), tombstones {}, live rows {}",
                        total as f64 / 1e6,
                        rss as f64 / 1e6,
                        window as f64 / 1e6,
                        peak as f64 / 1e6,
                        (cpu - mark_cpu) * 1e6 / done,
                        done / now.duration_since(mark_at).as_secs_f64(),
                        state("open_sessions"),
                        state("events"),
                        state("tombstones"),
                        live_rows,
                    );
                    println!("           state: {}", state_gauges(&metrics));
                    (mark_events, mark_cpu, mark_at) = (total, cpu, now);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut opts = opts.clone();
    opts.idle_exit = Some(Duration::from_secs(2));
    let summary = run_pipeline(
        Box::new(source),
        opts,
        metrics.clone(),
        live,
        Arc::clone(&logs),
        Arc::clone(&stop),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let summary = summary?;
    let ready = ready.lock().ok().and_then(|r| *r);
    let first_commit = first_commit.lock().ok().and_then(|f| *f);
    Ok(RunFigures {
        ready,
        first_commit,
        committed: summary.accepted + summary.quarantined,
        logs,
    })
}

/// The soak benchmark: `events` events over `tenants` tenants in `dir` (a temporary directory
/// when `None`), removed afterwards unless `keep`.
pub fn soak(
    opts: RunOptions,
    events: u64,
    tenants: usize,
    dir: Option<&Path>,
    keep: bool,
) -> anyhow::Result<()> {
    let mut temp = tempfile::tempdir_in(dir.unwrap_or(&std::env::temp_dir()))?;
    temp.disable_cleanup(keep);
    let file = temp.path().join("soak.ndjson");
    let started = Instant::now();
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
        for line in Generator::new(GeneratorConfig {
            events: events + TAIL,
            tenants,
            ..GeneratorConfig::default()
        }) {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    println!(
        "soak bench: {} + {TAIL} events over {tenants} tenants generated to {} ({:.1} GB) in {:.0} s",
        events,
        file.display(),
        std::fs::metadata(&file)?.len() as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let mut opts = opts;
    opts.warehouse = temp.path().join("warehouse");
    opts.key_dir = temp.path().join("keys");
    opts.access_log = false;
    opts.clock_tick = Duration::ZERO;
    let first = FIRST_STOP.min(events);
    let (rss0, _) = rss();
    println!(
        "  start: RSS {:.0} MB; batch {} events/epoch, {} workers",
        rss0 as f64 / 1e6,
        opts.batch_size,
        opts.workers
    );
    // One process over the whole stream: what it holds must not grow with what it has seen.
    let whole = run(&opts, &file, events, 0, true)?;
    println!("  stopped after {} events", whole.committed);
    let mut committed = whole.committed;
    let late = restarts(&opts, &file, events, &mut committed)?;
    // Proofs now, from the store the restarts left (before the second warehouse is written).
    proof_latency(&file, &late.logs)?;
    // The restarts after `first` events, in a warehouse of its own.
    let mut early_opts = opts.clone();
    early_opts.warehouse = temp.path().join(format!("warehouse-{first}"));
    committed += run(&early_opts, &file, first, 0, false)?.committed;
    let early = restarts(&early_opts, &file, first, &mut committed)?;
    let (_, peak) = rss();
    for (at, r) in [(first, &early), (events, &late)] {
        let ms = |d: &[Duration]| {
            d.iter()
                .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  restart after {:.1}M events ({RESTARTS} restarts, median): views served after {:.0} ms ({}), ingesting again (first epoch committed) after {:.0} ms ({})",
            at as f64 / 1e6,
            median(&r.ready).as_secs_f64() * 1e3,
            ms(&r.ready),
            median(&r.first_commit).as_secs_f64() * 1e3,
            ms(&r.first_commit),
        );
    }
    println!(
        "  peak RSS {:.0} MB; {} events committed in all",
        peak as f64 / 1e6,
        committed
    );
    Ok(())
}

/// Restarts timed per warehouse.
const RESTARTS: u64 = 3;

/// What the restarts of one warehouse took.
struct Restarts {
    ready: Vec<Duration>,
    first_commit: Vec<Duration>,
    /// The proof state the last restart served.
    logs: Arc<Mutex<LiveLogs>>,
}

/// [`RESTARTS`] restarts of the warehouse stopped after `at` events, each taking its share of
/// the [`TAIL`] events after it.
fn restarts(
    opts: &RunOptions,
    file: &Path,
    at: u64,
    committed: &mut u64,
) -> anyhow::Result<Restarts> {
    let mut out = Restarts {
        ready: Vec::new(),
        first_commit: Vec::new(),
        logs: Arc::default(),
    };
    for i in 0..RESTARTS {
        let (from, to) = (at + TAIL * i / RESTARTS, at + TAIL * (i + 1) / RESTARTS);
        let r = run(opts, file, to, from, false)?;
        *committed += r.committed;
        out.ready.extend(r.ready);
        out.first_commit.extend(r.first_commit);
        out.logs = r.logs;
    }
    Ok(out)
}

/// The median of `d` (zero if empty).
fn median(d: &[Duration]) -> Duration {
    let mut d = d.to_vec();
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

/// Times inclusion proofs of 2,000 events spread over the input, and as many consistency
/// proofs, against the proof store the last run left.
fn proof_latency(file: &Path, logs: &Mutex<LiveLogs>) -> anyhow::Result<()> {
    use std::io::BufRead;
    let lines = std::io::BufReader::new(std::fs::File::open(file)?).lines();
    let total = lines.count().max(1);
    let step = (total / 2_000).max(1);
    let mut ids = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(file)?)
        .lines()
        .step_by(step)
    {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if let (Some(t), Some(id)) = (v["tenant_id"].as_str(), v["event_id"].as_str()) {
            ids.push((t.to_string(), id.to_string()));
        }
    }
    let mut logs = logs
        .lock()
        .map_err(|_| anyhow::anyhow!("proof state poisoned"))?;
    let (mut inclusion, mut consistency) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for (tenant, id) in &ids {
        let t = Instant::now();
        let proof = logs.inclusion(tenant, id);
        inclusion.push(t.elapsed().as_secs_f64() * 1e3);
        let Ok(proof) = proof else {
            failed += 1;
            continue;
        };
        let t = Instant::now();
        let c = logs.consistency(tenant, proof.seq + 1, proof.tree_size);
        consistency.push(t.elapsed().as_secs_f64() * 1e3);
        failed += usize::from(c.is_err());
    }
    for (label, mut v) in [("inclusion", inclusion), ("consistency", consistency)] {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        if !v.is_empty() {
            println!(
                "  {label} proofs from the proof store: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} proofs)",
                at(0.5),
                at(0.99),
                at(1.0),
                v.len()
            );
        }
    }
    anyhow::ensure!(failed == 0, "{failed} proofs failed");
    Ok(())
}
