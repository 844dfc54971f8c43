//! Assembles sources → transforms → views → sink, and drives it.
//!
//! ```text
//!  source (worker 0) ─► decode+tokenize ─┬─ oks ─► hash_chain (by tenant) ─┬─► views ─┐
//!                               └─ errs (quarantine) ───────────────────────────────┼──────────┤
//!                                                                                   └──────────┴─► sink_forward (worker 0)
//!                                                                                                  ─► IcebergSink thread
//! ```
//!
//! Worker 0 pulls one source batch per epoch. An epoch is sealed once the probe after the sink
//! forwarder passes it; the sink thread then commits it and reports back, and only then is the
//! source acknowledged. At most `max_epochs_in_flight` epochs are read ahead of the last sealed
//! one: that bound, and the bounded channel to the sink, are the pipeline's backpressure.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_operators::checkpoint::Signer;
use custody_operators::pii::{Tokenizer, VaultMode};
use custody_operators::proof_store::ProofStore;
use custody_operators::record::{
    ACCESS_LOG_PARTITION, Epoch, RawRecord, SinkRecord, ViewUpdate, WrittenEvent,
};
use custody_operators::sinks::dead_letter::DeadLetter;
use custody_operators::sinks::event_writer::{EventWriter, WriteEvents};
use custody_operators::sinks::iceberg::{
    Committed, HeadsFile, IcebergSink, SinkMsg, SourcePositions, ViewSnapshot, Warehouse, Watermark,
};
use custody_operators::sources::Source;
use custody_operators::sources::access_log::WithAccessLog;
use custody_operators::sources::kafka::positions_of;
use custody_operators::sources::resume::{ForcedSkip, ResumingSource};
use custody_operators::transforms::decode::DecodeConfig;
use custody_operators::vault::{Kek, Keystore, TokenKeyring};
use custody_operators::verify::ContinuousVerifier;
use custody_operators::{Decode, ForwardToSink, HashChain, Metrics};
use custody_reports::ViewsConfig;
use custody_reports::live::{LiveViews, RetiredRows};
use custody_reports::proofs::LiveLogs;
use custody_reports::{render_views, split_view_facts, view_facts};
use custody_schemas::time::now_us;
use differential_dataflow::input::{Input as _, InputSession};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Exchange, Input, Probe};

/// Errors that stop a pipeline run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A source or sink failed.
    #[error(transparent)]
    Operator(#[from] custody_operators::Error),
    /// The sink stopped before every epoch was committed.
    #[error("sink stopped: {0}")]
    SinkStopped(String),
    /// Timely failed to start or a worker panicked.
    #[error("dataflow: {0}")]
    Dataflow(String),
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Records per epoch.
    pub batch_size: usize,
    /// Epochs in flight.
    pub max_epochs_in_flight: usize,
    /// Source poll wait.
    pub poll_interval: Duration,
    /// Least time between epochs: records that arrive sooner wait (up to `batch_size`) for
    /// the next epoch, so a trickle of input does not pay an epoch's commit per poll. Zero:
    /// every poll that returns records opens an epoch.
    pub epoch_interval: Duration,
    /// Stop after this long without input (unbounded sources).
    pub idle_exit: Option<Duration>,
    /// Decode limits.
    pub decode: DecodeConfig,
    /// View settings.
    pub views: ViewsConfig,
    /// With no input, open an epoch this often so the views' clock moves (zero: never).
    pub clock_tick: Duration,
    /// PII token master key.
    pub master_key: Vec<u8>,
    /// Custom recognizers and per-tenant field policies.
    pub pii_policy: Arc<custody_operators::pii::PiiPolicy>,
    /// What is sealed in the vault.
    pub vault: VaultMode,
    /// Current and previous KEKs (used when the vault is on).
    pub keks: Option<(Kek, Vec<Kek>)>,
    /// The key directory (outside the warehouse): the public key is published there too.
    pub key_dir: PathBuf,
    /// Checkpoint signing key seed.
    pub signing_seed: [u8; 32],
    /// Warehouse directory.
    pub warehouse: PathBuf,
    /// Sink id for commit ids.
    pub sink_id: String,
    /// Compaction with the epochs' commits, if on.
    pub compact: Option<custody_operators::sinks::iceberg::CompactSchedule>,
    /// Kafka brokers and topic for quarantined raw records.
    pub dead_letter: Option<(String, String)>,
    /// Skips an operator forced (each recorded as a gap marker).
    pub skips: Vec<ForcedSkip>,
    /// Where committed alert changes go.
    pub alerts: Option<crate::alerting::AlertSender>,
    /// Merge the warehouse's access log (API access events) into the source.
    pub access_log: bool,
    /// With the access log: keep running after the source is exhausted, until stopped.
    pub keep_alive: bool,
    /// Records when each epoch was opened, sealed and committed (the freshness benchmark).
    pub timings: Option<Arc<Mutex<Vec<EpochTiming>>>>,
    /// The warehouse's writer lock, if the caller already holds it ([`lock_warehouse`]).
    pub held_lock: Option<Arc<std::fs::File>>,
    /// Printed to stdout once the views are rebuilt from the lake, before any input is read.
    pub ready_line: Option<String>,
    /// A retention application committed with the first epoch ([`custody_operators::retention`]).
    pub retention: Option<custody_operators::retention::Job>,
    /// Public keys of signing keys rotated from: the state resumed from may be sealed under
    /// one of them.
    pub previous_signers: Vec<ed25519_dalek::VerifyingKey>,
    /// With tenants pinned to locations: this pipeline's location, so that it passes on what
    /// another location keeps ([`custody_operators::residency`]).
    pub residency: Option<Arc<custody_operators::residency::Residency>>,
    /// The configuration run under, recorded in `custody.config_log` if it changed.
    pub config_evidence: Option<custody_operators::config_log::ConfigEvidence>,
}

