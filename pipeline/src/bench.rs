//! `custody bench`: single-core throughput of the chain-of-custody stages, each measured
//! against raw SHA-256 over the same bytes in the same run; `custody bench --kafka`: the whole
//! pipeline in Kafka mode against a consume-and-drop consumer over the same topic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_operators::Metrics;
use custody_operators::sources::kafka::{KafkaConfig, KafkaSource, kafka_client_config};
use custody_reports::live::LiveViews;
use custody_reports::proofs::LiveLogs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::dataflow::{RunOptions, run_pipeline};

use custody_operators::checkpoint::Signer;
use custody_operators::merkle;
use custody_operators::pii::Tokenizer;
use custody_operators::record::SourcedEvent;
use custody_operators::transforms::hash_chain::{ChainState, append};
use custody_operators::transforms::tokenize_pii::tokenize;
use custody_operators::verify::{EventRow, Verifier};
use custody_schemas::decode;
use sha2::{Digest, Sha256};

use crate::generate::{Generator, GeneratorConfig};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let r = f();
        best = best.min(start.elapsed().as_secs_f64());
        out = Some(r);
    }
    // Panic-free: runs >= 1.
    (best, out.expect("at least one run"))
}

/// Runs the benchmarks over `events` generated events of one tenant and prints the figures.
pub fn run(events: u64) {
    pii_scanner();
    chain(events);
}

/// PII scanner throughput on 1 KB texts of the labeled corpus, 1 core, and its scores per kind
/// and per variant (format and locale).
fn pii_scanner() {
    let samples = custody_operators::pii_corpus::corpus(20_000, 1024, 0xBE7C);
    let bytes: usize = samples.iter().map(|s| s.text.len()).sum();
    let (secs, found) = best_of(3, || {
        samples
            .iter()
            .map(|s| custody_operators::pii::scan(&s.text).len())
            .sum::<usize>()
    });
    let mut tokenizer = Tokenizer::new(b"bench");
    let (tok_secs, _) = best_of(3, || {
        let mut counts = [0; custody_operators::pii::KINDS];
        samples
            .iter()
            .filter_map(|s| tokenizer.tokenize_str("tenant-0000", &s.text, &mut counts))
            .count()
    });
    println!(
        "pii scanner, 1 core, {} texts of ~1 KB ({found} spans): scan {:.0} MB/s, scan + tokenize {:.0} MB/s",
        samples.len(),
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6 / tok_secs
    );
    // What the pipeline scans: the text fields of generated agent events, joined into ~1 KB
    // texts (fewer values per KB than the labeled corpus, which packs two or three in each).
    let agent_texts = agent_texts(20_000, 1024);
    let agent_bytes: usize = agent_texts.iter().map(String::len).sum();
    let (agent_secs, agent_found) = best_of(3, || {
        agent_texts
            .iter()
            .map(|t| custody_operators::pii::scan(t).len())
            .sum::<usize>()
    });
    println!(
        "pii scanner, 1 core, {} agent texts of ~1 KB from generated events ({agent_found} spans): scan {:.0} MB/s",
        agent_texts.len(),
        agent_bytes as f64 / 1e6 / agent_secs
    );
    let scores = custody_operators::pii_corpus::evaluate(&samples);
    print!("{}", custody_operators::pii_corpus::report(&scores));
    let variants = custody_operators::pii_corpus::evaluate_variants(&samples);
    print!(
        "{}",
        custody_operators::pii_corpus::report_variants(&variants)
    );
}

