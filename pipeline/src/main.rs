//! `custody`: the audit-trail pipeline binary.
//!
//! - `custody demo`: generate a workload in-process and run the whole pipeline on it, with
//!   nothing else installed (the embedded default);
//! - `custody generate`: write a deterministic workload as NDJSON or produce it to Kafka;
//! - `custody run`: run the pipeline over an NDJSON file or a Kafka topic.

/// mimalloc: the pipeline allocates and frees many small objects across threads; glibc's
/// allocator spent a third of its CPU on that and fragmented as the heap grew.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access_log;
mod admin;
mod alerting;
mod api_index;
mod auth;
mod bench;
mod bench_api;
mod compact;
mod config;
mod config_log;
mod dashboard;
mod dataflow;
mod fuzz;
mod generate;
mod holds;
mod keys;
mod lake_pool;
mod otlp;
mod progress;
mod retention;
mod serve;
mod soak;
mod tls;
mod verify;
mod witness;

use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use custody_operators::Metrics;
use custody_operators::identity::ProducerRegistry;
use custody_operators::pii::VaultMode;
use custody_operators::sinks::iceberg::Warehouse;
use custody_operators::sources::Source;
use custody_operators::sources::kafka::{
    KafkaConfig, KafkaSource, PRODUCER_HEADER, SIGNATURE_HEADER, kafka_client_config,
};
use custody_operators::sources::ndjson::NdjsonSource;
use custody_operators::sources::resume::ForcedSkip;
use custody_operators::transforms::decode::DecodeConfig;
use custody_operators::verify::WAREHOUSE_REPORT;
use custody_reports::ViewsConfig;
use custody_reports::live::LiveViews;
use custody_reports::proofs::LiveLogs;
use custody_reports::views::hitl_latency::HitlConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::config::{Config, IdentityMode};
use crate::dataflow::{RunOptions, RunSummary, run_pipeline};
use crate::generate::{Generator, GeneratorConfig};