/// When one epoch passed each stage.
#[derive(Clone, Debug)]
pub struct EpochTiming {
    /// The epoch.
    pub epoch: Epoch,
    /// Its source positions (the last offset per partition).
    pub positions: SourcePositions,
    /// The dataflow, views included, finished it: its view changes exist.
    pub sealed: Option<Instant>,
    /// It is committed to the lake and applied to the served views.
    pub committed: Option<Instant>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Raw records read.
    pub events_in: u64,
    /// Events committed to `custody.events`.
    pub accepted: u64,
    /// Records committed to `custody.quarantine`.
    pub quarantined: u64,
    /// Records read and passed on to the location that keeps their tenant's data (not in
    /// `events_in`), by location.
    pub elsewhere: std::collections::BTreeMap<String, u64>,
    /// Epochs committed.
    pub epochs: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs the pipeline over `source` until it is exhausted, idle for `idle_exit`, or `stop` is set.
pub fn run_pipeline(
    source: Box<dyn Source>,
    opts: RunOptions,
    metrics: Metrics,
    live: Arc<Mutex<LiveViews>>,
    logs: Arc<Mutex<LiveLogs>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(custody_operators::Error::Io)?;
    let _lock = match &opts.held_lock {
        Some(held) => Arc::clone(held),
        None => Arc::new(lock_warehouse(&opts.warehouse)?),
    };
    // A warehouse created by this open (no catalog before) starts a new history, even where
    // the key directory remembers an older one at this path (deleted to start over).
    let created = !opts.warehouse.join("catalog.db").exists();
    let warehouse = runtime.block_on(Warehouse::open(&opts.warehouse))?;
    let keystore = match (&opts.keks, opts.vault.tokens || opts.vault.content) {
        (Some((current, previous)), true) => Some(
            runtime
                .block_on(Keystore::open(
                    &warehouse.root().join("keys/keystore.db"),
                    current.clone(),
                    previous.clone(),
                ))
                .map_err(|e| PipelineError::SinkStopped(e.to_string()))?,
        ),
        (None, true) => {
            return Err(PipelineError::SinkStopped(
                "the vault is on but no key-encryption key was given".into(),
            ));
        }
        _ => None,
    };
    // With the vault on, each tenant's token key is a random data key in the keystore (so
    // erasing the tenant makes its old tokens unlinkable); without it, derived from the master
    // key.
    let token_keys: Option<Arc<dyn custody_operators::pii::TokenKeys>> = match &opts.keks {
        Some((current, previous)) if keystore.is_some() => Some(Arc::new(
            TokenKeyring::open(
                &warehouse.root().join("keys/keystore.db"),
                current.clone(),
                previous.clone(),
            )
            .map_err(|e| PipelineError::SinkStopped(e.to_string()))?,
        )),
        _ => None,
    };
    let resume = runtime.block_on(warehouse.resume_state())?;
    let signer = Signer::from_seed(&opts.signing_seed);
    // Nothing is signed on top of a state that is not the signed one.
    let watermark_path = watermark_path(&opts.key_dir, warehouse.root());
    let mut watermark = Watermark::read(&watermark_path)?;
    if let Some(old) = watermark.as_ref().filter(|_| created) {
        // Kept for the record, out of the way: the old history is not this one.
        let superseded = watermark_path.with_extension(format!("superseded-{}.json", now_us()));
        std::fs::rename(&watermark_path, &superseded).map_err(custody_operators::Error::Io)?;
        tracing::warn!(
            warehouse = %warehouse.root().display(),
            sealed_epoch = old.epoch,
            record = %superseded.display(),
            "a new warehouse where this key once sealed another: starting a new history"
        );
        watermark = None;
    }
    // The state resumed from was sealed by this signing key, or by one it rotated from.
    let trusted: Vec<_> = std::iter::once(signer.public_key())
        .chain(opts.previous_signers.iter().copied())
        .collect();
    resume.verify(&trusted, watermark.as_ref())?;
    if resume
        .last_record
        .as_ref()
        .and_then(|r| r.seal())
        .is_some_and(|seal| !seal.verify(&signer.public_key()))
    {
        tracing::info!(
            key_id = %custody_operators::checkpoint::key_id(&signer.public_key()),
            "resuming from a state sealed under a previous signing key (rotation)"
        );
    }
    let first_epoch = resume.last_epoch.map_or(0, |e| e + 1);
    for table in &resume.rolled_forward {
        metrics
            .sink_commits_rolled_forward
            .with_label_values(&[table.as_str()])
            .inc();
    }
    tracing::info!(
        warehouse = %warehouse.root().display(),
        tenants = resume.heads.len(),
        first_epoch,
        ms = started.elapsed().as_millis() as u64,
        "resuming"
    );
    let source_name = source.name();
    let fingerprint = source.fingerprint()?;
    if let Some(then) = resume.fingerprints.get(&source_name)
        && !source.matches_fingerprint(then)?
    {
        return Err(custody_operators::Error::SourceMismatch {
            source_name,
            message: format!(
                "its content does not begin as the input ingested under that name did \
                 ({then}); give a different input its own path"
            ),
        }
        .into());
    }
    let mut durable = resume
        .positions
        .get(&source_name)
        .cloned()
        .unwrap_or_default();
    // The access log is one file whatever the main source: its durable position is the
    // furthest any run got.
    if let Some(access) = resume
        .positions
        .values()
        .filter_map(|p| p.get(&ACCESS_LOG_PARTITION))
        .max()
    {
        durable.insert(ACCESS_LOG_PARTITION, *access);
    }
    let source: Box<dyn Source> = if opts.access_log {
        Box::new(WithAccessLog::new(
            source,
            warehouse.root(),
            opts.keep_alive,
        ))
    } else {
        source
    };
    let source: Box<dyn Source> = Box::new(ResumingSource::new(
        source,
        durable,
        resume.byte_positions.get(&source_name).copied(),
        &opts.skips,
        metrics.clone(),
    )?);
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "source positioned"
    );
    let dead_letter = opts
        .dead_letter
        .as_ref()
        .map(|(brokers, topic)| {
            runtime.block_on(DeadLetter::connect(brokers, topic.clone(), metrics.clone()))
        })
        .transpose()?;
    // The views' history: their state at the newest snapshot (with the coverage saved beside
    // it), then every event committed after it, each at its own epoch, so that the views
    // resume from their state instead of from nothing.
    let snapshot = match resume.last_epoch {
        Some(last) if !created && opts.views.snapshot_every > 0 => {
            newest_snapshot(&runtime, &warehouse, last)?
        }
        _ => None,
    };
    let mut history = match resume.last_epoch {
        Some(last) => {
            runtime.block_on(warehouse.view_inputs(snapshot.as_ref().map(|s| s.0), last))?
        }
        None => Vec::new(),
    };
    // A retention application rebuilds the views from the events it keeps.
    if let Some(job) = &opts.retention {
        history.retain(|(_, e)| {
            !job.plan
                .tenants
                .get(e.event.tenant_id.as_str())
                .is_some_and(|t| t.expires(e.seq))
        });
    }
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        events = history.len(),
        "views' snapshot and history read"
    );
    let mut retired = RetiredRows::open(&warehouse.root().join("served"))
        .map_err(custody_operators::Error::Io)?;
    if created || retired.epoch() > resume.last_epoch {
        retired.clear().map_err(custody_operators::Error::Io)?;
    }
    if let Ok(mut l) = live.lock() {
        // The views are rebuilt from the lake below (the same rows again if this process
        // already served them), and their retired rows served from the warehouse.
        l.set_retired(retired);
        l.reset_coverage();
        if let Some((epoch, _)) = &snapshot
            && let Err(e) = l.load_coverage(&coverage_path(&warehouse, *epoch))
        {
            tracing::warn!(error = %e, "no coverage beside the views' snapshot");
        }
        for chunk in history.chunk_by(|a, b| a.0 == b.0) {
            let events: Vec<_> = chunk.iter().map(|(_, e)| WrittenEvent::of(e)).collect();
            l.observe(chunk[0].0, &events);
        }
    }
    let history = Arc::new(Mutex::new(Some((snapshot, history))));
    let resume_clock = resume.last_clock;
    let kept_heads = HeadsFile::from_state(&resume);
    let sealer = resume.sealer(signer.clone(), Some(watermark_path));
    let heads = Arc::new(resume.heads);
    let emitters = Arc::new(resume.emitters);
    let store = open_proof_store(&runtime, &warehouse, created, resume.last_epoch)?;
    let loaded = LiveLogs::new(store, resume.last_checkpoints.values().cloned());
    if let Ok(mut l) = logs.lock() {
        *l = loaded;
    }
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "proof store open"
    );
    publish_key(warehouse.root(), &opts.key_dir, &signer)?;

    let event_writer = EventWriter {
        table: runtime.block_on(warehouse.table(custody_schemas::tables::EVENTS))?,
        source: source_name.clone(),
    };
    let (sink_tx, sink_rx) = mpsc::sync_channel::<SinkMsg>(1024);
    let writer_tx = sink_tx.clone();
    let (committed_tx, committed_rx) = mpsc::channel::<Committed>();
    let hook_live = Arc::clone(&live);
    let hook_snapshots = warehouse.snapshot_dir();
    let hook_logs = Arc::clone(&logs);
    let hook_alerts = opts.alerts.clone();
    let verifier = ContinuousVerifier::new(signer.public_key(), &heads);
    let sink = IcebergSink::new(warehouse, opts.sink_id.clone(), metrics.clone())
        .with_verifier(verifier)
        .with_heads(kept_heads)
        .with_compaction_opt(opts.compact)
        .with_dead_letter(dead_letter)
        .with_vault(keystore, opts.vault.content)
        .with_sealer(sealer)
        .with_retention(opts.retention.clone())
        .with_config(opts.config_evidence.clone())
        .on_commit(Box::new(move |notice| {
            if let Ok(mut live) = hook_live.lock() {
                live.apply(notice.epoch, notice.views);
                live.observe(notice.epoch, notice.events);
                if notice.snapshot
                    && let Err(e) = live.save_coverage(&hook_snapshots.join(format!(
                        "coverage-{:012}.json",
                        notice.epoch
                    )))
                {
                    tracing::error!(epoch = notice.epoch, error = %e, "cannot save the views' coverage");
                }
            }
            if let Some(alerts) = &hook_alerts {
                alerts.committed(notice.views);
            }
            if let Ok(mut logs) = hook_logs.lock()
                && let Err(e) = logs.apply(notice.epoch, notice.events, notice.checkpoints)
            {
                // Written again from the lake at the next start (the marker stayed behind).
                tracing::error!(epoch = notice.epoch, error = %e, "proof store: cannot append");
            }
        }));
    let sink_thread = std::thread::Builder::new()
        .name("custody-sink".into())
        .spawn(move || runtime.block_on(sink.run(sink_rx, committed_tx)))
        .map_err(custody_operators::Error::Io)?;

    let shared = Arc::new(Mutex::new(Some(DriverParts {
        source,
        fingerprint,
        sink_tx: sink_tx.clone(),
        committed_rx,
    })));
    let summary = Arc::new(Mutex::new(RunSummary::default()));
    let failure = Arc::new(Mutex::new(None::<String>));
    let config = timely::Config::process(opts.workers.max(1));
    // Each worker adds the chains it owns: a gauge of this run's tenants, not of every run
    // this process made (demo --serve and run after a retention pause start another).
    metrics.tenants.set(0);
    let worker_metrics = metrics.clone();
    let (worker_summary, worker_failure) = (Arc::clone(&summary), Arc::clone(&failure));
    let worker_live = Arc::clone(&live);
    let worker_history = Arc::clone(&history);
    let guards = timely::execute(config, move |worker| {
        let metrics = worker_metrics.clone();
        let mut tokenizer = Tokenizer::new(&opts.master_key)
            .with_policy(Arc::clone(&opts.pii_policy))
            .with_vault(opts.vault);
        if let Some(keys) = &token_keys {
            tokenizer = tokenizer.with_token_keys(Arc::clone(keys));
        }
        let index = worker.index();
        let parts = if index == 0 {
            shared.lock().ok().and_then(|mut p| p.take())
        } else {
            None
        };
        let tx = parts.as_ref().map(|p| p.sink_tx.clone());
        let writer_tx = writer_tx.clone();
        let event_writer = event_writer.clone();
        let decode = opts.decode.clone();
        let views_config = opts.views.clone();
        let heads = Arc::clone(&heads);
        let emitters = Arc::clone(&emitters);
        let signer = signer.clone();
        let worker_live = Arc::clone(&worker_live);
        let rebuilt = opts.retention.as_ref().map(|job| Arc::clone(&job.history));
        let (mut input, mut replayed, mut clock, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
            let (input, raw) = scope.new_input::<Vec<RawRecord>>();
            let (clock, now) = scope.new_collection::<i64, isize>();
            let (replayed, past) = scope.new_input::<Vec<SinkRecord>>();
            let (oks, errs) = raw.decode(decode, tokenizer, &metrics);
            let chained = oks.hash_chain(heads, emitters, signer, first_epoch, &metrics);
            // The history worker 0 reads (snapshot chunks, then events) is dealt out to every
            // worker in turn, so that all of them parse it: the views exchange what they
            // keep by key anyway.
            let mut dealt = 0u64;
            let past = past.exchange(move |_| {
                dealt = dealt.wrapping_add(1);
                dealt
            });
            let (chained, facts) = split_view_facts(chained, &views_config);
            let chained = chained.write_events(event_writer, writer_tx, &metrics);
            let facts = facts.concat(view_facts(past, &views_config));
            let (views, state) = render_views(facts, now, &views_config, &metrics);
            let views = apply_history(views, first_epoch, worker_live, rebuilt.clone());
            let (probe, _) = chained
                .concat(errs.map(|q| SinkRecord::Quarantine(Box::new(q))))
                .concat(views.map(SinkRecord::View))
                .concat(live_only(state, first_epoch).map(SinkRecord::ViewState))
                .forward_to_sink(tx, &metrics)
                .probe();
            (input, replayed, clock, probe)
        });
        if index == 0
            && first_epoch > 0
            && let Some((snapshot, events)) = worker_history.lock().ok().and_then(|mut h| h.take())
        {
            if let Some((epoch, lines)) = snapshot {
                tracing::info!(
                    epoch,
                    bytes = lines.iter().map(Vec::len).sum::<usize>(),
                    "restoring the views' state"
                );
                replayed.advance_to(epoch);
                for line in lines {
                    replayed.send(SinkRecord::ViewState(line));
                }
            }
            // At their own epochs, as first seen, so that the views (session retirement
            // among them) come out as they did.
            tracing::info!(events = events.len(), "rebuilding the views from the lake");
            for (epoch, event) in events {
                if epoch >= first_epoch {
                    break;
                }
                if *replayed.time() < epoch {
                    replayed.advance_to(epoch);
                }
                replayed.send(SinkRecord::Event(Box::new(event)));
            }
        }
        drop(replayed);
        let Some(parts) = parts else {
            // Other workers only execute; worker 0 owns the input.
            drop(input);
            drop(clock);
            return;
        };
        // The clock as of the last committed epoch, with the views' history.
        let clock_now = resume_clock.filter(|_| first_epoch > 0);
        if let Some(c) = clock_now {
            clock.update(c, 1);
        }
        input.advance_to(first_epoch);
        clock.advance_to(first_epoch);
        // An input session tells timely of its time only when flushed.
        clock.flush();
        let mut driver = Driver {
            parts,
            opts: &opts,
            metrics: &metrics,
            in_flight: VecDeque::new(),
            sealed: VecDeque::new(),
            summary: RunSummary::default(),
            clock_now,
        };
        // The views' history first: once the probe is past it, the served state is rebuilt.
        while first_epoch > 0 && probe.less_than(&first_epoch) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        if let Some(line) = &opts.ready_line {
            println!("{line}");
        }
        let result = driver.drive(worker, &mut input, &mut clock, &probe, &stop, first_epoch);
        // Every epoch opened is sealed while the inputs still stand at the next one, so every
        // worker sees the frontier pass each epoch (and checkpoints its tenants at it) before
        // the inputs close: closing first could skip the last epochs on a worker with no data.
        let result = result.and_then(|()| driver.drain(worker, &probe));
        drop(input);
        drop(clock);
        let result = result.and_then(|()| driver.finish(worker, &probe));
        if let Ok(mut s) = worker_summary.lock() {
            *s = driver.summary.clone();
        }
        if let (Err(e), Ok(mut f)) = (result, worker_failure.lock()) {
            *f = Some(e);
        }
    })
    .map_err(PipelineError::Dataflow)?;
    for result in guards.join() {
        result.map_err(PipelineError::Dataflow)?;
    }
    drop(sink_tx);
    let sink_result = sink_thread
        .join()
        .map_err(|_| PipelineError::Dataflow("sink thread panicked".into()))?;
    sink_result?;
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(PipelineError::SinkStopped(e));
    }
    let mut summary = summary.lock().map(|s| s.clone()).unwrap_or_default();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// View changes before `first_epoch` are the views' state rebuilt from the lake: applied to