/// `n` texts of about `size` bytes: the strings of generated events' text fields, joined.
fn agent_texts(n: usize, size: usize) -> Vec<String> {
    fn strings(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push(' ');
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            serde_json::Value::Object(m) => m.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let mut texts = Vec::with_capacity(n);
    let mut text = String::with_capacity(size + 256);
    for bytes in Generator::new(GeneratorConfig {
        events: u64::MAX,
        tenants: 10,
        ..GeneratorConfig::default()
    }) {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let Some(ty) = event["event_type"]
            .as_str()
            .and_then(custody_schemas::EventType::parse)
        else {
            continue;
        };
        for field in ty.text_fields() {
            strings(&event["payload"][*field], &mut text);
        }
        if text.len() >= size {
            texts.push(std::mem::replace(
                &mut text,
                String::with_capacity(size + 256),
            ));
            if texts.len() == n {
                break;
            }
        }
    }
    texts
}

fn chain(events: u64) {
    let mut tokenizer = Tokenizer::new(b"bench");
    let inputs: Vec<SourcedEvent> = Generator::new(GeneratorConfig {
        events,
        tenants: 1,
        ..GeneratorConfig::default()
    })
    .enumerate()
    .map(|(i, bytes)| {
        // Panic-free: the generator only produces valid events (its tests check).
        let decoded = decode(&bytes).expect("generated events are valid");
        let (event, vault) = tokenize(
            &mut tokenizer,
            decoded,
            &mut [0; custody_operators::pii::KINDS],
        );
        SourcedEvent {
            partition: 0,
            offset: i as i64,
            event,
            raw_sha256: [0; 32],
            vault,
        }
    })
    .collect();
    let n = inputs.len() as f64;

    // The exact bytes the chain stage hashes: the canonical event encodings.
    let canonical: Vec<Vec<u8>> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| custody_operators::hashing::canonical_event(&s.event, i as u64))
        .collect();
    let bytes: usize = canonical.iter().map(Vec::len).sum();

    let (raw, _) = best_of(3, || {
        canonical
            .iter()
            .map(|c| Sha256::digest(c)[0])
            .fold(0u8, |a, b| a ^ b)
    });
    let mut chain = f64::MAX;
    let mut chained = Vec::new();
    for _ in 0..3 {
        let batch = inputs.clone();
        // The previous round's output is freed outside the timing.
        drop(std::mem::take(&mut chained));
        let start = Instant::now();
        let mut chains = ChainState::new();
        chained = batch
            .into_iter()
            .map(|s| append(&mut chains, s))
            .collect::<Vec<_>>();
        chain = chain.min(start.elapsed().as_secs_f64());
    }
    let (hash_only, _) = best_of(3, || {
        let mut prev = [0u8; 32];
        let mut range = merkle::CompactRange::new();
        for c in &canonical {
            let leaf = custody_operators::hashing::leaf_hash(c);
            prev = custody_operators::hashing::chain_hash(&prev, &leaf);
            range.append(leaf);
        }
        range.root()[0] ^ prev[0]
    });
    // The stage's own work on each event (encode, hash, link, Merkle), without moving the
    // event into a new record.
    let (encode_hash, _) = best_of(3, || {
        let mut prev = [0u8; 32];
        let mut range = merkle::CompactRange::new();
        for (i, s) in inputs.iter().enumerate() {
            let leaf = custody_operators::hashing::event_leaf(&s.event, i as u64);
            prev = custody_operators::hashing::chain_hash(&prev, &leaf);
            range.append(leaf);
        }
        range.root()[0] ^ prev[0]
    });
    // As in the pipeline: each batch is chained soon after it was decoded and tokenized, so
    // its events are in cache (here: a fresh copy of each 1,000, made outside the timing).
    let mut warm = f64::MAX;
    for _ in 0..3 {
        let mut chains = ChainState::new();
        let mut total = 0.0;
        for chunk in inputs.chunks(1000) {
            let batch = chunk.to_vec();
            let start = Instant::now();
            let out: Vec<_> = batch.into_iter().map(|s| append(&mut chains, s)).collect();
            total += start.elapsed().as_secs_f64();
            drop(out);
        }
        warm = warm.min(total);
    }
    println!(
        "chain + hash stage, 1 core, {} events, {:.1} MB canonical:",
        n,
        bytes as f64 / 1e6
    );
    println!(
        "  raw sha2 over the canonical bytes: {:>10.0} events/s  {:>7.0} MB/s",
        n / raw,
        bytes as f64 / 1e6 / raw
    );
    println!(
        "  leaf + chain + merkle (hashing only): {:>7.0} events/s  ({:.0}% of raw sha2)",
        n / hash_only,
        100.0 * raw / hash_only
    );
    println!(
        "  canonical encoding + hashing:        {:>7.0} events/s  ({:.0}% of raw sha2)",
        n / encode_hash,
        100.0 * raw / encode_hash
    );
    println!(
        "  full stage (also moving each event into its chained record): {:>7.0} events/s  ({:.0}% of raw sha2)",
        n / chain,
        100.0 * raw / chain
    );
    println!(
        "  full stage on batches of 1,000 chained as they arrive: {:>7.0} events/s  ({:.0}% of raw sha2)",
        n / warm,
        100.0 * raw / warm
    );

    let signer = Signer::from_seed(&[1; 32]);
    let leaves: Vec<[u8; 32]> = chained.iter().map(|c| c.leaf_hash).collect();
    let last = chained.last().map_or([0; 32], |c| c.hash);
    let cp = signer.checkpoint(
        "tenant-0000",
        leaves.len() as u64,
        &merkle::root(&leaves),
        &last,
        0,
        0,
        &[0; 32],
    );
    // Signing: one checkpoint per tenant per epoch, chained to the previous one, plus one
    // epoch seal over the tenant registry.
    let signs = 20_000u64;
    let (sign, _) = best_of(3, || {
        let mut prev = [0u8; 32];
        for i in 0..signs {
            let cp = signer.checkpoint(
                "tenant-0000",
                i,
                &last,
                &last,
                i,
                1_700_000_000_000_000,
                &prev,
            );
            prev = cp.hash();
        }
        prev[0]
    });
    let mut registry = custody_operators::seal::Registry::default();
    registry.apply(
        &(0..1000)
            .map(|i| (format!("tenant-{i:04}"), [i as u8; 32]))
            .collect::<Vec<_>>(),
    );
    let (seal, _) = best_of(3, || {
        signer
            .seal(1, &[0; 32], &last, &registry, 0)
            .signature
            .len()
    });
    println!(
        "signing, 1 core: {:.0} chained checkpoints/s; one epoch seal over 1000 tenants {:.2} ms",
        signs as f64 / sign,
        seal * 1e3
    );
    let rows: Vec<EventRow> = chained.iter().map(EventRow::from_chained).collect();
    let row_bytes: usize = rows
        .iter()
        .map(|r| serde_json::to_string(r).map_or(0, |s| s.len()))
        .sum();
    let verifier = Verifier::new([signer.public_key()]);
    let mut rows_copy = rows.clone();
    let (verify, report) = best_of(3, || {
        verifier.verify_tenant(
            "tenant-0000",
            &mut rows_copy,
            std::slice::from_ref(&cp),
            &[],
        )
    });
    assert!(report.ok(), "benchmark log must verify: {report:?}");
    let (raw_rows, _) = best_of(3, || {
        rows.iter()
            .map(|r| Sha256::digest(serde_json::to_vec(r).unwrap_or_default())[0])
            .fold(0u8, |a, b| a ^ b)
    });
    println!(
        "verification, 1 core: {:.0} MB/s of exported rows ({:.0} events/s); raw sha2 + row encoding over the same rows: {:.0} MB/s",
        row_bytes as f64 / 1e6 / verify,
        n / verify,
        row_bytes as f64 / 1e6 / raw_rows
    );
}