#[derive(Parser)]
#[command(
    name = "custody",
    version,
    about = "Tamper-evident, per-tenant audit trails for AI agents"
)]
struct Cli {
    /// Configuration file layered over the embedded defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Work in this storage location (`[locations.NAME]`): its warehouse and keys, and only
    /// the tenants pinned to it. Default: the default location (tenants pinned nowhere).
    #[arg(long, global = true)]
    location: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a workload in-process and run the pipeline on it.
    Demo(DemoArgs),
    /// Write a deterministic workload as NDJSON, or produce it to Kafka.
    Generate(GenerateArgs),
    /// Run the pipeline over an NDJSON file or a Kafka topic.
    Run(RunArgs),
    /// Serve the API and dashboard over a warehouse, chaining API access and moving the
    /// views' clock, until SIGINT or SIGTERM.
    Serve {
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
        /// HTTP listen address (default from config).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Export tenant logs, checkpoints and public keys as a verifiable bundle.
    Export(ExportArgs),
    /// Verify tenant logs: leaves, chains, Merkle roots and checkpoint signatures.
    Verify(VerifyArgs),
    /// Verify a signed report (`reports/NAME?format=signed` or `format=html`) offline with the
    /// public key; prints the report's tenant, scope and cited checkpoint.
    VerifyReport {
        /// The document: the signed JSON or the HTML page.
        file: PathBuf,
        /// Trusted public key (hex, or a file holding it).
        #[arg(long = "trusted-key")]
        trusted_key: String,
    },
    /// Verify an export bundle (`export?bundle=tar`, or `custody export --server`) offline
    /// with the public key: events, signed manifest and checkpoint.
    VerifyExport {
        /// The bundle (a .tar file).
        file: PathBuf,
        /// Trusted public key (hex, or a file holding it).
        #[arg(long)]
        trusted_key: String,
    },
    /// Witness a log: cosign each tenant's checkpoints while the log stays append-only.
    Witness(WitnessArgs),
    /// The OpenTelemetry intake: take GenAI spans and log events over OTLP (gRPC, HTTP
    /// protobuf or JSON), map them to schema v1 events and produce them, signed as the
    /// caller's producer, to the topic `custody run --kafka` consumes.
    Otlp {
        /// Kafka brokers.
        #[arg(long)]
        kafka: String,
        /// The topic the pipeline consumes.
        #[arg(long)]
        topic: String,
        /// OTLP/HTTP listen address (default from config, `[otlp] http_listen`).
        #[arg(long)]
        http_listen: Option<String>,
        /// OTLP/gRPC listen address (default from config, `[otlp] grpc_listen`).
        #[arg(long)]
        grpc_listen: Option<String>,
    },
    /// Crypto-shred a tenant (or one data subject): destroy its data keys, record DATA_ERASED.
    Erase {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only this token's key (one data subject).
        #[arg(long)]
        subject: Option<String>,
        /// Who asked (recorded).
        #[arg(long)]
        requested_by: String,
        /// Why, e.g. the request reference (recorded).
        #[arg(long)]
        reason: String,
        /// Erase even though a legal hold is in force on the tenant, for this reason
        /// (recorded with the holds overridden).
        #[arg(long)]
        override_hold: Option<String>,
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// Place, release or list legal holds (chained as LEGAL_HOLD_PLACED / _RELEASED): held
    /// events are skipped by retention, and erasure of a held tenant is refused.
    Hold {
        #[command(subcommand)]
        action: HoldAction,
    },
    /// Reveal the value behind a token; recorded first as DATA_REIDENTIFIED.
    Reveal {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The token, e.g. `<EMAIL:tok_…>`.
        #[arg(long)]
        token: String,
        /// Who asked (recorded).
        #[arg(long)]
        requested_by: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// Merge the tables' small data files, expire old snapshots and delete unreferenced
    /// files, on a warehouse no pipeline is writing to (a running pipeline does this itself
    /// every `warehouse.compact_every_epochs` epochs). Commits one epoch, under its seal.
    Compact {
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// Apply the retention policies (`[retention]`, `[tenants.<id>]`): remove the events
    /// past them, with their vault entries and quarantined records, keeping their leaf
    /// hashes so every chain and checkpoint still verifies; records RETENTION_APPLIED per
    /// tenant. `custody run` does this itself every `retention.interval`.
    Retention {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Apply as of this time (RFC 3339) instead of now: events before the start of its
        /// UTC day less the policy's days expire.
        #[arg(long)]
        now: Option<String>,
        /// Who applies it (recorded).
        #[arg(long, default_value = "custody retention")]
        requested_by: String,
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// Re-wrap every data key under the current key-encryption key (KEK rotation).
    RewrapKeys {
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// Fuzz the decoder, the timestamp parser and the API's parameter parsers for a while;
    /// fails if anything panicked.
    Fuzz {
        /// How long, e.g. `10m`.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        duration: Duration,
        /// Seed (a run is reproducible from it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print the crash-test failpoints (`CUSTODY_FAILPOINT=NAME#N`), in commit order.
    #[command(hide = true)]
    Failpoints,
    /// Single-core benchmarks of the chain and verification stages (build with --release).
    Bench {
        /// Events to generate for the benchmark.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Instead: Kafka mode against a consume-and-drop consumer, over every record of
        /// `--topic` on these brokers (fill it first with `custody generate --kafka`).
        #[arg(long, requires = "topic")]
        kafka: Option<String>,
        /// Topic for `--kafka`.
        #[arg(long)]
        topic: Option<String>,
        /// Instead: freshness, event arrival to visible in the views, at half the pipeline's
        /// maximum rate.
        #[arg(long, conflicts_with = "kafka")]
        freshness: bool,
        /// Instead: the soak benchmark, the file pipeline over `--events` events of
        /// `--tenants` tenants (all views, commits), memory and CPU every million events,
        /// then restart times.
        #[arg(long, conflicts_with_all = ["kafka", "freshness"])]
        soak: bool,
        /// Tenants for `--soak`.
        #[arg(long, default_value_t = 1000)]
        tenants: usize,
        /// Where `--soak` puts its input and warehouse (a temporary directory in it).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep `--soak`'s input and warehouses afterwards (their directory is printed).
        #[arg(long, requires = "soak")]
        keep: bool,
        /// Instead: latency of the lake-backed API endpoints of the server at this address
        /// under load (`--requests` from `--concurrency` connections).
        #[arg(long, conflicts_with_all = ["kafka", "freshness", "soak"])]
        api: Option<String>,
        /// Requests for `--api`.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Connections for `--api`.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// API token for `--api` (none for a server without tokens).
        #[arg(long)]
        token: Option<String>,
        /// For `--api`: export the tenant with the fewest events at or above this many.
        #[arg(long, default_value_t = 100_000)]
        export_events: usize,
    },
}

#[derive(Args)]
struct ExportArgs {
    /// Warehouse to export from (default from config).
    #[arg(long, conflicts_with = "server")]
    warehouse: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Only this tenant (required with --server).
    #[arg(long)]
    tenant: Option<String>,
    /// Export from a running server instead (`http://HOST:PORT`): its signed export bundle of
    /// the tenant, checked, then saved with its files unpacked into --out.
    #[arg(long, requires = "tenant")]
    server: Option<String>,
    /// Bearer token (regulator or admin) for --server; default: the `CUSTODY_TOKEN`
    /// environment variable.
    #[arg(long, requires = "server")]
    token: Option<String>,
    /// Body format with --server: ndjson or parquet.
    #[arg(long, requires = "server", default_value = "ndjson")]
    format: String,
    /// With --server: only events at or after this time (RFC 3339).
    #[arg(long, requires = "server")]
    from: Option<String>,
    /// With --server: only events before this time (RFC 3339).
    #[arg(long, requires = "server")]
    to: Option<String>,
    /// With --server: the log's public key (hex, or a file holding it) the bundle must be
    /// signed with. Without it the key the bundle carries is used, with a warning.
    #[arg(long, requires = "server")]
    trusted_key: Option<String>,
}

#[derive(Subcommand)]
enum HoldAction {
    /// Place a hold on a tenant, or on one of its sessions or agents, or a time range.
    Place {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only this session.
        #[arg(long, conflicts_with_all = ["agent", "from", "to"])]
        session: Option<String>,
        /// Only this agent.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        agent: Option<String>,
        /// Only events from this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// The hold's id (default: a new one, printed).
        #[arg(long)]
        hold_id: Option<String>,
        /// Why, e.g. the matter reference (recorded).
        #[arg(long)]
        reason: String,
        /// Who places it (recorded).
        #[arg(long)]
        requested_by: String,
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// Release a hold.
    Release {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The hold.
        #[arg(long)]
        hold_id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who releases it (recorded).
        #[arg(long)]
        requested_by: String,
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
    /// List the holds in force.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Warehouse directory (default from config).
        #[arg(long)]
        warehouse: Option<PathBuf>,
    },
}

#[derive(Args)]
struct VerifyArgs {
    /// Warehouse to verify (default from config unless --export is given).
    #[arg(long, conflicts_with = "export")]
    warehouse: Option<PathBuf>,
    /// Export bundle to verify.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Trusted public key (hex, or a file holding it); repeatable. Without one, the keys
    /// shipped with the data are trusted, with a warning.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<String>,
    /// Checkpoints held outside the lake (JSON lines); the log must still match them.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
    /// A witness's published cosignatures (its `http://ADDR`, or its `cosigned.json` or state
    /// directory): every tenant it cosigned must still be there and consistent, and each
    /// tenant's latest checkpoint must carry its cosignature. Needs --witness-key.
    #[arg(long, requires = "witness_key")]
    witness: Option<String>,
    /// The witness's public key (hex, or a file holding it).
    #[arg(long = "witness-key", requires = "witness")]
    witness_key: Option<String>,
}

#[derive(Args)]
struct WitnessArgs {
    /// The log's API, e.g. `http://127.0.0.1:9464`.
    #[arg(long)]
    log: String,
    /// The log's public key (hex, or a file holding it). Without it: the key the state
    /// directory already follows, or on first use the key the log serves at `/v1/public-key`,
    /// pinned from then on (trust on first use).
    #[arg(long = "log-key")]
    log_key: Option<String>,
    /// Bearer token for every tenant (`admin` or `regulator` of `*`), if the API has tokens;
    /// default: the `CUSTODY_WITNESS_TOKEN` environment variable.
    #[arg(long)]
    token: Option<String>,
    /// The witness's own directory: its key (`witness.key`, created) and what it cosigned.
    #[arg(long)]
    state: PathBuf,
    /// How often to fetch the log's checkpoints.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Serve the cosignatures at `http://ADDR/cosigned`.
    #[arg(long)]
    listen: Option<String>,
    /// One round, then exit (1 if anything was refused).
    #[arg(long)]
    once: bool,
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tenants.
    #[arg(long, default_value_t = 50)]
    tenants: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl WorkloadArgs {
    fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed,
            tenants: self.tenants,
            events: self.events,
            ..GeneratorConfig::default()
        }
    }

    fn generator(&self) -> Generator {
        Generator::new(self.config())
    }
}

/// The demo workload's first event time and step scale: ending about now and spanning
/// `--span`. Kept in the warehouse (`demo-clock.json`), so that a demo resumed later produces
/// the same bytes for the events it already ingested (their emitter chains go on).
fn demo_clock(args: &DemoArgs) -> anyhow::Result<(i64, f64)> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct DemoClock {
        start_us: i64,
        step_scale: f64,
        events: u64,
        seed: u64,
    }
    let path = args.warehouse.join("demo-clock.json");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(c) = serde_json::from_slice::<DemoClock>(&bytes)
        && c.events == args.workload.events
        && c.seed == args.workload.seed
        && args.start.is_none_or(|s| s == c.start_us)
    {
        return Ok((c.start_us, c.step_scale));
    }
    let natural_us = args.workload.events as f64 * generate::MEAN_STEP_US as f64;
    let span_us = match args.span {
        Some(span) => span.as_micros() as f64,
        None if args.start.is_some() => natural_us,
        None if args.workload.events >= 100_000 => 21.0 * 86_400e6,
        None => natural_us,
    };
    let step_scale = if natural_us > 0.0 {
        span_us / natural_us
    } else {
        1.0
    };
    // Ends a little before now: no event is dated in the future.
    let start_us = args
        .start
        .unwrap_or_else(|| custody_schemas::time::now_us() - (span_us * 1.02) as i64 - 60_000_000);
    std::fs::create_dir_all(&args.warehouse)?;
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&DemoClock {
            start_us,
            step_scale,
            events: args.workload.events,
            seed: args.workload.seed,
        })?,
    )?;
    Ok((start_us, step_scale))
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Warehouse directory (default: ./custody-demo).
    #[arg(long, default_value = "custody-demo")]
    warehouse: PathBuf,
    /// Delete an existing demo warehouse first.
    #[arg(long)]
    fresh: bool,
    /// Keep serving the views over HTTP after the run, until interrupted.
    #[arg(long)]
    serve: bool,
    /// HTTP listen address (default from config; `off` to disable).
    #[arg(long)]
    listen: Option<String>,
    /// Event-time span of the workload, ending now (e.g. `3w`, `36h`). Default: three weeks
    /// from 100,000 events up, so that "last week" means something; below that, 0.2 s
    /// between events on average (drift windows still fill).
    #[arg(long, value_parser = humantime::parse_duration)]
    span: Option<Duration>,
    /// Date the first event here (RFC 3339) instead; with no --span, the workload is then
    /// byte for byte `custody generate`'s for the same seed.
    #[arg(long, value_parser = parse_start)]
    start: Option<i64>,
}

fn parse_start(s: &str) -> Result<i64, String> {
    custody_schemas::time::parse_rfc3339(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Output file (default: stdout).
    #[arg(long, conflicts_with = "kafka")]
    out: Option<PathBuf>,
    /// Produce to these Kafka brokers instead.
    #[arg(long, requires = "topic")]
    kafka: Option<String>,
    /// Topic to produce to (created if missing).
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// With identity mode signed-header: every Nth event is also sent by another tenant's
    /// producer (a spoofing attempt the pipeline must quarantine). 0: none.
    #[arg(long, default_value_t = 0)]
    spoof_every: u64,
}

#[derive(Args)]
struct RunArgs {
    /// NDJSON input file (`-` for stdin).
    #[arg(long, conflicts_with = "kafka", required_unless_present = "kafka")]
    input: Option<PathBuf>,
    /// Kafka brokers.
    #[arg(long, requires = "topic")]
    kafka: Option<String>,
    /// Kafka topic.
    #[arg(long)]
    topic: Option<String>,
    /// Kafka consumer group (default from config).
    #[arg(long)]
    group: Option<String>,
    /// Warehouse directory (default from config).
    #[arg(long)]
    warehouse: Option<PathBuf>,
    /// Stop after this long without input (e.g. `10s`); default: run until interrupted.
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_exit: Option<Duration>,
    /// HTTP listen address (default from config; `off` to disable).
    #[arg(long)]
    listen: Option<String>,
    /// Skip records an operator decided not to ingest: `PARTITION:OFFSET` resumes that
    /// partition at OFFSET. The skipped range is recorded as a gap marker in quarantine.
    #[arg(long, value_parser = parse_skip, requires = "skip_reason")]
    force_skip: Vec<(i32, i64)>,
    /// Why the records are skipped (recorded with the gap marker).
    #[arg(long)]
    skip_reason: Option<String>,
    /// Keep serving (and chaining API access) after the input is exhausted, until SIGINT or
    /// SIGTERM.
    #[arg(long)]
    serve: bool,
}

fn parse_skip(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected PARTITION:OFFSET"))?;
    Ok((
        p.parse().map_err(|e| format!("partition {p:?}: {e}"))?,
        o.parse().map_err(|e| format!("offset {o:?}: {e}"))?,
    ))
}

/// Turns transparent huge pages off for this process. mimalloc advises them on its arenas, so
/// every first touch of a 2 MB region (and every touch after the allocator returned part of
/// one to the OS) zeroes 2 MB: rebuilding the views at a restart spent half its time in the
/// kernel clearing pages. With small pages, what the allocator returns to the OS leaves the
/// resident set: RSS read between peaks fell from ~600 to ~250 MB at 1M events of the soak,
/// for the same CPU per event (71–74 µs either way).
fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    disable_huge_pages();
    exit_on_panic();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    config_log::set_command(matches.subcommand_name().unwrap_or_default());
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    let mut config = Config::load(cli.config.as_deref())?;
    custody_operators::sources::kafka::set_kafka_security(config.kafka.security_properties()?);
    config.select_location(cli.location.as_deref())?;
    match cli.command {
        Command::Demo(args) => demo(&config, args),
        Command::Generate(args) => generate(&config, args),
        Command::Run(args) => run(&config, args),
        Command::Export(args) => export(&config, args),
        Command::Serve { warehouse, listen } => serve(
            &config,
            warehouse.unwrap_or_else(|| config.warehouse.path.clone()),
            listen.unwrap_or_else(|| config.serve.listen.clone()),
        ),
        Command::Verify(args) => verify_cmd(&config, args),
        Command::VerifyReport { file, trusted_key } => verify_report(&file, &trusted_key),
        Command::VerifyExport { file, trusted_key } => verify_export(&file, &trusted_key),
        Command::Witness(args) => witness::run(witness::WitnessOptions {
            log: args.log,
            log_key: match args.log_key {
                Some(key) => Some(
                    verify::trusted_keys(&[key], Path::new("/nonexistent"))?
                        .pop()
                        .context("--log-key")?,
                ),
                None => None,
            },
            token: args
                .token
                .or_else(|| std::env::var("CUSTODY_WITNESS_TOKEN").ok()),
            state: args.state,
            interval: args.interval,
            once: args.once,
            listen: args.listen,
        }),
        Command::Otlp {
            kafka,
            topic,
            http_listen,
            grpc_listen,
        } => otlp::run(otlp::OtlpOptions {
            brokers: kafka,
            topic,
            http_listen: http_listen.unwrap_or_else(|| config.otlp.http_listen.clone()),
            grpc_listen: grpc_listen.unwrap_or_else(|| config.otlp.grpc_listen.clone()),
            max_request_bytes: config.otlp.max_request_bytes,
            // Kafka brokers take records of up to ~1 MB unless told otherwise.
            max_record_bytes: config.pipeline.max_event_bytes.min(1_000_000),
            delivery_timeout: config.otlp.delivery_timeout,
            metrics_token_sha256: match config.api.metrics_token_sha256.trim() {
                "" => None,
                hash => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hash, &mut digest)
                        .context("api.metrics_token_sha256: expected 64 hex digits")?;
                    Some(digest)
                }
            },
            clients: config.identity.otlp_clients()?,
        }),
        Command::Erase {
            tenant,
            subject,
            requested_by,
            reason,
            override_hold,
            warehouse,
        } => admin::erase(
            &config,
            &warehouse.unwrap_or_else(|| config.warehouse.path.clone()),
            &tenant,
            subject.as_deref(),
            &requested_by,
            &reason,
            override_hold.as_deref(),
        ),
        Command::Hold { action } => hold_command(&config, action),
        Command::Reveal {
            tenant,
            token,
            requested_by,
            reason,
            warehouse,
        } => admin::reveal(
            &config,
            &warehouse.unwrap_or_else(|| config.warehouse.path.clone()),
            &tenant,
            &token,
            &requested_by,
            &reason,
        ),
        Command::Fuzz { duration, seed } => {
            let report = fuzz::run(duration, seed).map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "fuzzed {:?} (seed {seed}): {} decoder inputs, {} timestamps, {} api requests, \
                 {} panics",
                duration,
                report.decoder,
                report.timestamps,
                report.requests,
                report.panics.len()
            );
            for p in report.panics.iter().take(20) {
                println!("  panic: {p}");
            }
            if !report.panics.is_empty() {
                bail!("{} inputs panicked", report.panics.len());
            }
            Ok(())
        }
        Command::Failpoints => {
            let mut out = std::io::stdout().lock();
            for point in custody_operators::failpoint::points() {
                // A closed pipe (`| head`) ends the listing.
                if writeln!(out, "{point}").is_err() {
                    break;
                }
            }
            Ok(())
        }
        Command::Retention {
            dry_run,
            now,
            requested_by,
            warehouse,
        } => {
            let warehouse = warehouse.unwrap_or_else(|| config.warehouse.path.clone());
            admin::require_warehouse(&warehouse)?;
            let now_us = match now {
                Some(t) => custody_schemas::time::parse_rfc3339(&t)
                    .map_err(|e| anyhow::anyhow!("--now {t:?}: {e}"))?,
                None => custody_schemas::time::now_us(),
            };
            let policies = config.retention_policies()?;
            let applied = retention::apply(&config, &warehouse, now_us, &requested_by, dry_run)?;
            let lines = retention::describe(&applied.plan, &policies);
            if lines.is_empty() {
                println!("custody retention: nothing has expired");
            }
            for line in lines {
                println!("{line}");
            }
            if applied.committed {
                println!(
                    "removed {} events of {} tenants; recorded as RETENTION_APPLIED events",
                    applied.plan.events(),
                    applied.plan.tenants.len()
                );
            } else if !applied.plan.is_empty() {
                println!("dry run: nothing removed");
            }
            Ok(())
        }
        Command::Compact { warehouse } => {
            let warehouse = warehouse.unwrap_or_else(|| config.warehouse.path.clone());
            let key_dir = config.keys.dir(&warehouse)?;
            let seed = config
                .checkpoints
                .signing_seed(&config.keys, &key_dir, &warehouse)?;
            let report = compact::compact(
                &warehouse,
                &key_dir,
                &seed,
                &config.keys.previous_signers(&key_dir)?,
                &config.warehouse.sink_id,
                custody_operators::compaction::Policy::default(),
            )?;
            match report.epoch {
                None => println!("custody compact: nothing committed yet; nothing to do"),
                Some(epoch) => {
                    println!("custody compact: committed epoch {epoch}");
                    for (table, (before, after)) in &report.files {
                        println!("  custody.{table}: {before} -> {after} data files");
                    }
                    println!(
                        "  snapshots expired: {}, unreferenced files deleted: {}",
                        report.snapshots_expired, report.orphans_removed
                    );
                }
            }
            Ok(())
        }
        Command::RewrapKeys { warehouse } => admin::rewrap(
            &config,
            &warehouse.unwrap_or_else(|| config.warehouse.path.clone()),
        ),
        Command::Bench {
            api: Some(addr),
            requests,
            concurrency,
            token,
            tenants,
            export_events,
            ..
        } => bench_api::run(
            &addr,
            token.as_deref(),
            requests,
            concurrency,
            tenants,
            export_events,
        ),
        Command::Bench {
            events,
            soak: true,
            tenants,
            dir,
            keep,
            ..
        } => {
            let opts = run_options(&config, std::env::temp_dir(), None)?;
            soak::soak(opts, events, tenants, dir.as_deref(), keep)
        }
        Command::Bench {
            events,
            freshness: true,
            ..
        } => {
            let opts = run_options(&config, std::env::temp_dir(), None)?;
            bench::freshness(opts, events)
        }
        Command::Bench {
            events,
            kafka: Some(brokers),
            topic,
            ..
        } => {
            let _ = events;
            let opts = run_options(&config, std::env::temp_dir(), None)?;
            bench::kafka(&config, opts, &brokers, &topic.unwrap_or_default())
        }
        Command::Bench { events, .. } => {
            bench::run(events);
            Ok(())
        }
    }
}

fn export(config: &Config, args: ExportArgs) -> anyhow::Result<()> {
    if let Some(server) = &args.server {
        return export_remote(server, &args);
    }
    let warehouse = args
        .warehouse
        .unwrap_or_else(|| config.warehouse.path.clone());
    if let Some(tenant) = &args.tenant {
        // An export of a tenant is made only where its data is kept.
        config.require_here(tenant)?;
    }
    let bundle = verify::Bundle::from_warehouse(&warehouse)?;
    let (events, checkpoints) = bundle.export(&args.out, args.tenant.as_deref())?;
    println!(
        "exported {events} events and {checkpoints} checkpoints to {}",
        args.out.display()
    );
    Ok(())
}

/// `custody export --server`: fetches the tenant's export bundle, checks it, saves the archive
/// and unpacks its files into `--out`.
fn export_remote(server: &str, args: &ExportArgs) -> anyhow::Result<()> {
    use custody_operators::export_bundle;
    let tenant = args.tenant.as_deref().context("--tenant")?;
    let trusted = args
        .trusted_key
        .as_ref()
        .map(|k| {
            verify::trusted_keys(std::slice::from_ref(k), Path::new("/nonexistent"))?
                .pop()
                .context("--trusted-key")
        })
        .transpose()?;
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut url = format!(
        "{}/v1/tenants/{}/export?bundle=tar&format={}",
        server.trim_end_matches('/'),
        enc(tenant),
        enc(&args.format)
    );
    for (name, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            url.push_str(&format!("&{name}={}", enc(v)));
        }
    }
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("CUSTODY_TOKEN").ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let archive = runtime.block_on(async {
        let mut req =
            tls::http_client(tls::cli_ca_file().as_deref(), Duration::from_secs(300))?.get(&url);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        anyhow::Ok(bytes.to_vec())
    })?;
    let checked = export_bundle::verify_bundle(&archive, trusted.as_ref())
        .with_context(|| format!("the export bundle from {server} does not verify"))?;
    if trusted.is_none() {
        eprintln!(
            "warning: no --trusted-key given; checked against the key the bundle carries ({}), \
             which proves it intact, not who signed it",
            checked.bundled_key.key_id
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let name = format!("{tenant}-export-{}.tar", checked.manifest.tree_size);
    std::fs::write(args.out.join(&name), &archive)?;
    for (file, bytes) in export_bundle::untar(&archive)? {
        // Only plain names: nothing outside --out.
        if file.contains('/') || file.starts_with('.') {
            bail!("the bundle holds an unexpected path {file:?}");
        }
        std::fs::write(args.out.join(&file), bytes)?;
    }
    println!(
        "exported {} events of {tenant} (checkpoint tree size {}, root {}) to {}; signature OK \
         (key {})",
        checked.manifest.events,
        checked.checkpoint.tree_size,
        checked.checkpoint.root,
        args.out.join(&name).display(),
        checked.manifest.key_id
    );
    Ok(())
}

/// `custody verify-export`: checks an export bundle offline.
fn verify_export(file: &Path, trusted_key: &str) -> anyhow::Result<()> {
    let key = verify::trusted_keys(&[trusted_key.to_string()], Path::new("/nonexistent"))?
        .pop()
        .context("--trusted-key")?;
    let archive = std::fs::read(file).with_context(|| file.display().to_string())?;
    let checked = custody_operators::export_bundle::verify_bundle(&archive, Some(&key))
        .with_context(|| format!("{} does not verify", file.display()))?;
    let m = &checked.manifest;
    println!(
        "OK: export of tenant {} ({} events, {}) signed by key {}",
        m.tenant_id,
        m.events,
        m.format.as_str(),
        m.key_id
    );
    println!(
        "cut at checkpoint: tree size {}, root {}, epoch {}, signed at {}{}",
        checked.checkpoint.tree_size,
        checked.checkpoint.root,
        checked.checkpoint.epoch,
        checked.checkpoint.signed_at,
        match (&m.from, &m.to) {
            (None, None) => String::new(),
            (f, t) => format!(
                "; period from {} to {}",
                f.as_deref().unwrap_or("the start"),
                t.as_deref().unwrap_or("the end")
            ),
        }
    );
    Ok(())
}

fn verify_report(file: &Path, trusted_key: &str) -> anyhow::Result<()> {
    use custody_reports::document::SignedReport;
    let key = verify::trusted_keys(&[trusted_key.to_string()], Path::new("/nonexistent"))?
        .pop()
        .context("--trusted-key")?;
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let report = SignedReport::parse(&text)
        .and_then(|doc| doc.verify(&key))
        .with_context(|| format!("{} does not verify", file.display()))?;
    println!(
        "OK: {} report of tenant {} is signed by key {}",
        report["report"].as_str().unwrap_or("?"),
        report["tenant_id"].as_str().unwrap_or("?"),
        custody_operators::checkpoint::key_id(&key),
    );
    let scope = &report["scope"];
    println!(
        "scope: from {} to {}, as of tree size {}, {} events",
        scope["from"], scope["to"], scope["as_of_tree_size"], scope["events"]
    );
    let checkpoint: Option<custody_operators::checkpoint::Checkpoint> =
        serde_json::from_value(scope["checkpoint"].clone()).ok();
    match checkpoint {
        Some(c)
            if c.verify(&key)
                && c.tenant_id == report["tenant_id"]
                && scope["as_of_tree_size"] == c.tree_size =>
        {
            println!(
                "cites checkpoint: tree size {}, root {}, epoch {}: signature valid",
                c.tree_size, c.root, c.epoch
            )
        }
        Some(_) => bail!("the cited checkpoint's signature does not verify"),
        None => println!("cites no checkpoint (a live report)"),
    }
    Ok(())
}

fn verify_cmd(config: &Config, args: VerifyArgs) -> anyhow::Result<()> {
    let checked = match &args.export {
        Some(dir) => dir.clone(),
        None => args
            .warehouse
            .clone()
            .unwrap_or(config.warehouse.path.clone()),
    };
    let mut trusted = verify::trusted_keys(&args.trusted_keys, &checked)?;
    let bundle = match &args.export {
        Some(dir) => verify::Bundle::from_export(dir)?,
        None => verify::Bundle::from_warehouse(&checked)?,
    };
    if trusted.is_empty() {
        eprintln!(
            "warning: no --trusted-key given; trusting the {} public key(s) shipped with the data",
            bundle.keys.len()
        );
        trusted = bundle.keys.clone();
    }
    let held = verify::held_checkpoints(&args.checkpoints)?;
    let witness = match (&args.witness, &args.witness_key) {
        (Some(source), Some(key)) => Some((
            witness::read_published(source)?,
            verify::trusted_keys(std::slice::from_ref(key), &checked)?
                .pop()
                .context("--witness-key")?,
        )),
        _ => None,
    };
    let (reports, bytes, secs) = verify::verify_bundle(
        bundle,
        trusted,
        held,
        witness,
        !args.json && std::io::stderr().is_terminal(),
    );
    let bad: Vec<_> = reports.iter().filter(|r| !r.ok()).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            match r.first_bad_seq {
                _ if r.ok() && r.tenant_id == WAREHOUSE_REPORT => println!(
                    "{}: ok ({} sealed epochs, every table's files as sealed)",
                    r.tenant_id, r.checkpoints
                ),
                _ if r.ok() && r.expired_events > 0 => println!(
                    "{}: ok ({} events, {} checkpoints; {} expired by retention, verified \
                     through their leaf hashes: seq {})",
                    r.tenant_id,
                    r.verified_events,
                    r.checkpoints,
                    r.expired_events,
                    r.expired_ranges
                        .iter()
                        .map(|[a, b]| if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ if r.ok() => println!(
                    "{}: ok ({} events, {} checkpoints)",
                    r.tenant_id, r.verified_events, r.checkpoints
                ),
                first => {
                    let first = first.map_or("-".to_string(), |s| s.to_string());
                    println!("{}: FAILED, first bad seq {first}", r.tenant_id);
                    for p in &r.problems {
                        println!("  {}: {}", p.kind, p.detail);
                    }
                }
            }
        }
        let events: u64 = reports.iter().map(|r| r.verified_events).sum();
        println!(
            "verified {events} events ({:.1} MB) of {} tenants in {secs:.2}s ({:.0} MB/s): {}",
            bytes as f64 / 1e6,
            reports
                .iter()
                .filter(|r| r.tenant_id != WAREHOUSE_REPORT && r.tenant_id != verify::BUNDLE_REPORT)
                .count(),
            bytes as f64 / 1e6 / secs.max(1e-9),
            if bad.is_empty() {
                "all ok".to_string()
            } else {
                format!("{} log(s) FAILED", bad.len())
            }
        );
    }
    if !bad.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// The views' settings.
fn views_config(config: &Config) -> ViewsConfig {
    ViewsConfig {
        hitl: HitlConfig {
            rubber_stamp_ms: config.views.rubber_stamp.as_millis() as i64,
        },
        rules: Arc::new(config.policy.rules.clone()),
        drift: config.drift.view_config(),
        retire: config.views.retire(),
        snapshot_every: config.views.snapshot_every_epochs,
    }
}

fn run_options(
    config: &Config,
    warehouse: PathBuf,
    idle_exit: Option<Duration>,
) -> anyhow::Result<RunOptions> {
    let p = &config.pipeline;
    std::fs::create_dir_all(&warehouse)
        .with_context(|| format!("creating {}", warehouse.display()))?;
    if let Some(tables) = config.warehouse.tables()? {
        custody_operators::table_storage::StorageSpec::record(&warehouse, Some(&tables))?;
    }
    let key_dir = config.keys.dir(&warehouse)?;
    let signing_seed = config
        .checkpoints
        .signing_seed(&config.keys, &key_dir, &warehouse)?;
    let previous_signers = config.keys.previous_signers(&key_dir)?;
    let mut opts = RunOptions {
        signing_seed,
        workers: p.workers,
        batch_size: p.batch_size,
        max_epochs_in_flight: p.max_epochs_in_flight,
        poll_interval: p.poll_interval,
        epoch_interval: p.epoch_interval,
        idle_exit,
        decode: DecodeConfig {
            max_event_bytes: p.max_event_bytes,
            quarantine_keep_bytes: p.quarantine_keep_bytes,
            producers: match config.identity.mode {
                IdentityMode::None => None,
                IdentityMode::SignedHeader => {
                    Some(ProducerRegistry::new(config.identity.producers()?))
                }
            },
            access_log_key: Some(custody_operators::sources::access_log::access_mac_key(
                &signing_seed,
            )),
        },
        views: views_config(config),
        clock_tick: config.views.clock_tick,
        master_key: config.pii.master_key(&config.keys, &key_dir, &warehouse)?,
        pii_policy: Arc::new(config.pii.policy()?),
        vault: VaultMode {
            tokens: config.vault.tokens,
            content: config.vault.content,
        },
        keks: if config.vault.tokens || config.vault.content {
            Some(config.vault.keks(&config.keys, &key_dir, &warehouse)?)
        } else {
            None
        },
        warehouse,
        key_dir,
        sink_id: config.warehouse.sink_id.clone(),
        compact: (config.warehouse.compact_every_epochs > 0).then(|| {
            custody_operators::sinks::iceberg::CompactSchedule::new(
                config.warehouse.compact_every_epochs,
                custody_operators::compaction::Policy::default(),
            )
        }),
        dead_letter: None,
        skips: Vec::new(),
        alerts: None,
        access_log: true,
        keep_alive: false,
        timings: None,
        held_lock: None,
        ready_line: None,
        retention: None,
        previous_signers,
        residency: config.residency().map(Arc::new),
        config_evidence: None,
    };
    opts.config_evidence = Some(config_log::of_run(config, &opts)?);
    Ok(opts)
}

/// Starts alert delivery to the configured Alertmanager and, with Kafka brokers, the alerts
/// topic.
fn start_alerts(
    config: &Config,
    brokers: Option<&str>,
    metrics: &Metrics,
) -> anyhow::Result<alerting::AlertSender> {
    let a = &config.alerts;
    let targets = alerting::AlertTargets {
        alertmanager_url: (!a.alertmanager_url.is_empty()).then(|| a.alertmanager_url.clone()),
        kafka: brokers
            .filter(|_| !a.kafka_topic.is_empty())
            .map(|b| (b.to_string(), a.kafka_topic.clone())),
        resend: a.resend,
        ca_file: (!a.alertmanager_ca_file.is_empty())
            .then(|| PathBuf::from(&a.alertmanager_ca_file)),
    };
    Ok(alerting::start(targets, metrics.clone())?)
}

/// Serves HTTP on a background runtime; `None` if the address is `off` or cannot be bound.
/// The tokenizer the API uses for filter values naming people: the pipeline's keys (the
/// keystore's token keys where the vault keeps them, else derived from the master key) and
/// policy.
fn person_id_tokenizer(
    config: &Config,
    warehouse: &Path,
) -> anyhow::Result<custody_operators::pii::Tokenizer> {
    let key_dir = config.keys.dir(warehouse)?;
    let mut tokenizer = custody_operators::pii::Tokenizer::new(&config.pii.master_key(
        &config.keys,
        &key_dir,
        warehouse,
    )?)
    .with_policy(Arc::new(config.pii.policy()?));
    let keystore = warehouse.join("keys/keystore.db");
    if (config.vault.tokens || config.vault.content) && keystore.exists() {
        let (current, previous) = config.vault.keks(&config.keys, &key_dir, warehouse)?;
        tokenizer = tokenizer.with_token_keys(Arc::new(
            custody_operators::vault::TokenKeyring::open(&keystore, current, previous)?,
        ));
    }
    Ok(tokenizer)
}

fn start_server(
    config: &Config,
    warehouse: &Path,
    listen: &str,
    metrics: &Metrics,
    live: &Arc<Mutex<LiveViews>>,
    logs: &Arc<Mutex<LiveLogs>>,
) -> anyhow::Result<Option<(tokio::runtime::Runtime, SocketAddr)>> {
    if listen == "off" {
        return Ok(None);
    }
    let tls = tls::server_config(&config.serve.tls_cert_file, &config.serve.tls_key_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.serve.http_threads.max(1))
        .thread_name("custody-http")
        .enable_all()
        .build()?;
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(listen)) {
        Ok(l) => l,
        Err(e) => {
            bail!(
                "cannot serve HTTP on {listen}: {e} (choose another address with --listen, \
                 or --listen off to run without the API)"
            );
        }
    };
    let addr = listener.local_addr()?;
    let auth = auth::ApiAuth::new(&config.api.tokens)
        .and_then(|a| a.with_metrics_token(&config.api.metrics_token_sha256))
        .map_err(|e| anyhow::anyhow!(e))?;
    let signing_seed =
        config
            .checkpoints
            .signing_seed(&config.keys, &config.keys.dir(warehouse)?, warehouse)?;
    if !auth.enabled() {
        tracing::warn!("no api.tokens configured: the tenant API is open (development only)");
    }
    let lake = match runtime.block_on(Warehouse::open(warehouse)) {
        Ok(w) => Some(Arc::new(lake_pool::LakePool::new(
            w,
            config.serve.query_slots,
            config.serve.query_timeout,
        )?)),
        Err(e) => {
            tracing::warn!(error = %e, "event queries unavailable: cannot open the warehouse");
            None
        }
    };
    let mut cursor_key = [0u8; 32];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut cursor_key)?;
    }
    let app = serve::router(serve::AppState {
        auth: Arc::new(auth),
        lake,
        request_timeout: config.serve.request_timeout,
        cursor_key,
        metrics: metrics.clone(),
        live: Arc::clone(live),
        logs: Arc::clone(logs),
        report_ctx: Arc::new(custody_reports::regulatory::ReportContext {
            checkpoint: None,
            rules: config.policy.rules.clone(),
            retention: config.retention_policies()?,
            legal_minimum_days: config.retention.legal_minimum_days,
            continuous_verification: true,
            views: views_config(config),
            period: false,
        }),
        signer: Some(custody_operators::checkpoint::Signer::from_seed(
            &signing_seed,
        )),
        access: Some(Arc::new(access_log::AccessLog::open(
            warehouse,
            &signing_seed,
        )?)),
        person_ids: Some(Arc::new(Mutex::new(person_id_tokenizer(
            config, warehouse,
        )?))),
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let handle = runtime.handle().clone();
    runtime.spawn(async move {
        let served = match tls {
            Some(tls) => match tls::TlsListener::new(listener, tls, &handle) {
                Ok(listener) => axum::serve(listener, app).await,
                Err(e) => Err(e),
            },
            None => axum::serve(listener, app).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    tracing::info!(%addr, scheme, "serving /metrics and /v1/tenants");
    Ok(Some((runtime, addr)))
}

/// A stop flag set by SIGINT or SIGTERM: the pipeline stops reading, commits what it read and
/// exits 0. A second signal exits at once (130), acknowledging nothing more.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, before returning, so that no signal is missed once a run starts.
    let (mut int, mut term) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("custody-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    if flag.swap(true, Ordering::SeqCst) {
                        eprintln!("custody: {name} again; exiting without draining");
                        std::process::exit(130);
                    }
                    eprintln!(
                        "custody: {name}: draining (stop reading, commit what was read); \
                         send it again to exit at once"
                    );
                }
            });
        })?;
    Ok(stop)
}