/// the live state in epoch order, all at once when every epoch before `first_epoch` is
/// complete, and not written again; with `rebuilt` (a retention application, which rewrites
/// the views' changelog whole), also handed to the sink there.
fn apply_history<'scope>(
    views: timely::dataflow::StreamVec<'scope, Epoch, ViewUpdate>,
    first_epoch: Epoch,
    live: Arc<Mutex<LiveViews>>,
    rebuilt: Option<Arc<Mutex<Vec<ViewUpdate>>>>,
) -> timely::dataflow::StreamVec<'scope, Epoch, ViewUpdate> {
    use std::collections::BTreeMap;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::Operator;
    views.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<ViewUpdate>>, _, _, _>(
        Pipeline,
        "ApplyHistory",
        move |_, _| {
            let mut history: BTreeMap<Epoch, Vec<ViewUpdate>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    // Panic: epochs are totally ordered, so every message has a least time.
                    let time = *cap.least().expect("a message has a time");
                    if time < first_epoch {
                        history.entry(time).or_default().append(data);
                    } else {
                        let mut session = output.session(&cap);
                        for update in data.drain(..) {
                            session.give(update);
                        }
                    }
                });
                // Applied all at once when the whole history is complete, under one lock:
                // readers see the views as they were, then as rebuilt, never a partial
                // rebuild (a snapshot's pending rows before the epochs that retract them).
                if !history.is_empty()
                    && frontier.frontier().iter().all(|t| *t >= first_epoch)
                    && let Ok(mut live) = live.lock()
                {
                    let (started, mut rows) = (std::time::Instant::now(), 0);
                    let mut rebuilt = rebuilt.as_ref().and_then(|r| r.lock().ok());
                    for (time, updates) in std::mem::take(&mut history) {
                        rows += updates.len();
                        live.apply(time, &updates);
                        if let Some(rebuilt) = rebuilt.as_mut() {
                            rebuilt.extend(updates);
                        }
                    }
                    tracing::info!(
                        rows,
                        apply_ms = started.elapsed().as_millis() as u64,
                        "views rebuilt: serving them"
                    );
                }
            }
        },
    )
}