/// Every record of `topic`: consumed and dropped by a bare rdkafka consumer, then run through
/// the whole pipeline (decode, PII, chain, views, Iceberg commits) into a fresh warehouse.
/// Prints both rates and their ratio.
pub fn kafka(
    config: &Config,
    mut opts: RunOptions,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<()> {
    let nonce = std::process::id();
    let probe: BaseConsumer = kafka_client_config(brokers)
        .set("group.id", format!("custody-bench-probe-{nonce}"))
        .create()?;
    let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut total = 0u64;
    for &p in &partitions {
        let (low, high) = probe.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        total += (high - low) as u64;
    }
    anyhow::ensure!(
        total > 0,
        "topic {topic:?} is empty: fill it with custody generate --kafka"
    );
    println!(
        "kafka bench: about {total} records (watermarks) in {} partitions of {topic}",
        partitions.len()
    );

    // Consume and drop.
    let drop_consumer: BaseConsumer = kafka_client_config(brokers)
        .set("group.id", format!("custody-bench-drop-{nonce}"))
        .set("enable.auto.commit", "false")
        .set(
            "queued.max.messages.kbytes",
            config.kafka.fetch_queue_kbytes.to_string(),
        )
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    drop_consumer.assign(&assignment)?;
    // Until the topic is drained: watermarks are an estimate (brokers may count control
    // records), so stop once nothing arrives for 2 s and time up to the last record.
    let started = Instant::now();
    let (mut seen, mut bytes, mut last) = (0u64, 0u64, 0f64);
    loop {
        match drop_consumer.poll(Duration::from_secs(2)) {
            Some(Ok(m)) => {
                seen += 1;
                bytes += m.payload().map_or(0, <[u8]>::len) as u64;
                last = started.elapsed().as_secs_f64();
            }
            Some(Err(e)) => tracing::warn!(error = %e, "bench consumer"),
            None if seen >= total => break,
            None => anyhow::bail!("consume-and-drop stalled at {seen} of about {total}"),
        }
    }
    let total = seen;
    let drop_secs = last;
    drop(drop_consumer);

    // The pipeline, into a fresh warehouse.
    let dir = tempfile::tempdir()?;
    opts.warehouse = dir.path().join("wh");
    std::fs::create_dir_all(&opts.warehouse)?;
    let source = KafkaSource::new(
        KafkaConfig {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group_id: format!("custody-bench-pipeline-{nonce}"),
            fetch_queue_kbytes: config.kafka.fetch_queue_kbytes,
            metadata_refresh: config.kafka.metadata_refresh,
            connect_timeout: config.kafka.connect_timeout,
        },
        &Metrics::new(),
    )?;
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(None::<f64>));
    let watcher = {
        let (metrics, stop, done) = (metrics.clone(), Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let committed = metrics.events_accepted.get()
                    + metrics.sink_rows.with_label_values(&["quarantine"]).get();
                if committed >= total {
                    if let Ok(mut d) = done.lock() {
                        *d = Some(started.elapsed().as_secs_f64());
                    }
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    opts.idle_exit = Some(Duration::from_secs(30));
    opts.access_log = false;
    let summary = run_pipeline(
        Box::new(source),
        opts,
        metrics,
        Arc::new(Mutex::new(LiveViews::default())),
        Arc::new(Mutex::new(LiveLogs::default())),
        Arc::clone(&stop),
    )?;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let pipeline_secs = done
        .lock()
        .ok()
        .and_then(|d| *d)
        .unwrap_or(summary.elapsed.as_secs_f64());
    let drop_rate = total as f64 / drop_secs;
    let pipeline_rate = summary.events_in as f64 / pipeline_secs;
    println!(
        "  consume-and-drop rdkafka consumer: {drop_rate:>9.0} records/s ({:.0} MB/s, {total} records)",
        bytes as f64 / 1e6 / drop_secs
    );
    println!(
        "  custody pipeline (kafka -> iceberg, {} workers): {pipeline_rate:>9.0} events/s, {} accepted + {} quarantined, {} epochs",
        config.pipeline.workers, summary.accepted, summary.quarantined, summary.epochs
    );
    println!(
        "  pipeline / consume-and-drop: {:.0}%",
        100.0 * pipeline_rate / drop_rate
    );
    Ok(())
}

/// The generator, paced: record `i` arrives at `start + i / rate`.
struct Paced {
    inner: Generator,
    rate: f64,
    start: Arc<std::sync::OnceLock<Instant>>,
    emitted: u64,
    total: u64,
}

impl custody_operators::sources::Source for Paced {
    fn name(&self) -> String {
        "generator:paced".into()
    }

    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> custody_operators::Result<Option<Vec<custody_operators::record::RawRecord>>> {
        if self.emitted >= self.total {
            return Ok(None);
        }
        let start = *self.start.get_or_init(Instant::now);
        let due = ((start.elapsed().as_secs_f64() * self.rate) as u64 + 1).min(self.total);
        if due <= self.emitted {
            let next = start + Duration::from_secs_f64(self.emitted as f64 / self.rate);
            std::thread::sleep(next.saturating_duration_since(Instant::now()).min(wait));
            return Ok(Some(Vec::new()));
        }
        let n = ((due - self.emitted) as usize).min(max);
        let batch = self.inner.next_batch(n, wait)?;
        self.emitted += batch.as_ref().map_or(0, |b| b.len() as u64);
        Ok(batch)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// Freshness: the pipeline's maximum rate over `events` generated events, then a run paced at
/// half of it; for every event, the time from its arrival to (a) its epoch's view changes
/// existing (the dataflow finished the epoch, views included) and (b) the epoch committed to
/// the lake and applied to the views the API serves.
pub fn freshness(opts: RunOptions, events: u64) -> anyhow::Result<()> {
    let generator = |events| {
        Generator::new(GeneratorConfig {
            events,
            tenants: 20,
            ..GeneratorConfig::default()
        })
    };
    let run = |source: Box<dyn custody_operators::sources::Source>,
               timings: Option<Arc<Mutex<Vec<crate::dataflow::EpochTiming>>>>|
     -> anyhow::Result<(crate::dataflow::RunSummary, f64)> {
        let dir = tempfile::tempdir()?;
        let metrics = Metrics::new();
        let mut opts = opts.clone();
        opts.warehouse = dir.path().to_path_buf();
        opts.timings = timings;
        opts.clock_tick = Duration::ZERO;
        opts.access_log = false;
        let summary = run_pipeline(
            source,
            opts,
            metrics.clone(),
            Arc::new(Mutex::new(LiveViews::default())),
            Arc::new(Mutex::new(LiveLogs::default())),
            Arc::new(AtomicBool::new(false)),
        )?;
        let h = &metrics.sink_commit_seconds;
        let mean_commit_ms = 1e3 * h.get_sample_sum() / (h.get_sample_count().max(1) as f64);
        Ok((summary, mean_commit_ms))
    };
    let (full, _) = run(Box::new(generator(events)), None)?;
    let max_rate = full.events_in as f64 / full.elapsed.as_secs_f64();
    let rate = max_rate / 2.0;
    // About 30 s of paced input.
    let paced_events = ((rate * 30.0) as u64).clamp(1_000, events);
    println!(
        "freshness bench: maximum rate {max_rate:.0} events/s ({events} events); pacing {paced_events} events at {rate:.0} events/s"
    );
    let timings = Arc::new(Mutex::new(Vec::new()));
    let start = Arc::new(std::sync::OnceLock::new());
    let paced = Paced {
        inner: generator(paced_events),
        rate,
        start: Arc::clone(&start),
        emitted: 0,
        total: paced_events,
    };
    let (_, mean_commit_ms) = run(Box::new(paced), Some(Arc::clone(&timings)))?;
    println!("  mean commit of one epoch to every table: {mean_commit_ms:.1} ms");
    let timings = timings.lock().map(|t| t.clone()).unwrap_or_default();
    let first_poll = *start
        .get()
        .ok_or_else(|| anyhow::anyhow!("the paced source never ran"))?;
    let (mut sealed, mut committed) = (Vec::new(), Vec::new());
    let mut next = 0i64;
    for t in &timings {
        let Some(&last) = t.positions.partitions.get(&0) else {
            continue;
        };
        for offset in next..=last {
            // Record `offset` arrived (was due) at start + offset / rate.
            let arrival = first_poll + Duration::from_secs_f64(offset as f64 / rate);
            if let Some(s) = t.sealed {
                sealed.push(s.saturating_duration_since(arrival).as_secs_f64() * 1e3);
            }
            if let Some(c) = t.committed {
                committed.push(c.saturating_duration_since(arrival).as_secs_f64() * 1e3);
            }
        }
        next = last + 1;
    }
    for (label, mut v) in [
        ("arrival -> view updated in the dataflow", sealed),
        ("arrival -> committed and served by the API", committed),
    ] {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            continue;
        }
        println!(
            "  {label}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events, {} epochs)",
            percentile(&v, 50.0),
            percentile(&v, 95.0),
            percentile(&v, 99.0),
            percentile(&v, 100.0),
            v.len(),
            timings.len()
        );
    }
    Ok(())
}