/// Ends the process with a non-zero exit when any thread but an HTTP one panics: a panicked
/// timely worker, sink or driver would otherwise leave the others waiting for it forever.
/// Nothing past the last durable epoch has been acknowledged, so a restart resumes there.
/// (A panicking HTTP handler answers 500; see `serve::router`.)
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let http = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("custody-http"));
        if !http {
            eprintln!(
                "custody: a thread panicked; exiting (a restart resumes from the last durable \
                 epoch)"
            );
            std::process::exit(101);
        }
    }));
}

fn print_summary(label: &str, summary: &RunSummary, live: &LiveViews, warehouse: &Path) -> bool {
    let balanced = summary.events_in == summary.accepted + summary.quarantined;
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "{label}: {} in = {} accepted + {} quarantined ({})",
        summary.events_in,
        summary.accepted,
        summary.quarantined,
        if balanced { "balanced" } else { "NOT BALANCED" }
    );
    if !summary.elsewhere.is_empty() {
        // Read past, kept by their tenants' locations (`custody --location NAME run`).
        let by: Vec<String> = summary
            .elsewhere
            .iter()
            .map(|(l, n)| format!("{l}: {n}"))
            .collect();
        println!(
            "  passed on to other locations: {} records ({})",
            summary.elsewhere.values().sum::<u64>(),
            by.join(", ")
        );
    }
    println!(
        "  tenants: {}, epochs committed: {}, elapsed: {:.2}s, throughput: {:.0} events/s",
        live.tenants().len(),
        summary.epochs,
        secs,
        summary.events_in as f64 / secs.max(1e-9)
    );
    println!(
        "  warehouse: {} (iceberg catalog: catalog.db, namespace custody)",
        warehouse.display()
    );
    balanced
}