/// Drops what is sent at epochs before `first_epoch` (the views' state as rebuilt from the
/// lake is already in the lake).
fn live_only<'scope, D: Clone + 'static>(
    stream: timely::dataflow::StreamVec<'scope, Epoch, D>,
    first_epoch: Epoch,
) -> timely::dataflow::StreamVec<'scope, Epoch, D> {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::Operator;
    stream.unary::<timely::container::CapacityContainerBuilder<Vec<D>>, _, _, _>(
        Pipeline,
        "LiveOnly",
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    // Panic: epochs are totally ordered, so every message has a least time.
                    if *cap.least().expect("a message has a time") >= first_epoch {
                        output.session(&cap).give_container(data);
                    }
                });
            }
        },
    )
}

/// The newest snapshot of the views' state at or before epoch `last` that verifies against
/// its epoch's seal and has its coverage saved beside it.
fn newest_snapshot(
    runtime: &tokio::runtime::Runtime,
    warehouse: &Warehouse,
    last: Epoch,
) -> Result<Option<ViewSnapshot>, PipelineError> {
    let mut bound = last;
    loop {
        match runtime.block_on(warehouse.latest_snapshot(bound))? {
            Some((epoch, lines)) if coverage_path(warehouse, epoch).exists() => {
                return Ok(Some((epoch, lines)));
            }
            Some((epoch, _)) if epoch > 0 => bound = epoch - 1,
            _ => return Ok(None),
        }
    }
}