/// A source with nothing in it (`custody serve`, and `custody demo --serve` after the
/// workload).
struct NoInput;

impl Source for NoInput {
    fn name(&self) -> String {
        "serve".into()
    }

    fn next_batch(
        &mut self,
        _max: usize,
        _wait: Duration,
    ) -> custody_operators::Result<Option<Vec<custody_operators::record::RawRecord>>> {
        Ok(None)
    }
}

fn serve(config: &Config, warehouse: PathBuf, listen: String) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let live = Arc::new(Mutex::new(LiveViews::default()));
    let logs = Arc::new(Mutex::new(LiveLogs::default()));
    let Some((_runtime, addr)) = start_server(config, &warehouse, &listen, &metrics, &live, &logs)?
    else {
        bail!("cannot serve on {listen:?}");
    };
    let stop = stop_on_signals()?;
    let mut opts = run_options(config, warehouse.clone(), None)?;
    opts.keep_alive = true;
    opts.alerts = Some(start_alerts(config, None, &metrics)?);
    opts.ready_line = Some(format!(
        "custody serve: {} at http://{addr} (views rebuilt; until SIGINT or SIGTERM)",
        warehouse.display()
    ));
    run_pipeline(Box::new(NoInput), opts, metrics, live, logs, stop)?;
    Ok(())
}