/// Where the coverage of the views' snapshot at `epoch` is saved.
fn coverage_path(warehouse: &Warehouse, epoch: Epoch) -> PathBuf {
    warehouse
        .snapshot_dir()
        .join(format!("coverage-{epoch:012}.json"))
}

/// The warehouse's proof store, caught up with the lake: the epochs committed after the last
/// one it holds (a crash between a commit and the store's append) are written again from the
/// events table, and a store ahead of the lake or of another history is rebuilt.
fn open_proof_store(
    runtime: &tokio::runtime::Runtime,
    warehouse: &Warehouse,
    created: bool,
    last_epoch: Option<Epoch>,
) -> Result<ProofStore, PipelineError> {
    let mut store =
        ProofStore::open(&warehouse.root().join("proofs")).map_err(custody_operators::Error::Io)?;
    let indexed = store.indexed_epoch();
    if created || indexed > last_epoch {
        store.clear().map_err(custody_operators::Error::Io)?;
    }
    let indexed = store.indexed_epoch();
    if let Some(last) = last_epoch.filter(|last| Some(*last) > indexed) {
        tracing::info!(after = ?indexed, "proof store: catching up with the lake");
        let mut rebuild = store.rebuild().map_err(custody_operators::Error::Io)?;
        let events = runtime.block_on(warehouse.each_leaf(indexed, |e| rebuild.add(e)))?;
        rebuild.finish(last).map_err(custody_operators::Error::Io)?;
        tracing::info!(events, "proof store: caught up with the lake");
    }
    Ok(store)
}

/// Takes the warehouse's writer lock (`.custody.lock`, an advisory lock the OS releases when
/// the process dies): two writers would fork tenant chains.
pub fn lock_warehouse(root: &std::path::Path) -> Result<std::fs::File, PipelineError> {
    std::fs::create_dir_all(root).map_err(custody_operators::Error::Io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(".custody.lock"))
        .map_err(custody_operators::Error::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(PipelineError::SinkStopped(format!(
            "another custody process is writing to {}; stop it first",
            root.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(custody_operators::Error::Io(e).into()),
    }
}

/// Where the last seal of the warehouse at `root` is recorded in the key directory (one file
/// per warehouse, so one key directory may serve several).
pub fn watermark_path(key_dir: &std::path::Path, root: &std::path::Path) -> PathBuf {
    use sha2::Digest;
    let id = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    key_dir.join(format!("sealed-{}.json", hex::encode(&id[..8])))
}

/// Writes the public key (hex) as `keys/<key_id>.pub` in the warehouse, where readers of the
/// data find it (not to be trusted from there), and as `signing.pub` in the key directory, the
/// copy to hand to verifiers.
fn publish_key(
    root: &std::path::Path,
    key_dir: &std::path::Path,
    signer: &Signer,
) -> Result<(), PipelineError> {
    let public = hex::encode(signer.public_key().as_bytes());
    let dir = root.join("keys");
    std::fs::create_dir_all(&dir).map_err(custody_operators::Error::Io)?;
    std::fs::write(dir.join(format!("{}.pub", signer.key_id())), &public)
        .map_err(custody_operators::Error::Io)?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(key_dir)
        .map_err(custody_operators::Error::Io)?;
    std::fs::write(key_dir.join("signing.pub"), &public).map_err(custody_operators::Error::Io)?;
    Ok(())
}

struct DriverParts {
    source: Box<dyn Source>,
    /// Recorded with every epoch's positions.
    fingerprint: Option<String>,
    sink_tx: SyncSender<SinkMsg>,
    committed_rx: Receiver<Committed>,
}

struct Driver<'a> {
    parts: DriverParts,
    opts: &'a RunOptions,
    metrics: &'a Metrics,
    /// Epochs sent to the dataflow, not yet sealed.
    in_flight: VecDeque<(Epoch, SourcePositions)>,
    /// Epochs sealed, not yet committed.
    sealed: VecDeque<Epoch>,
    summary: RunSummary,
    /// The views' clock as last set.
    clock_now: Option<i64>,
}

type InputHandle = timely::dataflow::InputHandle<
    Epoch,
    timely::container::CapacityContainerBuilder<Vec<RawRecord>>,
>;

impl Driver<'_> {
    fn drive(
        &mut self,
        worker: &mut timely::worker::Worker,
        input: &mut InputHandle,
        clock: &mut InputSession<Epoch, i64, isize>,
        probe: &timely::dataflow::ProbeHandle<Epoch>,
        stop: &AtomicBool,
        first_epoch: Epoch,
    ) -> Result<(), String> {
        let mut epoch = first_epoch;
        let mut last_input = Instant::now();
        let mut last_epoch_opened = Instant::now();
        // Records read but not yet in an epoch (see `RunOptions::epoch_interval`).
        let mut pending: Vec<RawRecord> = Vec::new();
        loop {
            self.seal_ready(probe)?;
            self.collect_commits(false)?;
            if stop.load(Ordering::Relaxed) {
                tracing::info!("stop requested");
                return Ok(());
            }
            if self.in_flight.len() + self.sealed.len() >= self.opts.max_epochs_in_flight {
                worker.step_or_park(Some(Duration::from_millis(1)));
                continue;
            }
            // With records waiting, poll no longer than until their epoch is due.
            let poll = if pending.is_empty() {
                self.opts.poll_interval
            } else {
                self.opts
                    .epoch_interval
                    .saturating_sub(last_epoch_opened.elapsed())
                    .min(self.opts.poll_interval)
            };
            let batch = self
                .parts
                .source
                .next_batch(self.opts.batch_size - pending.len(), poll)
                .map_err(|e| e.to_string())?;
            let Some(mut batch) = batch else {
                // Exhausted: what waits goes in a last epoch.
                if !pending.is_empty() {
                    let batch = std::mem::take(&mut pending);
                    self.open_batch(input, clock, &mut epoch, batch);
                    worker.step();
                }
                return Ok(());
            };
            if !batch.is_empty() {
                last_input = Instant::now();
                if !pending.is_empty() {
                    pending.append(&mut batch);
                    batch = std::mem::take(&mut pending);
                }
                if batch.len() < self.opts.batch_size
                    && last_epoch_opened.elapsed() < self.opts.epoch_interval
                {
                    pending = batch;
                    worker.step();
                    continue;
                }
            } else if !pending.is_empty() {
                if last_epoch_opened.elapsed() < self.opts.epoch_interval {
                    worker.step();
                    continue;
                }
                batch = std::mem::take(&mut pending);
            }
            if batch.is_empty() {
                if let Some(idle) = self.opts.idle_exit
                    && last_input.elapsed() >= idle
                    && self.in_flight.is_empty()
                    && self.sealed.is_empty()
                {
                    self.parts
                        .source
                        .check_connected()
                        .map_err(|e| e.to_string())?;
                    tracing::info!(idle = ?idle, "source idle; stopping");
                    return Ok(());
                }
                let tick = self.opts.clock_tick;
                if !tick.is_zero() && last_epoch_opened.elapsed() >= tick {
                    // No input: an empty epoch, so the clock moves.
                    let positions = self.positions(&[]);
                    self.open_epoch(input, clock, &mut epoch, positions);
                    last_epoch_opened = Instant::now();
                }
                worker.step();
                continue;
            }
            last_epoch_opened = Instant::now();
            self.open_batch(input, clock, &mut epoch, batch);
            worker.step();
        }
    }

    /// Sends `batch` into the dataflow as the next epoch.
    fn open_batch(
        &mut self,
        input: &mut InputHandle,
        clock: &mut InputSession<Epoch, i64, isize>,
        epoch: &mut Epoch,
        mut batch: Vec<RawRecord>,
    ) {
        // The positions cover what another location keeps: it is read past, not lost.
        let positions = self.positions(&batch);
        if let Some(residency) = &self.opts.residency {
            batch.retain(|record| match residency.elsewhere(record) {
                None => true,
                Some(location) => {
                    self.metrics
                        .events_elsewhere
                        .with_label_values(&[location])
                        .inc();
                    *self
                        .summary
                        .elsewhere
                        .entry(location.to_string())
                        .or_default() += 1;
                    false
                }
            });
        }
        self.metrics.events_in.inc_by(batch.len() as u64);
        self.summary.events_in += batch.len() as u64;
        for record in batch {
            input.send(record);
        }
        self.open_epoch(input, clock, epoch, positions);
    }

    /// The source positions of an epoch holding `batch`.
    fn positions(&self, batch: &[RawRecord]) -> SourcePositions {
        let mut positions = positions_of(self.parts.source.name(), batch);
        positions.fingerprint = self.parts.fingerprint.clone();
        // Only when it is where this batch ends (not an access-log-only batch).
        positions.byte_position = self
            .parts
            .source
            .byte_position()
            .filter(|at| positions.partitions.get(&at.partition) == Some(&at.offset));
        positions
    }

    /// Sets the clock for `epoch`, puts the epoch in flight and moves the inputs past it.
    fn open_epoch(
        &mut self,
        input: &mut InputHandle,
        clock: &mut InputSession<Epoch, i64, isize>,
        epoch: &mut Epoch,
        mut positions: SourcePositions,
    ) {
        let now = now_us();
        positions.clock_us = Some(now);
        if let Some(prev) = self.clock_now.replace(now) {
            clock.update(prev, -1);
        }
        clock.update(now, 1);
        if let Some(t) = &self.opts.timings
            && let Ok(mut t) = t.lock()
        {
            t.push(EpochTiming {
                epoch: *epoch,
                positions: positions.clone(),
                sealed: None,
                committed: None,
            });
        }
        self.in_flight.push_back((*epoch, positions));
        *epoch += 1;
        input.advance_to(*epoch);
        clock.advance_to(*epoch);
        clock.flush();
    }

    /// Seals every epoch the probe has passed.
    fn seal_ready(&mut self, probe: &timely::dataflow::ProbeHandle<Epoch>) -> Result<(), String> {
        while let Some((epoch, _)) = self.in_flight.front() {
            if probe.less_equal(epoch) {
                break;
            }
            let Some((epoch, positions)) = self.in_flight.pop_front() else {
                break;
            };
            self.parts
                .sink_tx
                .send(SinkMsg::Seal(epoch, positions))
                .map_err(|_| "the sink thread stopped".to_string())?;
            self.sealed.push_back(epoch);
            self.time(epoch, |t| t.sealed = Some(Instant::now()));
        }
        Ok(())
    }

    fn time(&self, epoch: Epoch, f: impl FnOnce(&mut EpochTiming)) {
        if let Some(t) = &self.opts.timings
            && let Ok(mut t) = t.lock()
            && let Some(e) = t.iter_mut().rev().find(|e| e.epoch == epoch)
        {
            f(e);
        }
    }

    /// Takes commit notices; acknowledges the source. Blocks for one if `wait`.
    fn collect_commits(&mut self, wait: bool) -> Result<(), String> {
        loop {
            let committed = if wait && !self.sealed.is_empty() {
                self.parts.committed_rx.recv().map_err(|_| {
                    "the sink thread stopped before committing every epoch".to_string()
                })?
            } else {
                match self.parts.committed_rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) if self.sealed.is_empty() => return Ok(()),
                    Err(TryRecvError::Disconnected) => {
                        return Err("the sink thread stopped before committing every epoch".into());
                    }
                }
            };
            self.sealed.retain(|e| *e != committed.epoch);
            self.time(committed.epoch, |t| t.committed = Some(Instant::now()));
            self.summary.epochs += 1;
            self.summary.accepted += *committed.rows.get("events").unwrap_or(&0) as u64;
            self.summary.quarantined += *committed.rows.get("quarantine").unwrap_or(&0) as u64;
            custody_operators::failpoint::hit("before-ack", committed.epoch);
            self.parts
                .source
                .ack(&committed.positions)
                .map_err(|e| e.to_string())?;
            if wait {
                return Ok(());
            }
        }
    }

    /// Before the inputs close: step until every epoch opened is sealed.
    fn drain(
        &mut self,
        worker: &mut timely::worker::Worker,
        probe: &timely::dataflow::ProbeHandle<Epoch>,
    ) -> Result<(), String> {
        while !self.in_flight.is_empty() {
            worker.step_or_park(Some(Duration::from_millis(1)));
            self.seal_ready(probe)?;
            self.collect_commits(false)?;
        }
        Ok(())
    }

    /// After the input closed: run the dataflow dry, seal and commit everything.
    fn finish(
        &mut self,
        worker: &mut timely::worker::Worker,
        probe: &timely::dataflow::ProbeHandle<Epoch>,
    ) -> Result<(), String> {
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
            self.seal_ready(probe)?;
            self.collect_commits(false)?;
        }
        self.seal_ready(probe)?;
        while !self.sealed.is_empty() {
            self.collect_commits(true)?;
        }
        Ok(())
    }
}