fn demo(config: &Config, args: DemoArgs) -> anyhow::Result<()> {
    // The writer lock first: --fresh must never delete a warehouse another run is writing.
    let lock = Arc::new(dataflow::lock_warehouse(&args.warehouse)?);
    if args.fresh && args.warehouse.join("catalog.db").exists() {
        for entry in std::fs::read_dir(&args.warehouse)? {
            let path = entry?.path();
            if path.file_name() == Some(std::ffi::OsStr::new(".custody.lock")) {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let metrics = Metrics::new();
    let live = Arc::new(Mutex::new(LiveViews::default()));
    let logs = Arc::new(Mutex::new(LiveLogs::default()));
    let listen = args.listen.as_deref().unwrap_or(&config.serve.listen);
    if args.serve && listen == "off" {
        bail!("demo --serve needs an HTTP address (--listen ADDR)");
    }
    let server = start_server(config, &args.warehouse, listen, &metrics, &live, &logs)?;
    let stop = stop_on_signals()?;
    let (start_us, step_scale) = demo_clock(&args)?;
    let source: Box<dyn Source> = Box::new(Generator::new(GeneratorConfig {
        start_us,
        step_scale,
        ..args.workload.config()
    }));
    println!(
        "custody demo: {} events, {} tenants, seed {}, dated from {} -> {}",
        args.workload.events,
        args.workload.tenants,
        args.workload.seed,
        custody_schemas::time::format_rfc3339(start_us),
        args.warehouse.display()
    );
    let mut opts = run_options(config, args.warehouse.clone(), None)?;
    opts.held_lock = Some(lock);
    opts.alerts = Some(start_alerts(config, None, &metrics)?);
    let progress = progress::Progress::start(metrics.events_in.clone(), args.workload.events);
    let summary = run_pipeline(
        source,
        opts.clone(),
        metrics.clone(),
        Arc::clone(&live),
        Arc::clone(&logs),
        Arc::clone(&stop),
    );
    progress.finish();
    let summary = summary?;
    let live_now = live.lock().map(|l| l.clone()).unwrap_or_default();
    let balanced = print_summary("custody demo", &summary, &live_now, &args.warehouse);
    print!(
        "{}",
        progress::findings(
            &live_now,
            &metrics,
            server.as_ref().map(|(_, a)| a),
            &args.warehouse
        )
    );
    if let Some((rt, _)) = &server
        && args.serve
    {
        println!("  serving until interrupted (ctrl-c)");
        // The pipeline goes on with no input of its own: API access events reach the
        // tenants' logs, and the views' clock keeps moving (SLA breaches appear).
        let mut opts = opts;
        opts.keep_alive = true;
        run_pipeline(
            Box::new(NoInput),
            opts,
            metrics,
            Arc::clone(&live),
            logs,
            Arc::clone(&stop),
        )?;
        let _ = rt;
    }
    if !balanced {
        bail!("counts do not balance");
    }
    Ok(())
}

fn run(config: &Config, args: RunArgs) -> anyhow::Result<()> {
    let warehouse = args
        .warehouse
        .clone()
        .unwrap_or_else(|| config.warehouse.path.clone());
    let metrics = Metrics::new();
    if args.input.is_none() && args.kafka.is_none() {
        bail!("either --input or --kafka is required");
    }
    // Opened again after each retention pause: a file or Kafka source resumes from what was
    // committed.
    let open_source = |metrics: &Metrics| -> anyhow::Result<Box<dyn Source>> {
        Ok(match (&args.input, &args.kafka) {
            (Some(path), _) if path.as_os_str() == "-" => Box::new(NdjsonSource::new(
                "stdin",
                BufReader::new(std::io::stdin()),
                config.pipeline.max_event_bytes,
            )),
            (Some(path), _) => Box::new(
                NdjsonSource::file(path, config.pipeline.max_event_bytes)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            (None, Some(brokers)) => Box::new(KafkaSource::new(
                KafkaConfig {
                    brokers: brokers.clone(),
                    // Panic-free: clap enforces --topic with --kafka.
                    topic: args.topic.clone().unwrap_or_default(),
                    group_id: args
                        .group
                        .clone()
                        .unwrap_or_else(|| config.kafka.group_id.clone()),
                    fetch_queue_kbytes: config.kafka.fetch_queue_kbytes,
                    metadata_refresh: config.kafka.metadata_refresh,
                    connect_timeout: config.kafka.connect_timeout,
                },
                metrics,
            )?),
            (None, None) => bail!("either --input or --kafka is required"),
        })
    };
    let live = Arc::new(Mutex::new(LiveViews::default()));
    let logs = Arc::new(Mutex::new(LiveLogs::default()));
    let listen = args.listen.as_deref().unwrap_or(&config.serve.listen);
    let _server = start_server(config, &warehouse, listen, &metrics, &live, &logs)?;
    let stop = stop_on_signals()?;
    let mut opts = run_options(config, warehouse.clone(), args.idle_exit)?;
    let reason = args.skip_reason.clone().unwrap_or_default();
    opts.skips = args
        .force_skip
        .iter()
        .map(|&(partition, to)| ForcedSkip {
            partition,
            to,
            reason: reason.clone(),
        })
        .collect();
    opts.alerts = Some(start_alerts(config, args.kafka.as_deref(), &metrics)?);
    opts.keep_alive = args.serve;
    if let Some(brokers) = &args.kafka
        && !config.kafka.dead_letter_topic.is_empty()
    {
        opts.dead_letter = Some((brokers.clone(), config.kafka.dead_letter_topic.clone()));
    }
    // The retention job: applied at start, then every interval (the pipeline pauses for it).
    // Standard input cannot be read again after a pause: there it is applied at start only.
    let policies = config.retention_policies()?;
    let interval = config.retention.interval;
    let job = !interval.is_zero()
        && (policies.default.expires() || policies.tenants.values().any(|p| p.expires()));
    let repeat = job && args.input.as_ref().is_none_or(|p| p.as_os_str() != "-");
    let mut total = dataflow::RunSummary::default();
    let mut first = true;
    loop {
        if job && warehouse.join("catalog.db").is_file() {
            apply_retention(config, &warehouse, &policies, &live)?;
        }
        if !first && stop.load(Ordering::SeqCst) {
            break;
        }
        first = false;
        let round = Arc::new(AtomicBool::new(false));
        let due = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        if repeat {
            let (stop, round, due, done) = (
                Arc::clone(&stop),
                Arc::clone(&round),
                Arc::clone(&due),
                Arc::clone(&done),
            );
            std::thread::Builder::new()
                .name("custody-retention".into())
                .spawn(move || {
                    let until = Instant::now() + interval;
                    while !done.load(Ordering::SeqCst) {
                        if stop.load(Ordering::SeqCst) {
                            round.store(true, Ordering::SeqCst);
                            return;
                        }
                        if Instant::now() >= until {
                            tracing::info!("retention due: pausing the pipeline to apply it");
                            due.store(true, Ordering::SeqCst);
                            round.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })?;
        } else {
            // Without the job, the round stops exactly when the signals say.
            let (stop, round, done) = (Arc::clone(&stop), Arc::clone(&round), Arc::clone(&done));
            std::thread::Builder::new()
                .name("custody-stop".into())
                .spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        if stop.load(Ordering::SeqCst) {
                            round.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })?;
        }
        let summary = run_pipeline(
            open_source(&metrics)?,
            opts.clone(),
            metrics.clone(),
            Arc::clone(&live),
            Arc::clone(&logs),
            round,
        );
        done.store(true, Ordering::SeqCst);
        let summary = summary?;
        total.events_in += summary.events_in;
        total.accepted += summary.accepted;
        total.quarantined += summary.quarantined;
        for (location, n) in summary.elsewhere {
            *total.elsewhere.entry(location).or_default() += n;
        }
        total.epochs += summary.epochs;
        total.elapsed += summary.elapsed;
        if !due.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            break;
        }
    }
    let live_now = live.lock().map(|l| l.clone()).unwrap_or_default();
    if !print_summary("custody run", &total, &live_now, &warehouse) {
        bail!("counts do not balance");
    }
    Ok(())
}

/// `custody hold …`.
fn hold_command(config: &Config, action: HoldAction) -> anyhow::Result<()> {
    let warehouse_of = |w: Option<PathBuf>| -> anyhow::Result<PathBuf> {
        let w = w.unwrap_or_else(|| config.warehouse.path.clone());
        admin::require_warehouse(&w)?;
        Ok(w)
    };
    match action {
        HoldAction::Place {
            tenant,
            session,
            agent,
            from,
            to,
            hold_id,
            reason,
            requested_by,
            warehouse,
        } => {
            config.require_here(&tenant)?;
            let hold = holds::PlaceHold {
                hold_id,
                session_id: session,
                agent_id: agent,
                from,
                to,
                reason,
            };
            let id = holds::place(
                config,
                &warehouse_of(warehouse)?,
                &tenant,
                &hold,
                &requested_by,
            )?;
            println!("{id}");
        }
        HoldAction::Release {
            tenant,
            hold_id,
            reason,
            requested_by,
            warehouse,
        } => {
            config.require_here(&tenant)?;
            holds::release(
                config,
                &warehouse_of(warehouse)?,
                &tenant,
                &hold_id,
                &reason,
                &requested_by,
            )?;
            println!("released {hold_id} of {tenant:?}");
        }
        HoldAction::List {
            tenant,
            json,
            warehouse,
        } => {
            let held = holds::in_force(&warehouse_of(warehouse)?, tenant.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&held)?);
            } else if held.is_empty() {
                println!("no legal hold in force");
            }
            if !json {
                for h in &held {
                    println!("{}: {}", h.tenant_id, h.describe());
                }
            }
        }
    }
    Ok(())
}

/// Applies the retention policies now (the retention job of `custody run`); the views served
/// are rebuilt by the next run of the pipeline.
fn apply_retention(
    config: &Config,
    warehouse: &std::path::Path,
    policies: &custody_operators::retention::Policies,
    live: &Arc<Mutex<LiveViews>>,
) -> anyhow::Result<()> {
    let applied = retention::apply(
        config,
        warehouse,
        custody_schemas::time::now_us(),
        "retention-job",
        false,
    )?;
    if applied.committed {
        for line in retention::describe(&applied.plan, policies) {
            tracing::info!("retention applied: {line}");
        }
        // What was served holds expired rows; the next run rebuilds the views.
        if let Ok(mut l) = live.lock() {
            *l = LiveViews::default();
        }
    }
    Ok(())
}

/// Counts delivery failures of the producer.
#[derive(Default)]
struct CountingContext {
    failed: AtomicU64,
    delivered: AtomicU64,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, msg)) => {
                tracing::error!(error = %e, partition = msg.partition(), "delivery failed");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn generate(config: &Config, args: GenerateArgs) -> anyhow::Result<()> {
    let generator = args.workload.generator();
    let Some(brokers) = &args.kafka else {
        let mut out: Box<dyn Write> = match &args.out {
            Some(path) => Box::new(BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => Box::new(BufWriter::new(std::io::stdout().lock())),
        };
        for event in generator {
            out.write_all(&event)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        return Ok(());
    };
    // Panic-free: clap enforces --topic with --kafka.
    let topic = args.topic.clone().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin: AdminClient<DefaultClientContext> = kafka_client_config(brokers).create()?;
    let created = runtime.block_on(admin.create_topics(
        &[NewTopic::new(
            &topic,
            args.partitions,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for result in created {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => bail!("creating topic {t:?}: {code}"),
        }
    }
    let producer: ThreadedProducer<CountingContext> = kafka_client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(CountingContext::default())?;
    // tenant → (producer id, key) of the producers that sign its events.
    let producers: Vec<(String, String, Vec<u8>)> = match config.identity.mode {
        IdentityMode::None => Vec::new(),
        IdentityMode::SignedHeader => config.identity.producers()?,
    };
    let by_tenant: std::collections::HashMap<&str, (&str, &[u8])> = producers
        .iter()
        .map(|(id, tenant, key)| (tenant.as_str(), (id.as_str(), key.as_slice())))
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut spoofed = 0u64;
    for event in generator {
        let tenant = tenant_of(&event);
        // A spoofing attempt: another tenant's producer also sends this tenant's event.
        if args.spoof_every > 0
            && sent % args.spoof_every == args.spoof_every - 1
            && let Some((id, other, key)) = producers.iter().find(|(_, t, _)| *t != tenant)
        {
            send_event(&producer, &topic, other, &event, Some((id, key)))?;
            spoofed += 1;
        }
        let signer = by_tenant.get(tenant.as_str()).copied();
        send_event(&producer, &topic, &tenant, &event, signer)?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    sent += spoofed;
    let ctx = producer.context();
    let (delivered, failed) = (
        ctx.delivered.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    println!(
        "produced {delivered} of {sent} events to {topic} in {:.2}s ({failed} failed, {spoofed} \
         of them spoofed by another tenant's producer)",
        started.elapsed().as_secs_f64()
    );
    if delivered != sent {
        bail!("{} events were not delivered", sent - delivered);
    }
    Ok(())
}

/// Sends one event keyed by `tenant`, signed by `signer` (producer id, key) if given; waits
/// while the producer queue is full.
fn send_event(
    producer: &ThreadedProducer<CountingContext>,
    topic: &str,
    tenant: &str,
    event: &[u8],
    signer: Option<(&str, &[u8])>,
) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).payload(event).key(tenant);
    if let Some((id, key)) = signer {
        let signature = custody_operators::identity::sign(key, event);
        record = record.headers(
            OwnedHeaders::new()
                .insert(Header {
                    key: PRODUCER_HEADER,
                    value: Some(id),
                })
                .insert(Header {
                    key: SIGNATURE_HEADER,
                    value: Some(signature.as_str()),
                }),
        );
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn tenant_of(event: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Claim {
        tenant_id: String,
    }
    serde_json::from_slice::<Claim>(event)
        .map(|c| c.tenant_id)
        .unwrap_or_default()
}
