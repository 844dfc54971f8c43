//! Write each sealed epoch to the Iceberg tables of the warehouse.
//!
//! ```text
//!   worker 0: SinkForward ──Records(epoch, recs)──┐
//!   driver:   probe passed epoch ──Seal(epoch)────┤  (bounded channel)
//!                                                 ▼
//!                                   IcebergSink thread (own tokio runtime)
//!                                   buffer per epoch ─► on Seal: Arrow batches
//!                                   ─► 1. Parquet data files of every table (invisible)
//!                                   ─► 2. custody.epochs row listing them (commit point)
//!                                   ─► 3. one fast-append per table (roll forward)
//!                                   ─► Committed(epoch) to the driver
//! ```
//!
//! See `iceberg.md` beside this file for the protocol and its recovery.
//!
//! # Inputs
//! [`SinkMsg`]s: records of an epoch, then the epoch's seal with the source positions it covers.
//!
//! # Outputs
//! Parquet data files and snapshots in every `custody.*` table (summary `custody.epoch`,
//! `custody.commit-id`, `custody.positions`); [`Committed`] notices back to the driver.
//!
//! # State
//! The records of unsealed epochs (bounded by the driver's epochs-in-flight limit).
//!
//! # Metrics
//! `custody_sink_rows_total{table}`, `custody_sink_commits_total{table}`,
//! `custody_sink_commit_seconds`, `custody_sink_last_committed_epoch`,
//! `custody_sink_last_commit_timestamp_seconds`, `custody_events_accepted_total`,
//! `custody_hitl_sla_breaches_total` and `custody_alerts_raised_total{kind}` (SLA breaches and
//! alerts new in a committed epoch).
//!
//! # Failure modes
//! Catalog or IO errors stop the sink: it reports the error and exits, the driver stops
//! consuming, and the source positions of uncommitted epochs are never acknowledged. A crash
//! after an epoch's commit point is completed at the next start ([`Warehouse::resume_state`]);
//! one before it leaves only unreferenced data files, and the epoch is read again.
//! Iceberg commit conflicts are retried by iceberg-rust's transaction backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use arrow_array::builder::{ArrayBuilder, FixedSizeBinaryBuilder, Int64Builder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use futures::TryStreamExt;
use iceberg::arrow::{arrow_schema_to_schema, schema_to_arrow_schema};
use iceberg::spec::DataFileFormat;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use custody_schemas::tables::{self, NAMESPACE};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::merkle::{CompactRange, Hash};
use crate::metrics::Metrics;
use crate::record::{
    ChainHead, ChainedEvent, EmitterHead, Epoch, Quarantined, SinkRecord, VaultEvent, VaultItem,
    ViewId, ViewUpdate, WrittenEvent,
};
use crate::sinks::dead_letter::DeadLetter;
use crate::table_storage::TableStorage;
use crate::transforms::hash_chain::{ChainState, EmitterState, TenantLog};
use crate::vault::{Keystore, seal, vault_aad};
use crate::verify::{ContinuousVerifier, EventRow};
use custody_schemas::time::{format_rfc3339, now_us};
use ed25519_dalek::VerifyingKey;

/// Snapshot summary key: the epoch a snapshot commits.
pub const SUMMARY_EPOCH: &str = "custody.epoch";
/// Snapshot summary key: idempotency id `sink-id:epoch:table`.
pub const SUMMARY_COMMIT_ID: &str = "custody.commit-id";
/// Snapshot summary key: source positions covered, JSON.
pub const SUMMARY_POSITIONS: &str = "custody.positions";
/// Snapshot summary key: checkpoints signed at this epoch's close.
pub const SUMMARY_CHECKPOINTS: &str = "custody.checkpoints";
/// Snapshot summary key: SHA-256 over those checkpoints' signatures (hex), in tenant order,
/// so that a snapshot and the checkpoints table cross-check.
pub const SUMMARY_CHECKPOINT_DIGEST: &str = "custody.checkpoint-digest";

/// How far a sealed epoch got in each source partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePositions {
    /// Source name (topic, file path, `generator`).
    pub source: String,
    /// Partition → the highest offset included (inclusive).
    pub partitions: BTreeMap<i32, i64>,
    /// What identifies the source's content beyond its name (a file: its head's length and
    /// SHA-256), so that a different input under the same name is refused, not mixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The views' clock (UTC micros) as set for this epoch: an input of the dataflow like the
    /// records, restored on restart so the rebuilt views equal the committed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_us: Option<i64>,
    /// Where a file source stood after the epoch's last record, so that a restart seeks
    /// there instead of reading every earlier line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_position: Option<crate::sources::BytePosition>,
}

/// Messages to the sink thread.
#[derive(Debug)]
pub enum SinkMsg {
    /// Records of an epoch; more may follow for the same epoch.
    Records(Epoch, Vec<SinkRecord>),
    /// One worker's events of an epoch, written to data files
    /// ([`super::event_writer`]); each worker sends at most one per epoch.
    Events(Epoch, EventFiles),
    /// A worker could not write its events of an epoch: the epoch cannot be committed.
    WriterFailed(Epoch, String),
    /// Every record of the epoch has been sent; commit it.
    Seal(Epoch, SourcePositions),
}

/// One worker's events of an epoch, written but not visible.
#[derive(Debug, Default)]
pub struct EventFiles {
    /// The data files of `custody.events`.
    pub files: Vec<iceberg::spec::DataFile>,
    /// `(path, SHA-256 hex)` of each.
    pub sha256: Vec<(String, String)>,
    /// The events they hold, in `(tenant, seq)` order.
    pub events: Vec<WrittenEvent>,
    /// The plaintext the vault must seal, per event.
    pub vault: Vec<VaultEvent>,
}

/// Sent back to the driver once an epoch is durable in every table.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The epoch.
    pub epoch: Epoch,
    /// The positions it covered.
    pub positions: SourcePositions,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, usize>,
}

/// What a restarted pipeline resumes from: the state as of the last epoch in
/// `custody.epochs` (completed first, see [`Warehouse::resume_state`]).
#[derive(Clone, Debug, Default)]
pub struct ResumeState {
    /// Every tenant's log: chain head and Merkle compact range.
    pub heads: ChainState,
    /// Every agent's emitter-side chain.
    pub emitters: EmitterState,
    /// The last epoch committed by any run, if any.
    pub last_epoch: Option<Epoch>,
    /// Per source name, partition → the last offset durable in the lake.
    pub positions: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Per source name, its identity fingerprint as first recorded (see
    /// [`SourcePositions::fingerprint`]).
    pub fingerprints: BTreeMap<String, String>,
    /// Per source name, where its newest epoch left a file source ([`SourcePositions::byte_position`]).
    pub byte_positions: BTreeMap<String, crate::sources::BytePosition>,
    /// The views' clock as of the last epoch.
    pub last_clock: Option<i64>,
    /// Tables whose commit of the last epoch was completed at start-up.
    pub rolled_forward: Vec<String>,
    /// The last epoch's row in `custody.epochs`, with its seal.
    pub last_record: Option<EpochRecord>,
    /// Every tenant's latest checkpoint.
    pub last_checkpoints: BTreeMap<String, Checkpoint>,
}

impl ResumeState {
    /// The sealer that goes on from the last epoch: after its seal, with the tenants' latest
    /// checkpoints as the registry.
    pub fn sealer(&self, signer: crate::checkpoint::Signer, watermark: Option<PathBuf>) -> Sealer {
        Sealer {
            signer,
            prev: self
                .last_record
                .as_ref()
                .and_then(|r| r.seal())
                .map_or([0; 32], |s| s.hash()),
            registry: crate::seal::Registry::from_latest(self.last_checkpoints.values()),
            watermark,
        }
    }

    /// Checks, before anything is signed on top of it, that the state resumed from is the
    /// state that was signed: the last epoch's seal verifies under one of the `trusted` keys
    /// (the signing key, then the keys it rotated from) and covers its row;
    /// its tenant registry is exactly the tenants' latest checkpoints, each valid and equal to
    /// the tenant's resumed log (size, Merkle root of the compact range, chain head);
    /// and the warehouse does not end before the `watermark` recorded beside the key (a
    /// rollback or truncation of the whole warehouse). Any difference is
    /// [`Error::Tampered`], naming it. A tenant's latest checkpoint may be signed by any
    /// trusted key (one the warehouse has not written to since a rotation keeps the old
    /// key's), as the seal lists its hash.
    pub fn verify(&self, trusted: &[VerifyingKey], watermark: Option<&Watermark>) -> Result<()> {
        let tampered = |m: String| Err(Error::Tampered(m));
        let Some(current) = trusted.first() else {
            return tampered("no signing key to verify the warehouse under".into());
        };
        let Some(last) = self.last_epoch else {
            if let Some(w) = watermark {
                return tampered(format!(
                    "this signing key sealed epoch {} of this warehouse, which now holds no \
                     epoch at all: its tables were wiped or replaced",
                    w.epoch
                ));
            }
            if !self.heads.is_empty() {
                return tampered("chain heads exist but no epoch was ever committed".into());
            }
            return Ok(());
        };
        if let Some(w) = watermark
            && w.epoch > last
        {
            return tampered(format!(
                "the warehouse ends at epoch {last}, but this signing key already sealed epoch \
                 {}: the warehouse was rolled back or truncated",
                w.epoch
            ));
        }
        let Some(record) = &self.last_record else {
            return tampered(format!(
                "custody.epochs has no row for its last epoch {last}"
            ));
        };
        let Some(seal) = record.seal() else {
            return tampered(format!("epoch {last} is not sealed"));
        };
        if !trusted.iter().any(|key| seal.verify(key)) {
            return tampered(format!(
                "the seal of epoch {last} does not verify under the signing key {}",
                crate::checkpoint::key_id(current)
            ));
        }
        if seal.epoch != last || seal.row != hex::encode(crate::seal::row_digest(&record.fields()))
        {
            return tampered(format!(
                "the row of epoch {last} in custody.epochs is not the row its seal signed"
            ));
        }
        if let Some(w) = watermark
            && w.epoch == last
            && w.seal != hex::encode(seal.hash())
        {
            return tampered(format!(
                "epoch {last} carries a different seal from the one this signing key made"
            ));
        }
        let Some(change) = crate::seal::parse_registry(&record.registry) else {
            return tampered(format!("the tenant registry of epoch {last} is unreadable"));
        };
        // The row lists the checkpoints the epoch signed; the seal signs every tenant's
        // latest checkpoint, which must be exactly the ones resumed.
        for (tenant, hash) in &change {
            match self.last_checkpoints.get(tenant) {
                Some(cp) if cp.hash() == *hash && cp.epoch == last => {}
                _ => {
                    return tampered(format!(
                        "tenant {tenant:?} has no checkpoint of epoch {last}, which its seal \
                         lists: its checkpoints were removed or replaced"
                    ));
                }
            }
        }
        let registry = crate::seal::Registry::from_latest(self.last_checkpoints.values());
        if seal.tenants_root != hex::encode(registry.root())
            || seal.tenants != registry.len() as u64
        {
            return tampered(format!(
                "the tenants' latest checkpoints are not the registry the seal of epoch {last} \
                 signed: a checkpoint or a tenant was removed, replaced or added"
            ));
        }
        for (tenant, cp) in &self.last_checkpoints {
            if !trusted.iter().any(|key| cp.verify(key)) {
                return tampered(format!(
                    "the latest checkpoint of tenant {tenant:?} (epoch {}) is not the one signed",
                    cp.epoch
                ));
            }
            let Some(log) = self.heads.get(tenant) else {
                if cp.tree_size == 0 {
                    continue;
                }
                return tampered(format!(
                    "tenant {tenant:?} has a signed log of {} events but no chain head: its \
                     state was removed",
                    cp.tree_size
                ));
            };
            if cp.tree_size != log.merkle.size()
                || cp.root != hex::encode(log.merkle.root())
                || cp.chain_head != hex::encode(log.head)
            {
                return tampered(format!(
                    "the chain state of tenant {tenant:?} (size {}, head {}) is not what its \
                     checkpoint of epoch {} signed (size {}, head {}): its history was \
                     rewritten",
                    log.merkle.size(),
                    hex::encode(log.head),
                    cp.epoch,
                    cp.tree_size,
                    cp.chain_head
                ));
            }
        }
        for tenant in self.heads.keys() {
            if !self.last_checkpoints.contains_key(tenant) {
                return tampered(format!(
                    "tenant {tenant:?} is not in the signed tenant registry of epoch {last}"
                ));
            }
        }
        Ok(())
    }
}

/// One row of `custody.epochs`, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch.
    pub epoch: Epoch,
    /// Writer id.
    pub sink_id: String,
    /// Source name.
    pub source: String,
    /// Positions (JSON).
    pub positions: String,
    /// Events committed.
    pub events: i64,
    /// Records quarantined.
    pub quarantined: i64,
    /// Checkpoints signed.
    pub checkpoints: i64,
    /// Digest of the checkpoint signatures.
    pub checkpoint_digest: String,
    /// Commit time, UTC micros.
    pub committed_at_us: i64,
    /// Epoch manifest (JSON, [`EpochManifest`]).
    pub files: String,
    /// Tenant registry (JSON, [`crate::seal::registry_json`]).
    pub registry: String,
    /// Seal (JSON, [`crate::seal::EpochSeal`]); empty if unsealed.
    pub seal: String,
}

impl EpochRecord {
    /// The sealed columns.
    pub fn fields(&self) -> crate::seal::EpochRowFields<'_> {
        crate::seal::EpochRowFields {
            epoch: self.epoch,
            sink_id: &self.sink_id,
            source: &self.source,
            positions: &self.positions,
            events: self.events,
            quarantined: self.quarantined,
            checkpoints: self.checkpoints,
            checkpoint_digest: &self.checkpoint_digest,
            committed_at_us: self.committed_at_us,
            files: &self.files,
            registry: &self.registry,
        }
    }

    /// The seal, if the row has a readable one.
    pub fn seal(&self) -> Option<crate::seal::EpochSeal> {
        serde_json::from_str(&self.seal).ok()
    }

    /// The manifest, if readable.
    pub fn manifest(&self) -> Option<EpochManifest> {
        serde_json::from_str(&self.files).ok()
    }
}

/// A snapshot of the views' state: its epoch and its JSON lines, in chunks of whole lines
/// (about [`SNAPSHOT_CHUNK`] bytes each).
pub type ViewSnapshot = (Epoch, Vec<Vec<u8>>);

/// Bytes of JSON lines per chunk of a snapshot read back.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// View state snapshots kept in the warehouse (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 3;

/// The format of the views' state in a snapshot, part of its file name. Bumped when the views
/// change what they keep: a restart passes over snapshots of another format and rebuilds the
/// views from the lake instead. 2: review sketches per key instead of bucket facts; 3: sketch
/// keys name their group (tenant, agent/risk tier, reviewer).
pub const SNAPSHOT_FORMAT: u32 = 3;

/// Every tenant's chain head and every emitter's last hash after an epoch, written beside
/// the views' snapshot (`snapshots/heads-<epoch>.json`, its digest under the epoch's seal):
/// a restart reads the heads from the newest one and only the `custody.chain_heads` and
/// `custody.emitter_heads` rows of the epochs after it, not the tables' whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsFile {
    /// Tenant → (head hash hex, Merkle compact range); the sequence number is the range's
    /// size less one.
    pub chains: BTreeMap<String, (String, String)>,
    /// `(tenant, agent)` → the agent's last raw event SHA-256, hex.
    pub emitters: BTreeMap<String, BTreeMap<String, String>>,
    /// Where every source stopped, merged over every epoch up to this one: the Iceberg
    /// snapshots of older epochs (whose summaries hold their positions) are expired.
    #[serde(default)]
    pub sources: SourcesResume,
    /// Tenant → its latest signed checkpoint (an idle tenant's may be many epochs old).
    #[serde(default)]
    pub checkpoints: BTreeMap<String, Checkpoint>,
}

/// Every source's durable position, merged over epochs (see [`ResumeState`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesResume {
    /// Per source, per partition, the last committed offset.
    pub positions: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Per source, the fingerprint of the input first ingested under its name.
    pub fingerprints: BTreeMap<String, String>,
    /// Per source, its newest byte position.
    pub byte_positions: BTreeMap<String, crate::sources::BytePosition>,
    /// The pipeline's clock at the newest epoch that had one.
    pub last_clock: Option<i64>,
}

impl SourcesResume {
    /// Takes the next committed epoch's positions (epochs in order).
    fn advance(&mut self, p: &SourcePositions) {
        if p.clock_us.is_some() {
            self.last_clock = p.clock_us;
        }
        if let Some(f) = &p.fingerprint {
            self.fingerprints
                .entry(p.source.clone())
                .or_insert_with(|| f.clone());
        }
        if let Some(b) = p.byte_position {
            self.byte_positions.insert(p.source.clone(), b);
        }
        let source = self.positions.entry(p.source.clone()).or_default();
        for (partition, offset) in &p.partitions {
            let e = source.entry(*partition).or_insert(*offset);
            *e = (*e).max(*offset);
        }
    }
}

impl HeadsFile {
    /// The heads and source positions a restart resumes from.
    pub fn from_state(state: &ResumeState) -> Self {
        let (chains, emitters) = (&state.heads, &state.emitters);
        let mut out = HeadsFile {
            sources: SourcesResume {
                positions: state.positions.clone(),
                fingerprints: state.fingerprints.clone(),
                byte_positions: state.byte_positions.clone(),
                last_clock: state.last_clock,
            },
            ..HeadsFile::default()
        };
        for (tenant, log) in chains {
            if log.merkle.size() > 0 {
                out.chains
                    .insert(tenant.clone(), (hex::encode(log.head), log.merkle.encode()));
            }
        }
        for ((tenant, agent), hash) in emitters {
            out.emitters
                .entry(tenant.clone())
                .or_default()
                .insert(agent.clone(), hex::encode(hash));
        }
        out.checkpoints = state.last_checkpoints.clone();
        out
    }

    /// Takes an epoch's new heads and positions.
    fn observe(
        &mut self,
        heads: &[ChainHead],
        emitters: &[EmitterHead],
        checkpoints: &[Checkpoint],
        positions: &SourcePositions,
    ) {
        self.sources.advance(positions);
        for cp in checkpoints {
            self.checkpoints.insert(cp.tenant_id.clone(), cp.clone());
        }
        for h in heads {
            self.chains.insert(
                h.tenant_id.clone(),
                (hex::encode(h.head_hash), h.merkle_range.clone()),
            );
        }
        for e in emitters {
            self.emitters
                .entry(e.tenant_id.clone())
                .or_default()
                .insert(e.agent_id.clone(), hex::encode(e.last_sha256));
        }
    }
}

/// The data files an epoch adds to each table, recorded in its `custody.epochs` row before any
/// of them is committed: the epoch's write-ahead record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochManifest {
    /// Table → its data files, each as Iceberg's JSON form of a data file.
    pub tables: BTreeMap<String, Vec<String>>,
    /// Data file path → SHA-256 of its bytes, hex: the epoch's seal covers every byte.
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
    /// Table → the merges committed with the epoch ([`crate::compaction`]): files replaced
    /// and their replacements (whose digests are in `sha256`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compacted: BTreeMap<String, Vec<crate::compaction::Compaction>>,
}

impl EpochManifest {
    /// The tables the epoch commits to: those it adds files to or compacts.
    pub fn committed_tables(&self) -> std::collections::BTreeSet<&str> {
        self.tables
            .keys()
            .chain(self.compacted.keys())
            .map(String::as_str)
            .collect()
    }
}

/// The current snapshot of `table` and its ancestors, newest first (a rolled-back table's
/// abandoned snapshots are not among them).
fn lineage(table: &Table) -> Vec<&iceberg::spec::SnapshotRef> {
    let metadata = table.metadata();
    let mut out = Vec::new();
    let mut next = metadata.current_snapshot();
    while let Some(snapshot) = next {
        out.push(snapshot);
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    out
}

fn summary_value<'a>(snapshot: &'a iceberg::spec::Snapshot, key: &str) -> Option<&'a str> {
    snapshot
        .summary()
        .additional_properties
        .get(key)
        .map(String::as_str)
}

fn snapshot_epoch(snapshot: &iceberg::spec::Snapshot) -> Option<Epoch> {
    summary_value(snapshot, SUMMARY_EPOCH)?.parse().ok()
}

fn snapshot_positions(snapshot: &iceberg::spec::Snapshot) -> Option<SourcePositions> {
    serde_json::from_str(summary_value(snapshot, SUMMARY_POSITIONS)?).ok()
}

fn merge_positions(state: &mut ResumeState, positions: Option<SourcePositions>) {
    if let Some(p) = positions {
        // Lineage is walked newest first: the newest clock wins.
        if state.last_clock.is_none() {
            state.last_clock = p.clock_us;
        }
        if let Some(f) = p.fingerprint {
            // Lineage is walked newest first: the oldest fingerprint wins.
            state.fingerprints.insert(p.source.clone(), f);
        }
        if let Some(b) = p.byte_position {
            // Newest first: the newest wins.
            state.byte_positions.entry(p.source.clone()).or_insert(b);
        }
        let source = state.positions.entry(p.source).or_default();
        for (partition, offset) in p.partitions {
            let e = source.entry(partition).or_insert(offset);
            *e = (*e).max(offset);
        }
    }
}

/// The Iceberg warehouse: a SQLite catalog and a local directory of table data.
pub struct Warehouse {
    catalog: Arc<SqlCatalog>,
    root: PathBuf,
    /// Where the tables' files are.
    storage: TableStorage,
    /// Tables loaded for queries, by name, reused while the catalog still points at the same
    /// metadata (a clone shares the table's cache of manifests).
    cached: Arc<std::sync::Mutex<HashMap<String, Table>>>,
    /// Manifests parsed for queries, kept across table versions (they are immutable).
    manifests: Arc<crate::file_index::ManifestCache>,
    /// A read-only connection pool on the catalog, to look up tables' metadata locations.
    lookups: sqlx::SqlitePool,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("root", &self.root)
            .finish()
    }
}

/// The catalog name used in the SQLite catalog (pyiceberg's `SqlCatalog` name).
pub const CATALOG_NAME: &str = "custody";

impl Warehouse {
    /// Opens (creating if needed) the warehouse at `root`: `root/catalog.db` and `root/data/`.
    pub async fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        TableStorage::of(&std::fs::canonicalize(root)?)?.prepare()?;
        let warehouse = Self::connect(root, "rwc").await?;
        warehouse.check_intact().await?;
        warehouse.ensure_tables().await?;
        Ok(warehouse)
    }

    /// The catalog at `root/catalog.db`, opened in SQLite `mode` (`rwc` or `ro`).
    async fn connect(root: &Path, mode: &str) -> Result<Self> {
        let root = std::fs::canonicalize(root)?;
        let storage = TableStorage::of(&root)?;
        let (factory, props) = storage.factory();
        let db = root.join("catalog.db");
        let catalog = SqlCatalogBuilder::default()
            .uri(format!("sqlite://{}?mode={mode}", db.display()))
            .warehouse_location(storage.location())
            .sql_bind_style(SqlBindStyle::QMark)
            .with_storage_factory(factory)
            .load(CATALOG_NAME, props)
            .await?;
        let lookups = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_lazy(&format!("sqlite://{}?mode=ro", db.display()))?;
        Ok(Warehouse {
            catalog: Arc::new(catalog),
            root,
            storage,
            cached: Arc::default(),
            manifests: Arc::default(),
            lookups,
        })
    }

    /// Opens the warehouse at `root` for reading only (`custody verify`, `custody export`):
    /// the catalog is opened read-only and nothing is created, so a verifier never repairs
    /// what it is checking. A missing table is an error naming it.
    pub async fn open_read_only(root: &Path) -> Result<Self> {
        if !root.join("catalog.db").is_file() {
            return Err(Error::WarehouseDamaged(format!(
                "{} is not a custody warehouse (no catalog.db)",
                root.display()
            )));
        }
        let warehouse = Self::connect(root, "ro").await?;
        warehouse.check_intact().await?;
        let ns = NamespaceIdent::new(NAMESPACE.to_string());
        for name in tables::ALL_TABLES {
            let ident = TableIdent::new(ns.clone(), name.to_string());
            if !warehouse.catalog.table_exists(&ident).await? {
                return Err(Error::WarehouseDamaged(format!(
                    "table {NAMESPACE}.{name} is missing from {}",
                    warehouse.root.join("catalog.db").display()
                )));
            }
        }
        Ok(warehouse)
    }

    /// Refuses a warehouse whose catalog is gone while its data or keys are still there (a
    /// deleted or emptied `catalog.db` would otherwise start a new, empty lake over them), and
    /// one whose commit log predates epoch manifests.
    async fn check_intact(&self) -> Result<()> {
        let ns = NamespaceIdent::new(NAMESPACE.to_string());
        let ident = TableIdent::new(ns.clone(), tables::EPOCHS.to_string());
        let has_log =
            self.catalog.namespace_exists(&ns).await? && self.catalog.table_exists(&ident).await?;
        if !has_log {
            let keystore = self.root.join("keys/keystore.db");
            let data = self.storage.any_file(".parquet").await?;
            let keystore = keystore.exists().then(|| keystore.display().to_string());
            if let Some(found) = data.or(keystore) {
                return Err(Error::WarehouseDamaged(format!(
                    "{} has no commit log (custody.epochs) but holds {}: the catalog was \
                     deleted or emptied; restore catalog.db from a backup (starting over here \
                     would abandon the recorded history)",
                    self.root.join("catalog.db").display(),
                    found
                )));
            }
            return Ok(());
        }
        let epochs = self.catalog.load_table(&ident).await?;
        if epochs
            .metadata()
            .current_schema()
            .field_by_name("seal")
            .is_none()
        {
            return Err(Error::WarehouseDamaged(format!(
                "{} was written by an older Custody whose commit log has no epoch seals; \
                 export it (`custody export`) and start a new warehouse",
                self.root.display()
            )));
        }
        // A table this version does not write (the per-view tables of older versions, say)
        // means the warehouse holds state this version would silently ignore on resume.
        if let Some(other) = self
            .catalog
            .list_tables(&ns)
            .await?
            .into_iter()
            .find(|t| !tables::ALL_TABLES.contains(&t.name()))
        {
            return Err(Error::WarehouseDamaged(format!(
                "{}: table {NAMESPACE}.{} is not one this version of Custody writes (it was \
                 written by another version); export it with the version that wrote it \
                 (`custody export`) and start a new warehouse",
                self.root.display(),
                other.name()
            )));
        }
        for name in tables::ALL_TABLES {
            let ident = TableIdent::new(ns.clone(), name.to_string());
            if !self.catalog.table_exists(&ident).await? {
                continue;
            }
            let table = self.catalog.load_table(&ident).await?;
            // Panic: ALL_TABLES lists exactly the names table_schema knows.
            let want = arrow_schema_to_schema(&tables::table_schema(name).expect("known table"))?;
            let layout = |s: &iceberg::spec::Schema| -> Vec<(i32, String, bool, String)> {
                s.as_struct()
                    .fields()
                    .iter()
                    .map(|f| (f.id, f.name.clone(), f.required, f.field_type.to_string()))
                    .collect()
            };
            let partitioned_as =
                crate::layout::spec_layout(table.metadata().default_partition_spec())
                    == crate::layout::unbound_layout(&crate::layout::partition_spec(name)?);
            if layout(table.metadata().current_schema()) != layout(&want) || !partitioned_as {
                return Err(Error::WarehouseDamaged(format!(
                    "{}: table {NAMESPACE}.{name} has another layout than this version of \
                     Custody writes (it was written by another version); export it with the \
                     version that wrote it (`custody export`) and start a new warehouse",
                    self.root.display()
                )));
            }
        }
        Ok(())
    }

    /// The warehouse directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn ensure_tables(&self) -> Result<()> {
        let ns = NamespaceIdent::new(NAMESPACE.to_string());
        if !self.catalog.namespace_exists(&ns).await? {
            self.catalog.create_namespace(&ns, HashMap::new()).await?;
        }
        for name in tables::ALL_TABLES {
            let ident = TableIdent::new(ns.clone(), name.to_string());
            if !self.catalog.table_exists(&ident).await? {
                // Panic: ALL_TABLES lists exactly the names table_schema knows.
                let arrow = tables::table_schema(name).expect("known table");
                let creation = TableCreation::builder()
                    .name(name.to_string())
                    .schema(arrow_schema_to_schema(&arrow)?)
                    .partition_spec(crate::layout::partition_spec(name)?)
                    .properties(HashMap::from([(
                        "write.format.default".to_string(),
                        "parquet".to_string(),
                    )]))
                    .build();
                self.catalog.create_table(&ns, creation).await?;
            }
        }
        Ok(())
    }

    /// Table `name` at its current metadata, loaded only when that changed since the last
    /// call (for queries: the table's manifests stay cached between them).
    pub async fn table_current(&self, name: &str) -> Result<Table> {
        let location: String = sqlx::query_scalar(
            "SELECT metadata_location FROM iceberg_tables \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
        )
        .bind(CATALOG_NAME)
        .bind(NAMESPACE)
        .bind(name)
        .fetch_one(&self.lookups)
        .await?;
        if let Ok(cached) = self.cached.lock()
            && let Some(table) = cached.get(name)
            && table.metadata_location() == Some(location.as_str())
        {
            return Ok(table.clone());
        }
        let table = self.table(name).await?;
        if let Ok(mut cached) = self.cached.lock() {
            cached.insert(name.to_string(), table.clone());
        }
        Ok(table)
    }

    /// The live data files of `table` (of this warehouse) that may hold rows of `tenant` (with
    /// `seq` in `seqs`, when given), from manifests and footers read once per process ([`crate::file_index`]).
    pub async fn tenant_files(
        &self,
        table: &Table,
        tenant: &str,
        seqs: Option<std::ops::Range<i64>>,
    ) -> Result<Vec<crate::file_index::DataFileRef>> {
        self.manifests.tenant_files(table, tenant, seqs).await
    }

    /// Loads a table by name.
    pub async fn table(&self, name: &str) -> Result<Table> {
        let ident = TableIdent::new(NamespaceIdent::new(NAMESPACE.to_string()), name.to_string());
        Ok(self.catalog.load_table(&ident).await?)
    }

    /// Reads every row of a table (current snapshot) as Arrow batches.
    pub async fn scan(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let table = self.table(name).await?;
        if table.metadata().current_snapshot().is_none() {
            return Ok(Vec::new());
        }
        let stream = table.scan().build()?.to_arrow().await?;
        Ok(stream.try_collect().await?)
    }

    /// Where earlier runs stopped; see [`ResumeState`]. First completes the last epoch: a
    /// crash may have cut its table commits short after its `custody.epochs` row (the commit
    /// point) was written; the data files that row lists are committed to the tables that
    /// lack them (roll-forward). Needs the writer lock.
    pub async fn resume_state(&self) -> Result<ResumeState> {
        let started = std::time::Instant::now();
        let step = |name: &str| {
            tracing::debug!(
                step = name,
                ms = started.elapsed().as_millis() as u64,
                "resume state"
            );
        };
        let mut state = ResumeState::default();
        // A restart reads the heads and positions of sealed files and only the newest rows
        // of the tables, so it first checks that every table's history is Custody's own:
        // commits of an epoch, nothing rewritten or added by another writer.
        for name in tables::ALL_TABLES {
            let table = self.table(name).await?;
            for snapshot in lineage(&table) {
                // An epoch's commit appends, or (with a compaction) replaces files by files
                // of the same rows: `custody verify` checks those against the seals.
                let ours = matches!(
                    snapshot.summary().operation,
                    iceberg::spec::Operation::Append | iceberg::spec::Operation::Overwrite
                );
                if !ours || snapshot_epoch(snapshot).is_none() {
                    return Err(Error::Tampered(format!(
                        "custody.{name} has a snapshot ({}, {:?}) that Custody did not commit",
                        snapshot.snapshot_id(),
                        snapshot.summary().operation
                    )));
                }
            }
        }
        step("lineages checked");
        let marker = self.table(tables::EPOCHS).await?;
        for snapshot in lineage(&marker) {
            state.last_epoch = state.last_epoch.max(snapshot_epoch(snapshot));
            merge_positions(&mut state, snapshot_positions(snapshot));
        }
        if let Some(last) = state.last_epoch {
            state.rolled_forward = self.roll_forward(&marker, last).await?;
        }
        step("rolled forward");
        let last = state.last_epoch;
        // The heads at the newest sealed heads file, then the rows of the epochs after it.
        let (after, saved) = match last {
            Some(last) => self.latest_heads(last).await?,
            None => (None, HeadsFile::default()),
        };
        step("heads file read");
        // The positions the heads file merged are older than every snapshot still in the
        // lineage (older ones are expired).
        let older = saved.sources;
        if state.last_clock.is_none() {
            state.last_clock = older.last_clock;
        }
        state.fingerprints.extend(older.fingerprints);
        for (source, b) in older.byte_positions {
            state.byte_positions.entry(source).or_insert(b);
        }
        for (source, partitions) in older.positions {
            let merged = state.positions.entry(source).or_default();
            for (partition, offset) in partitions {
                let e = merged.entry(partition).or_insert(offset);
                *e = (*e).max(offset);
            }
        }
        let mut latest: HashMap<String, (u64, [u8; 32], String)> = HashMap::new();
        for (tenant, (hash, range)) in saved.chains {
            let seq = CompactRange::decode(&range).map_or(0, |m| m.size().saturating_sub(1));
            let hash = decode_hash(&hash, "chain head hash")?;
            latest.insert(tenant, (seq, hash, range));
        }
        for batch in self.scan_after(tables::CHAIN_HEADS, after).await? {
            let tenants = string_column(&batch, "tenant_id")?;
            let seqs = int_column(&batch, "seq")?;
            let hashes = string_column(&batch, "head_hash")?;
            let ranges = string_column(&batch, "merkle_range")?;
            let epochs = int_column(&batch, "epoch")?;
            for i in 0..batch.num_rows() {
                if Some(epochs.value(i) as Epoch) > last {
                    return Err(Error::SinkStopped(format!(
                        "custody.chain_heads holds epoch {} past the last committed epoch \
                         {last:?}: the warehouse was modified outside Custody",
                        epochs.value(i)
                    )));
                }
                let seq = seqs.value(i) as u64;
                let hash = decode_hash(hashes.value(i), "chain head hash")?;
                let tenant = tenants.value(i);
                if latest.get(tenant).is_none_or(|(s, _, _)| seq > *s) {
                    latest.insert(tenant.to_string(), (seq, hash, ranges.value(i).to_string()));
                }
            }
        }
        for (tenant, (seq, head, range)) in latest {
            let merkle = CompactRange::decode(&range)
                .filter(|m| m.size() == seq + 1)
                .ok_or_else(|| {
                    Error::SinkStopped(format!(
                        "corrupt merkle range for tenant {tenant:?} in the lake"
                    ))
                })?;
            state.heads.insert(
                tenant,
                TenantLog {
                    head,
                    merkle,
                    last_checkpoint: [0; 32],
                },
            );
        }
        step("chain heads after it read");
        if let Some(last) = last {
            state.last_record = self.epoch_records(Some(last)).await?.pop();
            // Every tenant's latest checkpoint: the heads file's, then those of the epochs
            // after it (and the last epoch's, which a heads file from before checkpoints were
            // kept in it does not hold).
            let mut latest: BTreeMap<String, Checkpoint> = saved.checkpoints;
            let newer = checkpoint_rows(self.scan_after(tables::CHECKPOINTS, after).await?)?;
            let last_ones = match after {
                Some(a) if a == last && latest.is_empty() => {
                    self.checkpoint_rows_of(Some(last)).await?
                }
                _ => Vec::new(),
            };
            for cp in newer.into_iter().chain(last_ones) {
                if latest
                    .get(&cp.tenant_id)
                    .is_none_or(|old| cp.epoch > old.epoch)
                {
                    latest.insert(cp.tenant_id.clone(), cp);
                }
            }
            for cp in latest.into_values() {
                if let Some(log) = state.heads.get_mut(&cp.tenant_id) {
                    log.last_checkpoint = cp.hash();
                } else if cp.tree_size == 0 {
                    // A tenant known before its first event (none today; kept consistent).
                    state.heads.insert(
                        cp.tenant_id.clone(),
                        TenantLog {
                            last_checkpoint: cp.hash(),
                            ..TenantLog::default()
                        },
                    );
                }
                state.last_checkpoints.insert(cp.tenant_id.clone(), cp);
            }
        }
        step("last epoch and checkpoints read");
        let mut emitters: HashMap<(String, String), (i64, [u8; 32])> = HashMap::new();
        for (tenant, agents) in saved.emitters {
            for (agent, hash) in agents {
                let hash = decode_hash(&hash, "emitter head")?;
                emitters.insert((tenant.clone(), agent), (-1, hash));
            }
        }
        for batch in self.scan_after(tables::EMITTER_HEADS, after).await? {
            let (tenants, agents, hashes) = (
                string_column(&batch, "tenant_id")?,
                string_column(&batch, "agent_id")?,
                string_column(&batch, "last_sha256")?,
            );
            let epochs = int_column(&batch, "epoch")?;
            for i in 0..batch.num_rows() {
                let key = (tenants.value(i).to_string(), agents.value(i).to_string());
                let epoch = epochs.value(i);
                if emitters.get(&key).is_none_or(|(e, _)| epoch > *e) {
                    let hash = decode_hash(hashes.value(i), "emitter head")?;
                    emitters.insert(key, (epoch, hash));
                }
            }
        }
        state.emitters = emitters.into_iter().map(|(k, (_, h))| (k, h)).collect();
        step("emitter heads read");
        Ok(state)
    }

    /// Commits to every table the data files that epoch `last`'s `custody.epochs` row lists
    /// and the table does not hold yet. Epochs are committed one after another, so only the
    /// last can be incomplete.
    async fn roll_forward(&self, marker: &Table, last: Epoch) -> Result<Vec<String>> {
        let Some(snapshot) = lineage(marker)
            .into_iter()
            .find(|s| snapshot_epoch(s) == Some(last))
        else {
            return Ok(Vec::new());
        };
        // The commit point's summary (epoch, positions, checkpoint digest) for every table.
        let summary: Vec<(&str, String)> = snapshot
            .summary()
            .additional_properties
            .iter()
            .filter(|(k, _)| k.starts_with("custody.") && k.as_str() != SUMMARY_COMMIT_ID)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        // Only the files the last epoch's snapshot added are read (not every manifest of the
        // table, which would grow with the epochs ever committed).
        let manifest = self
            .epoch_records(Some(last))
            .await?
            .pop()
            .map(|r| {
                serde_json::from_str::<EpochManifest>(&r.files).map_err(|e| {
                    Error::SinkStopped(format!("epoch {last}: unreadable manifest: {e}"))
                })
            })
            .transpose()?;
        let manifest = manifest.ok_or_else(|| {
            Error::SinkStopped(format!(
                "custody.epochs has a snapshot for epoch {last} but no row: the warehouse was \
                 modified outside Custody"
            ))
        })?;
        let mut completed = Vec::new();
        for name in manifest.committed_tables() {
            let table = self.table(name).await?;
            if lineage(&table)
                .iter()
                .any(|s| snapshot_epoch(s) == Some(last))
            {
                continue;
            }
            let metadata = table.metadata();
            let schema = metadata.current_schema();
            let spec = metadata.default_partition_spec();
            let partition_type = spec.partition_type(schema)?;
            let compacted = manifest
                .compacted
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let files = manifest
                .tables
                .get(name)
                .into_iter()
                .flatten()
                .chain(compacted.iter().flat_map(|c| &c.outputs))
                .map(|json| {
                    iceberg::spec::deserialize_data_file_from_json(
                        json,
                        spec.spec_id(),
                        &partition_type,
                        schema,
                    )
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let removed: std::collections::HashSet<String> = compacted
                .iter()
                .flat_map(|c| c.inputs.iter().cloned())
                .collect();
            tracing::warn!(
                table = %name,
                epoch = last,
                "completing a commit a crash cut short (roll-forward)"
            );
            self.commit_files(&table, name, last, files, &removed, &summary)
                .await?;
            completed.push(name.to_string());
        }
        Ok(completed)
    }

    /// Writes `batch` as Parquet data files of table `table` for `epoch`; nothing is visible
    /// until [`Warehouse::commit_files`].
    async fn write_files(
        &self,
        table: &Table,
        epoch: Epoch,
        batch: RecordBatch,
    ) -> Result<Vec<iceberg::spec::DataFile>> {
        write_data_files(table, epoch, batch).await
    }

    /// Where the views' state snapshots are kept.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The path (relative to the warehouse) of epoch `epoch`'s view state snapshot.
    pub fn snapshot_path(epoch: Epoch) -> String {
        format!("snapshots/epoch-{epoch:012}.v{SNAPSHOT_FORMAT}.ndjson")
    }

    /// Writes the heads after epoch `epoch` (atomically); its path and SHA-256, hex.
    fn write_heads(&self, epoch: Epoch, heads: &HeadsFile) -> Result<(String, String)> {
        std::fs::create_dir_all(self.snapshot_dir())?;
        let path = Self::heads_path(epoch);
        let bytes = serde_json::to_vec(heads)
            .map_err(|e| Error::SinkStopped(format!("heads file: {e}")))?;
        let tmp = self.root.join(format!("{path}.tmp"));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, self.root.join(&path))?;
        Ok((path, hex::encode(Sha256::digest(&bytes))))
    }

    /// Expires every snapshot but the current one of each table of `names`, then deletes the
    /// data files (of epochs up to `upto`) no snapshot of any table references any more, and
    /// the manifests and manifest lists of `names` no remaining snapshot references. Returns
    /// the snapshots expired and the files deleted.
    pub async fn purge_history(&self, names: &[&str], upto: Epoch) -> Result<(usize, usize)> {
        let mut expired = 0;
        for name in names {
            expired += self.expire_snapshots(name, |_| true).await?;
        }
        let mut removed = self.remove_orphans(upto).await?;
        for name in names {
            removed += self.remove_orphan_manifests(name).await?;
        }
        Ok((expired, removed))
    }

    /// Deletes the manifest and manifest-list files (`metadata/*.avro`) of table `name` that
    /// none of its snapshots references. Returns how many.
    async fn remove_orphan_manifests(&self, name: &str) -> Result<usize> {
        let table = self.table(name).await?;
        let metadata = table.metadata();
        let mut referenced: HashSet<String> = HashSet::new();
        for snapshot in metadata.snapshots() {
            referenced.insert(snapshot.manifest_list().to_string());
            let list = table
                .file_io()
                .new_input(snapshot.manifest_list())?
                .read()
                .await?;
            let list =
                iceberg::spec::ManifestList::parse_with_version(&list, metadata.format_version())?;
            for manifest in list.entries() {
                referenced.insert(manifest.manifest_path.clone());
            }
        }
        let dir = format!("{}/metadata", metadata.location().trim_end_matches('/'));
        let mut removed = 0;
        for file in self.storage.list(&dir).await? {
            if !file.ends_with(".avro") || is_referenced(&referenced, &file) {
                continue;
            }
            table.file_io().delete(&file).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Expires, in every table, the Iceberg snapshots of epochs before the oldest heads file
    /// kept (never a table's current snapshot): a table's metadata, read and rewritten at
    /// every commit, then holds a bounded number of snapshots instead of one per epoch ever
    /// committed. What a restart needs of older epochs (heads, source positions) is in the
    /// heads files. Returns the number of snapshots expired.
    pub async fn expire_history(&self) -> Result<usize> {
        let Some(keep_from) = self.snapshot_epochs("heads-", ".json").first().copied() else {
            return Ok(0);
        };
        let mut expired = 0;
        for name in tables::ALL_TABLES {
            expired += self
                .expire_snapshots(name, |s| snapshot_epoch(s).is_some_and(|e| e < keep_from))
                .await?;
        }
        Ok(expired)
    }

    /// Expires the snapshots of table `name` that `which` selects, never its current one.
    /// Returns how many.
    async fn expire_snapshots(
        &self,
        name: &str,
        which: impl Fn(&iceberg::spec::Snapshot) -> bool,
    ) -> Result<usize> {
        let table = self.table(name).await?;
        let metadata = table.metadata();
        let current = metadata.current_snapshot_id();
        let ids: Vec<i64> = metadata
            .snapshots()
            .filter(|s| Some(s.snapshot_id()) != current && which(s))
            .map(|s| s.snapshot_id())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let expired = ids.len();
        let tx = Transaction::new(&table);
        // Only the snapshots named: no age-based expiry (cutoff at the dawn of time).
        let tx = tx
            .expire_snapshots()
            .expire_snapshot_ids(ids)
            .expire_older_than_ms(i64::MIN)
            .retain_last(1)
            .apply(tx)?;
        tx.commit(self.catalog.as_ref()).await?;
        Ok(expired)
    }

    /// The source positions (and views' clock) epoch `epoch` committed, from its commit in
    /// `custody.epochs`.
    pub async fn epoch_positions(&self, epoch: Epoch) -> Result<Option<SourcePositions>> {
        let table = self.table(tables::EPOCHS).await?;
        Ok(lineage(&table)
            .into_iter()
            .find(|s| snapshot_epoch(s) == Some(epoch))
            .and_then(|s| snapshot_positions(s)))
    }

    /// Deletes, in every table, the data files no snapshot of the table references any more
    /// and written for an epoch up to `upto` (so never a file of an epoch still being written
    /// or committed): the inputs of compactions whose snapshots have expired, and files of
    /// attempts a crash abandoned. Returns the number of files deleted.
    pub async fn remove_orphans(&self, upto: Epoch) -> Result<usize> {
        let mut removed = 0;
        for name in tables::ALL_TABLES {
            let table = self.table(name).await?;
            let metadata = table.metadata();
            let mut referenced: HashSet<String> = HashSet::new();
            let mut seen = HashSet::new();
            for snapshot in metadata.snapshots() {
                for path in crate::compaction::snapshot_files(&table, snapshot, &mut seen).await? {
                    referenced.insert(path);
                }
            }
            let dir = format!("{}/data", metadata.location().trim_end_matches('/'));
            for path in self.storage.list(&dir).await? {
                let file = path.rsplit('/').next().unwrap_or_default();
                let epoch = file
                    .strip_prefix("epoch-")
                    .or_else(|| file.strip_prefix("compact-"))
                    .and_then(|rest| rest.get(..12))
                    .and_then(|e| e.parse::<Epoch>().ok());
                if !file.ends_with(".parquet") || epoch.is_none_or(|e| e > upto) {
                    continue;
                }
                if !is_referenced(&referenced, &path) {
                    table.file_io().delete(&path).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The epochs of the files `<prefix><epoch><suffix>` in the snapshot directory, oldest
    /// first.
    fn snapshot_epochs(&self, prefix: &str, suffix: &str) -> Vec<Epoch> {
        let mut found: Vec<Epoch> = std::fs::read_dir(self.snapshot_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix(prefix)?
                    .strip_suffix(suffix)?
                    .parse()
                    .ok()
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// The path (relative to the warehouse) of the heads after epoch `epoch` ([`HeadsFile`]).
    pub fn heads_path(epoch: Epoch) -> String {
        format!("snapshots/heads-{epoch:012}.json")
    }

    /// Whether `bytes` of warehouse file `path` match the digest epoch `epoch`'s sealed
    /// manifest holds for it.
    async fn is_sealed(&self, epoch: Epoch, path: &str, bytes: &[u8]) -> Result<bool> {
        let digest = hex::encode(Sha256::digest(bytes));
        self.is_sealed_digest(epoch, path, &digest).await
    }

    /// Whether `digest` (SHA-256, hex) is the one epoch `epoch`'s sealed manifest holds for
    /// warehouse file `path`.
    async fn is_sealed_digest(&self, epoch: Epoch, path: &str, digest: &str) -> Result<bool> {
        let sealed = self
            .epoch_records(Some(epoch))
            .await?
            .pop()
            .and_then(|r| r.manifest())
            .and_then(|m| m.sha256.get(path).cloned());
        Ok(sealed.as_deref() == Some(digest))
    }

    /// The newest heads file at or before epoch `last` whose bytes match the digest its
    /// epoch's sealed manifest holds, with its epoch; none (and no heads) if there is none.
    async fn latest_heads(&self, last: Epoch) -> Result<(Option<Epoch>, HeadsFile)> {
        let found = self.snapshot_epochs("heads-", ".json");
        for epoch in found.into_iter().rev().filter(|e| *e <= last) {
            let path = Self::heads_path(epoch);
            let Ok(bytes) = std::fs::read(self.root.join(&path)) else {
                continue;
            };
            if !self.is_sealed(epoch, &path, &bytes).await? {
                tracing::warn!(%path, "heads file does not match its sealed digest; not used");
                continue;
            }
            match serde_json::from_slice(&bytes) {
                Ok(heads) => return Ok((Some(epoch), heads)),
                Err(e) => tracing::warn!(%path, error = %e, "unreadable heads file; not used"),
            }
        }
        Ok((None, HeadsFile::default()))
    }

    /// Starts writing epoch `epoch`'s view state: parts are written as they arrive, so the
    /// snapshot is never whole in memory.
    fn snapshot_file(&self, epoch: Epoch) -> Result<SnapshotFile> {
        std::fs::create_dir_all(self.snapshot_dir())?;
        let path = Self::snapshot_path(epoch);
        let tmp = self.root.join(format!("{path}.tmp"));
        Ok(SnapshotFile {
            out: std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?),
            tmp,
            path,
            digest: Sha256::new(),
        })
    }

    /// Removes all but the newest [`SNAPSHOTS_KEPT`] snapshots older than `epoch` (best
    /// effort: a file left behind is only disk).
    fn prune_snapshots(&self, epoch: Epoch) {
        // Every snapshot file (of any format) and coverage file, by epoch.
        let mut older: BTreeMap<Epoch, Vec<PathBuf>> = BTreeMap::new();
        for entry in std::fs::read_dir(self.snapshot_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let n = name
                .strip_prefix("epoch-")
                .or_else(|| name.strip_prefix("coverage-"))
                .or_else(|| name.strip_prefix("heads-"))
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<Epoch>().ok());
            if let Some(n) = n.filter(|n| *n < epoch) {
                older.entry(n).or_default().push(entry.path());
            }
        }
        let keep = older.len().saturating_sub(SNAPSHOTS_KEPT - 1);
        for files in older.into_values().take(keep) {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// The newest view state snapshot at or before epoch `last` whose bytes match the digest
    /// its epoch's sealed manifest holds: `(epoch, lines)`. A snapshot that does not match is
    /// passed over (with a warning); none means the views rebuild from every event.
    pub async fn latest_snapshot(&self, last: Epoch) -> Result<Option<ViewSnapshot>> {
        let found = self.snapshot_epochs("epoch-", &format!(".v{SNAPSHOT_FORMAT}.ndjson"));
        for epoch in found.into_iter().rev().filter(|e| *e <= last) {
            let path = Self::snapshot_path(epoch);
            // Read in chunks of whole lines, hashed as they are read: the file is never in
            // memory twice.
            let mut file = std::io::BufReader::new(std::fs::File::open(self.root.join(&path))?);
            let (mut chunks, mut digest) = (Vec::new(), Sha256::new());
            loop {
                let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK + 4096);
                (&mut file)
                    .take(SNAPSHOT_CHUNK as u64)
                    .read_to_end(&mut chunk)?;
                if chunk.is_empty() {
                    break;
                }
                if chunk.last() != Some(&b'\n') {
                    file.read_until(b'\n', &mut chunk)?;
                }
                digest.update(&chunk);
                chunks.push(chunk);
            }
            let digest = hex::encode(digest.finalize());
            if !self.is_sealed_digest(epoch, &path, &digest).await? {
                tracing::warn!(%path, "view state snapshot does not match its sealed digest; not used");
                continue;
            }
            return Ok(Some((epoch, chunks)));
        }
        Ok(None)
    }

    /// SHA-256 of a data file's bytes, hex.
    pub async fn file_sha256(&self, table: &Table, path: &str) -> Result<String> {
        data_file_sha256(table, path).await
    }

    /// Commits data files to `table` as one fast-append snapshot of `epoch`.
    async fn commit_files(
        &self,
        table: &Table,
        name: &str,
        epoch: Epoch,
        files: Vec<iceberg::spec::DataFile>,
        removed: &std::collections::HashSet<String>,
        extra_summary: &[(&str, String)],
    ) -> Result<()> {
        let mut summary = HashMap::from([
            (SUMMARY_EPOCH.to_string(), epoch.to_string()),
            (SUMMARY_COMMIT_ID.to_string(), format!("{epoch}:{name}")),
        ]);
        summary.extend(
            extra_summary
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone())),
        );
        if !removed.is_empty() {
            // A compaction rides on this commit: one snapshot adds and replaces.
            return crate::compaction::commit_replacing(
                &self.root.join("catalog.db"),
                table,
                name,
                files,
                removed,
                summary,
            )
            .await;
        }
        let tx = Transaction::new(table);
        // No duplicate check: it reads every manifest of the table, so a commit's cost would
        // grow with history. Data file names are unique (epoch and UUID), and an epoch is
        // appended to a table at most once (recovery looks for its commit id first).
        let tx = tx
            .fast_append()
            .with_check_duplicate(false)
            .add_data_files(files)
            .set_snapshot_properties(summary)
            .apply(tx)?;
        tx.commit(self.catalog.as_ref()).await?;
        Ok(())
    }
}

/// Iceberg's JSON form of `table`'s data files (the epoch manifest's entries).
pub fn data_files_json(table: &Table, files: &[iceberg::spec::DataFile]) -> Result<Vec<String>> {
    {
        let metadata = table.metadata();
        let partition_type = metadata
            .default_partition_spec()
            .partition_type(metadata.current_schema())?;
        files
            .iter()
            .map(|f| {
                Ok(iceberg::spec::serialize_data_file_to_json(
                    f.clone(),
                    &partition_type,
                    metadata.format_version(),
                )?)
            })
            .collect()
    }
}

/// Writes `batch` as Parquet data files (zstd) of `table` for `epoch`, named uniquely (epoch
/// and a UUID, so that writers on several workers never collide); nothing is visible until
/// they are committed.
pub async fn write_data_files(
    table: &Table,
    epoch: Epoch,
    batch: RecordBatch,
) -> Result<Vec<iceberg::spec::DataFile>> {
    write_parquet(table, &format!("epoch-{epoch:012}"), batch, None).await
}

/// Most rows in one data page (the writer checks the limit between batches of this size).
const PAGE_ROWS: usize = 512;

/// Writes `batch` as LZ4 Parquet data files of `table`, one set per partition of the table's
/// spec ([`crate::layout`]), named `<prefix>-<uuid>-…`; `max_row_group_rows` bounds the row
/// groups (the writer's default when `None`). Nothing is visible until committed.
pub(crate) async fn write_parquet(
    table: &Table,
    prefix: &str,
    batch: RecordBatch,
    max_row_group_rows: Option<usize>,
) -> Result<Vec<iceberg::spec::DataFile>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let arrow = Arc::new(schema_to_arrow_schema(&schema)?);
    let batch = RecordBatch::try_new(arrow, batch.columns().to_vec())?;
    // LZ4_RAW: no codec context to create per column chunk, and decompression several times
    // faster than zstd's; pages of at most PAGE_ROWS rows, so that a read of a few rows (an
    // API page, a session, a causal window) skips, by the page index, all but a page or two
    // of each column instead of decompressing a megabyte of payloads.
    let mut props = WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS);
    if let Some(rows) = max_row_group_rows {
        props = props.set_max_row_group_row_count(Some(rows));
    }
    let props = props.build();
    let location = DefaultLocationGenerator::new(metadata)?;
    let names = DefaultFileNameGenerator::new(
        prefix.to_string(),
        Some(uuid::Uuid::new_v4().to_string()),
        DataFileFormat::Parquet,
    );
    let spec = metadata.default_partition_spec();
    let mut out = Vec::new();
    for (key, part) in crate::layout::split_by_partition(spec, &schema, batch)? {
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            ParquetWriterBuilder::new(props.clone(), schema.clone()),
            table.file_io().clone(),
            location.clone(),
            names.clone(),
        );
        let mut writer = DataFileWriterBuilder::new(rolling).build(key).await?;
        writer.write(part).await?;
        for file in writer.close().await? {
            out.push(without_content_bounds(metadata, file)?);
        }
    }
    Ok(out)
}

/// `file` without the lower and upper bounds of its text and binary columns but `tenant_id`:
/// those bounds are values of rows (an event id, the start of a payload), and a data file's
/// entry is copied into manifests and into the epoch's row, which outlive the rows when
/// retention removes them. The bounds kept (tenants, positions, times, epochs) are what
/// pruning uses.
fn without_content_bounds(
    metadata: &iceberg::spec::TableMetadata,
    file: iceberg::spec::DataFile,
) -> Result<iceberg::spec::DataFile> {
    use iceberg::spec::{PrimitiveType, Type};
    let kept: HashSet<i32> = metadata
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .filter(|f| {
            f.name == "tenant_id"
                || !matches!(
                    *f.field_type,
                    Type::Primitive(
                        PrimitiveType::String | PrimitiveType::Binary | PrimitiveType::Fixed(_)
                    )
                )
        })
        .map(|f| f.id)
        .collect();
    let bounds = |b: &HashMap<i32, iceberg::spec::Datum>| -> HashMap<i32, iceberg::spec::Datum> {
        b.iter()
            .filter(|(id, _)| kept.contains(id))
            .map(|(id, d)| (*id, d.clone()))
            .collect()
    };
    // Rebuilt field by field (a trip through JSON would reorder the partition tuple).
    let mut out = iceberg::spec::DataFileBuilder::default();
    out.content(file.content_type())
        .file_path(file.file_path().to_string())
        .file_format(file.file_format())
        .partition(file.partition().clone())
        .record_count(file.record_count())
        .file_size_in_bytes(file.file_size_in_bytes())
        .column_sizes(file.column_sizes().clone())
        .value_counts(file.value_counts().clone())
        .null_value_counts(file.null_value_counts().clone())
        .nan_value_counts(file.nan_value_counts().clone())
        .lower_bounds(bounds(file.lower_bounds()))
        .upper_bounds(bounds(file.upper_bounds()))
        .key_metadata(file.key_metadata().map(<[u8]>::to_vec))
        .split_offsets(file.split_offsets().map(<[i64]>::to_vec))
        .equality_ids(file.equality_ids())
        .first_row_id(file.first_row_id())
        .partition_spec_id(metadata.default_partition_spec().spec_id())
        .referenced_data_file(file.referenced_data_file())
        .content_offset(file.content_offset())
        .content_size_in_bytes(file.content_size_in_bytes());
    if let Some(order) = file.sort_order_id() {
        out.sort_order_id(order);
    }
    out.build()
        .map_err(|e| Error::SinkStopped(format!("a data file's entry: {e}")))
}

/// SHA-256 of a data file's bytes, hex.
pub async fn data_file_sha256(table: &Table, path: &str) -> Result<String> {
    let bytes = table.file_io().new_input(path)?.read().await?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The first file under `dir` (recursively) with extension `ext`, if any.
/// Whether a listed file (`file:///…` or `s3://…`) is among the `referenced` locations
/// (local locations may have been recorded as bare paths).
fn is_referenced(referenced: &HashSet<String>, file: &str) -> bool {
    referenced.contains(file)
        || file
            .strip_prefix("file://")
            .is_some_and(|path| referenced.contains(path))
}

/// The rows of `batch` whose `epoch` column `wanted` accepts.
fn filter_epochs(batch: RecordBatch, wanted: &impl Fn(Epoch) -> bool) -> Result<RecordBatch> {
    let epochs = int_column(&batch, "epoch")?;
    let keep: arrow_array::BooleanArray = (0..batch.num_rows())
        .map(|i| Some(wanted(epochs.value(i) as Epoch)))
        .collect();
    Ok(arrow_select::filter::filter_record_batch(&batch, &keep)?)
}

fn decode_hash(text: &str, what: &str) -> Result<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash)
        .map_err(|e| Error::SinkStopped(format!("corrupt {what} in the lake: {e}")))?;
    Ok(hash)
}

/// One of Custody's own events as stored ([`Warehouse::events_of_types`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The tenant.
    pub tenant_id: String,
    /// Its position in the tenant's log.
    pub seq: u64,
    /// Its type, e.g. `LEGAL_HOLD_PLACED`.
    pub event_type: String,
    /// Its canonical payload.
    pub payload: String,
}

impl Warehouse {
    /// Every legal hold event (`LEGAL_HOLD_PLACED`, `LEGAL_HOLD_RELEASED`) of every tenant
    /// ([`crate::holds::active`] folds them).
    pub async fn hold_events(&self) -> Result<Vec<StoredEvent>> {
        self.events_of_types(None, &["LEGAL_HOLD_PLACED", "LEGAL_HOLD_RELEASED"])
            .await
    }

    /// Every stored event of one of `types` (of `tenant` only, if given), in no particular
    /// order: a scan of the events' `event_type` column (and of one tenant's partition).
    pub async fn events_of_types(
        &self,
        tenant: Option<&str>,
        types: &[&str],
    ) -> Result<Vec<StoredEvent>> {
        use iceberg::expr::Reference;
        use iceberg::spec::Datum;
        let table = self.table(tables::EVENTS).await?;
        if table.metadata().current_snapshot().is_none() {
            return Ok(Vec::new());
        }
        let mut filter =
            Reference::new("event_type").is_in(types.iter().map(|t| Datum::string(*t)));
        if let Some(tenant) = tenant {
            filter = filter.and(Reference::new("tenant_id").equal_to(Datum::string(tenant)));
        }
        let mut stream = table
            .scan()
            .select(["tenant_id", "seq", "event_type", "payload"])
            .with_filter(filter)
            .build()?
            .to_arrow()
            .await?;
        let mut out = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            let tenant_ids = string_column(&batch, "tenant_id")?;
            let seq = int_column(&batch, "seq")?;
            let event_type = string_column(&batch, "event_type")?;
            let payload = string_column(&batch, "payload")?;
            for i in 0..batch.num_rows() {
                // The filter prunes; the rows of a file it could not prune are checked here.
                let t = event_type.value(i);
                if !types.contains(&t) || tenant.is_some_and(|want| want != tenant_ids.value(i)) {
                    continue;
                }
                out.push(StoredEvent {
                    tenant_id: tenant_ids.value(i).to_string(),
                    seq: seq.value(i) as u64,
                    event_type: t.to_string(),
                    payload: payload.value(i).to_string(),
                });
            }
        }
        Ok(out)
    }

    /// Every row of `custody.config_log`, in epoch order (none in a warehouse written before
    /// it existed).
    pub async fn config_log(&self) -> Result<Vec<crate::config_log::ConfigEntry>> {
        let ident = TableIdent::new(
            NamespaceIdent::new(NAMESPACE.to_string()),
            tables::CONFIG_LOG.to_string(),
        );
        if !self.catalog.table_exists(&ident).await? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for batch in self.scan(tables::CONFIG_LOG).await? {
            let epoch = int_column(&batch, "epoch")?;
            let recorded_at = string_column(&batch, "recorded_at")?;
            let digest = string_column(&batch, "digest")?;
            let previous = string_column(&batch, "previous_digest")?;
            let changed = string_column(&batch, "changed")?;
            let config = string_column(&batch, "config")?;
            let recorded_by = string_column(&batch, "recorded_by")?;
            for i in 0..batch.num_rows() {
                out.push(crate::config_log::ConfigEntry {
                    epoch: epoch.value(i) as u64,
                    recorded_at: recorded_at.value(i).to_string(),
                    digest: digest.value(i).to_string(),
                    previous_digest: previous.is_valid(i).then(|| previous.value(i).to_string()),
                    changed: serde_json::from_str(changed.value(i)).unwrap_or_default(),
                    config: config.value(i).to_string(),
                    recorded_by: recorded_by.value(i).to_string(),
                });
            }
        }
        out.sort_by_key(|e| e.epoch);
        Ok(out)
    }

    /// Every row of `custody.expired` (none in a warehouse written before it existed).
    pub async fn expired_leaves(&self) -> Result<Vec<crate::verify::ExpiredLeaf>> {
        let ident = TableIdent::new(
            NamespaceIdent::new(NAMESPACE.to_string()),
            tables::EXPIRED.to_string(),
        );
        if !self.catalog.table_exists(&ident).await? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for batch in self.scan(tables::EXPIRED).await? {
            let tenant = string_column(&batch, "tenant_id")?;
            let seq = int_column(&batch, "seq")?;
            let leaf = fixed_column(&batch, "leaf_hash", 32)?;
            for i in 0..batch.num_rows() {
                out.push(crate::verify::ExpiredLeaf {
                    tenant_id: tenant.value(i).to_string(),
                    seq: seq.value(i),
                    leaf_hash: hex::encode(leaf.value(i)),
                });
            }
        }
        out.sort_by(|a, b| (&a.tenant_id, a.seq).cmp(&(&b.tenant_id, b.seq)));
        Ok(out)
    }

    /// Every row of `custody.events`, for verification and export, in `(tenant, seq)` order,
    /// each linked to the row before it ([`link_rows`]).
    pub async fn event_rows(&self) -> Result<Vec<EventRow>> {
        let mut rows = Vec::new();
        for batch in self.scan(tables::EVENTS).await? {
            event_rows_of(&batch, &mut rows)?;
        }
        link_rows(&mut rows);
        Ok(rows)
    }

    /// Every event committed after epoch `after` (every event if `None`) up to `up_to`, as the
    /// views see it, with its epoch, in epoch order, to rebuild their state after a restart:
    /// the envelope of each event and its payload's facts (not the payload text, which keeps
    /// memory to the envelope). Chain fields are zero.
    pub async fn view_inputs(
        &self,
        after: Option<Epoch>,
        up_to: Epoch,
    ) -> Result<Vec<(Epoch, ChainedEvent)>> {
        let batches = self.scan_after(tables::EVENTS, after).await?;
        let mut out = Vec::new();
        for batch in batches {
            let c = EventColumns::of(&batch)?;
            for i in 0..batch.num_rows() {
                // A half-committed epoch is replayed, and seen by the views then.
                if c.epoch.value(i) as Epoch > up_to {
                    continue;
                }
                let Some(event_type) = custody_schemas::EventType::parse(c.event_type.value(i))
                else {
                    continue;
                };
                let time = c.time.value(i);
                let event = custody_schemas::AuditEvent {
                    event_id: c.event_id(i)?,
                    schema_version: c.version.value(i).to_string(),
                    tenant_id: custody_schemas::TenantId::new(c.tenant.value(i)),
                    session_id: c.session.value(i).to_string(),
                    agent_id: c.agent.value(i).to_string(),
                    user_id: opt_string(c.user, i),
                    event_type,
                    timestamp: format_rfc3339(time),
                    timestamp_us: time,
                    parent_event_id: c.parent_id(i)?,
                    payload: String::new(),
                    facts: custody_schemas::PayloadFacts::of_text(event_type, c.payload.value(i)),
                    previous_event_hash: None,
                };
                out.push((
                    c.epoch.value(i) as Epoch,
                    ChainedEvent {
                        seq: c.seq.value(i) as u64,
                        ..ChainedEvent::unchained(event)
                    },
                ));
            }
        }
        // In epoch order, as they were first seen.
        out.sort_by_key(|(epoch, e)| (*epoch, e.partition, e.offset));
        Ok(out)
    }

    /// Hands `f` what the proof store keeps of every event committed after epoch `after` (of
    /// every event if `None`), the leaves recomputed from the rows, one batch of rows at a
    /// time (memory does not grow with the events); returns how many there were.
    pub async fn each_leaf(
        &self,
        after: Option<Epoch>,
        mut f: impl FnMut(crate::proof_store::StoredEvent<'_>) -> std::io::Result<()>,
    ) -> Result<u64> {
        use iceberg::expr::Reference;
        use iceberg::spec::Datum;
        let table = self.table(tables::EVENTS).await?;
        if table.metadata().current_snapshot().is_none() {
            return Ok(0);
        }
        let mut scan = table.scan();
        if let Some(after) = after {
            scan =
                scan.with_filter(Reference::new("epoch").greater_than(Datum::long(after as i64)));
        }
        let mut stream = scan.build()?.to_arrow().await?;
        let mut n = 0u64;
        while let Some(batch) = stream.try_next().await? {
            let c = EventColumns::of(&batch)?;
            for i in 0..batch.num_rows() {
                let event_id = c.event_id(i)?;
                f(crate::proof_store::StoredEvent {
                    tenant: c.tenant.value(i),
                    seq: c.seq.value(i) as u64,
                    event_id: &event_id,
                    session_id: c.session.value(i),
                    leaf: c.leaf(i)?,
                    hash: c.hash_at(i)?,
                })?;
            }
            n += batch.num_rows() as u64;
        }
        Ok(n)
    }

    /// The sealed vault entry of `reference` for `tenant`: a token (`<EMAIL:tok_…>`), a
    /// content commitment (`<CONTENT:tok_…>`), a field's content (`event_id#field`) or a
    /// quarantined record (`quarantine:…`).
    pub async fn vault_entry(&self, tenant: &str, reference: &str) -> Result<Option<VaultEntry>> {
        let content_by_commitment = reference.starts_with("<CONTENT:");
        for batch in self.scan(tables::VAULT).await? {
            let (tenants, kinds, refs, keys, sealed) = (
                string_column(&batch, "tenant_id")?,
                string_column(&batch, "kind")?,
                string_column(&batch, "ref")?,
                string_column(&batch, "key_id")?,
                string_column(&batch, "sealed")?,
            );
            for i in 0..batch.num_rows() {
                if tenants.value(i) != tenant {
                    continue;
                }
                let stored = refs.value(i);
                let matches = stored == reference
                    || (kinds.value(i) == "content"
                        && if content_by_commitment {
                            stored.rsplit_once('#').is_some_and(|(_, c)| c == reference)
                        } else {
                            stored
                                .strip_prefix(reference)
                                .is_some_and(|rest| rest.starts_with("#<CONTENT:"))
                        });
                if matches {
                    let bytes = hex::decode(sealed.value(i))
                        .map_err(|e| Error::SinkStopped(format!("corrupt vault entry: {e}")))?;
                    return Ok(Some(VaultEntry {
                        kind: kinds.value(i).to_string(),
                        reference: stored.to_string(),
                        key_id: keys.value(i).to_string(),
                        sealed: bytes,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Every row of `custody.checkpoints`.
    pub async fn checkpoint_rows(&self) -> Result<Vec<Checkpoint>> {
        self.checkpoint_rows_of(None).await
    }

    /// Rows of `name`, only those of `epoch` if given (pruned by file statistics).
    /// Reads the rows of `name` with an epoch after `after` (every row for `None`).
    async fn scan_after(&self, name: &str, after: Option<Epoch>) -> Result<Vec<RecordBatch>> {
        match after {
            None => self.scan(name).await,
            Some(after) => self.scan_epochs(name, after + 1, None, |e| e > after).await,
        }
    }

    /// Reads the rows of `name` of epoch `epoch` (every row for `None`).
    async fn scan_epoch(&self, name: &str, epoch: Option<Epoch>) -> Result<Vec<RecordBatch>> {
        match epoch {
            None => self.scan(name).await,
            Some(epoch) => {
                self.scan_epochs(name, epoch, Some(epoch), |e| e == epoch)
                    .await
            }
        }
    }

    /// The rows of `name` whose epoch `wanted` accepts: all of them are in `from..=to`.
    ///
    /// Reads only the data files whose `epoch` column bounds (from the manifests) meet that
    /// range: an epoch's own files hold that epoch only, and a compaction's files the range
    /// of the epochs merged, so a restart's reads do not grow with the epochs ever committed
    /// (as a filtered scan's planning would not either, but it also decodes every file's
    /// footer). A file without bounds is read. Rows are then filtered by `wanted`.
    async fn scan_epochs(
        &self,
        name: &str,
        from: Epoch,
        to: Option<Epoch>,
        wanted: impl Fn(Epoch) -> bool,
    ) -> Result<Vec<RecordBatch>> {
        use iceberg::spec::{ManifestList, PrimitiveLiteral};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let table = self.table(name).await?;
        let metadata = table.metadata();
        let Some(current) = metadata.current_snapshot() else {
            return Ok(Vec::new());
        };
        let Some(epoch_field) = metadata.current_schema().field_by_name("epoch") else {
            return Err(Error::SinkStopped(format!(
                "custody.{name} has no epoch column"
            )));
        };
        let field = epoch_field.id;
        let bound = |d: Option<&iceberg::spec::Datum>| match d.map(|d| d.literal()) {
            Some(PrimitiveLiteral::Long(v)) => Some(*v),
            Some(PrimitiveLiteral::Int(v)) => Some(i64::from(*v)),
            _ => None,
        };
        let io = table.file_io();
        let list = io.new_input(current.manifest_list())?.read().await?;
        let list = ManifestList::parse_with_version(&list, metadata.format_version())?;
        let mut out = Vec::new();
        for manifest in list.entries() {
            for entry in manifest.load_manifest(io).await?.entries() {
                if !entry.is_alive() {
                    continue;
                }
                let file = entry.data_file();
                let (lo, hi) = (
                    bound(file.lower_bounds().get(&field)),
                    bound(file.upper_bounds().get(&field)),
                );
                if hi.is_some_and(|hi| hi < from as i64)
                    || matches!((lo, to), (Some(lo), Some(to)) if lo > to as i64)
                {
                    continue;
                }
                let bytes = io.new_input(file.file_path())?.read().await?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
                for batch in reader {
                    out.push(filter_epochs(batch?, &wanted)?);
                }
            }
        }
        Ok(out)
    }

    /// The data files of `name`'s current snapshot, each with the SHA-256 of its bytes.
    pub async fn data_file_digests(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let table = self.table(name).await?;
        let mut out = BTreeMap::new();
        if table.metadata().current_snapshot().is_none() {
            return Ok(out);
        }
        let tasks: Vec<_> = table
            .scan()
            .build()?
            .plan_files()
            .await?
            .try_collect()
            .await?;
        for task in tasks {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                out.entry(task.data_file_path().to_string())
            {
                let digest = self.file_sha256(&table, slot.key()).await?;
                slot.insert(digest);
            }
        }
        Ok(out)
    }

    /// Every row of `custody.epochs` (only `epoch`'s if given), in epoch order.
    pub async fn epoch_records(&self, epoch: Option<Epoch>) -> Result<Vec<EpochRecord>> {
        let mut out = Vec::new();
        for batch in self.scan_epoch(tables::EPOCHS, epoch).await? {
            let s = |name| string_column(&batch, name);
            let i64s = |name| int_column(&batch, name);
            let (sink, source, positions, digest, files, registry, seal) = (
                s("sink_id")?,
                s("source")?,
                s("positions")?,
                s("checkpoint_digest")?,
                s("files")?,
                s("registry")?,
                s("seal")?,
            );
            let (epochs, events, quarantined, checkpoints) = (
                i64s("epoch")?,
                i64s("events")?,
                i64s("quarantined")?,
                i64s("checkpoints")?,
            );
            let committed = batch
                .column_by_name("committed_at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| Error::SinkStopped("custody.epochs.committed_at".into()))?;
            for i in 0..batch.num_rows() {
                out.push(EpochRecord {
                    epoch: epochs.value(i) as Epoch,
                    sink_id: sink.value(i).to_string(),
                    source: source.value(i).to_string(),
                    positions: positions.value(i).to_string(),
                    events: events.value(i),
                    quarantined: quarantined.value(i),
                    checkpoints: checkpoints.value(i),
                    checkpoint_digest: digest.value(i).to_string(),
                    committed_at_us: committed.value(i),
                    files: files.value(i).to_string(),
                    registry: registry.value(i).to_string(),
                    seal: seal.value(i).to_string(),
                });
            }
        }
        out.retain(|r| epoch.is_none_or(|e| r.epoch == e));
        out.sort_by_key(|r| r.epoch);
        Ok(out)
    }

    /// The checkpoints (only those of `epoch` if given).
    pub async fn checkpoint_rows_of(&self, epoch: Option<Epoch>) -> Result<Vec<Checkpoint>> {
        let mut rows = checkpoint_rows(self.scan_epoch(tables::CHECKPOINTS, epoch).await?)?;
        rows.retain(|c| epoch.is_none_or(|e| c.epoch == e));
        Ok(rows)
    }
}

/// The checkpoints in `batches` of `custody.checkpoints`.
pub fn checkpoint_rows(batches: Vec<RecordBatch>) -> Result<Vec<Checkpoint>> {
    let mut rows = Vec::new();
    {
        for batch in batches {
            let s = |name| string_column(&batch, name);
            let (tenant, root, head, signed_at, key_id, signature, prev) = (
                s("tenant_id")?,
                s("root")?,
                s("chain_head")?,
                s("signed_at")?,
                s("key_id")?,
                s("signature")?,
                s("prev_checkpoint")?,
            );
            let (size, epoch) = (
                int_column(&batch, "tree_size")?,
                int_column(&batch, "epoch")?,
            );
            for i in 0..batch.num_rows() {
                rows.push(Checkpoint {
                    tenant_id: tenant.value(i).to_string(),
                    tree_size: size.value(i) as u64,
                    root: root.value(i).to_string(),
                    chain_head: head.value(i).to_string(),
                    epoch: epoch.value(i) as u64,
                    signed_at: signed_at.value(i).to_string(),
                    key_id: key_id.value(i).to_string(),
                    signature: signature.value(i).to_string(),
                    prev_checkpoint: prev.value(i).to_string(),
                });
            }
        }
    }
    Ok(rows)
}

/// Filters and page of an event query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events after this position in the chain.
    pub after_seq: Option<u64>,
    /// Only this event type (wire name).
    pub event_type: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only these event ids.
    pub event_ids: Option<Vec<String>>,
    /// Only these positions in the chain.
    pub seqs: Option<Vec<u64>>,
    /// Event time at or after (µs since the epoch).
    pub from_us: Option<i64>,
    /// Event time before (µs since the epoch).
    pub to_us: Option<i64>,
    /// Only model decisions by this model version (`model_version` of the payload).
    pub model_version: Option<String>,
    /// Page size.
    pub limit: usize,
    /// The tenant's chain length, when known (its latest checkpoint's tree size): a page is
    /// then read in windows of positions, each pruned to the row groups holding it, instead
    /// of sorting every event of the tenant.
    pub end_seq: Option<u64>,
    /// Only positions in `start..end` (a window of a page).
    pub seq_range: Option<(u64, u64)>,
    /// Leave `prev_hash` empty where the row before is not among those read (saves a read
    /// when only the rows' contents are wanted).
    pub unlinked: bool,
}

impl EventQuery {
    /// Whether `r`, a row of `tenant`, passes every filter (the page aside).
    pub fn matches(&self, tenant: &str, r: &EventRow) -> bool {
        let time = custody_schemas::time::parse_rfc3339(&r.event_time).unwrap_or(i64::MIN);
        r.tenant_id == tenant
            && self.after_seq.is_none_or(|a| r.seq as u64 > a)
            && self.event_type.as_ref().is_none_or(|t| *t == r.event_type)
            && self.agent_id.as_ref().is_none_or(|a| *a == r.agent_id)
            && self
                .user_id
                .as_ref()
                .is_none_or(|u| r.user_id.as_ref() == Some(u))
            && self.session_id.as_ref().is_none_or(|s| *s == r.session_id)
            && self
                .event_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&r.event_id))
            && self
                .seqs
                .as_ref()
                .is_none_or(|seqs| seqs.contains(&(r.seq as u64)))
            && self
                .seq_range
                .is_none_or(|(start, stop)| (start..stop).contains(&(r.seq as u64)))
            && self.from_us.is_none_or(|f| time >= f)
            && self.to_us.is_none_or(|t| time < t)
            && self.model_version.as_ref().is_none_or(|v| {
                let facts = custody_schemas::event::EventType::parse(&r.event_type)
                    .map(|t| custody_schemas::event::PayloadFacts::of_text(t, &r.payload));
                matches!(facts, Some(custody_schemas::event::PayloadFacts::Model {
                    model_version, ..
                }) if model_version == *v)
            })
    }
}

/// The columns of a batch of `custody.events` (every column selected).
pub(crate) struct EventColumns<'a> {
    pub(crate) tenant: &'a StringArray,
    pub(crate) seq: &'a Int64Array,
    event_uuid: &'a FixedSizeBinaryArray,
    event_id_text: &'a StringArray,
    version: &'a StringArray,
    pub(crate) event_type: &'a StringArray,
    pub(crate) session: &'a StringArray,
    pub(crate) agent: &'a StringArray,
    user: &'a StringArray,
    pub(crate) time: &'a TimestampMicrosecondArray,
    parent_uuid: &'a FixedSizeBinaryArray,
    parent_id_text: &'a StringArray,
    payload: &'a StringArray,
    hash: &'a FixedSizeBinaryArray,
    epoch: &'a Int64Array,
}

impl<'a> EventColumns<'a> {
    pub(crate) fn of(batch: &'a RecordBatch) -> Result<Self> {
        let s = |name| string_column(batch, name);
        Ok(EventColumns {
            tenant: s("tenant_id")?,
            seq: int_column(batch, "seq")?,
            event_uuid: fixed_column(batch, "event_uuid", 16)?,
            event_id_text: s("event_id_text")?,
            version: s("schema_version")?,
            event_type: s("event_type")?,
            session: s("session_id")?,
            agent: s("agent_id")?,
            user: s("user_id")?,
            time: batch
                .column_by_name("event_time")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .ok_or_else(|| Error::SinkStopped("column \"event_time\" missing".into()))?,
            parent_uuid: fixed_column(batch, "parent_uuid", 16)?,
            parent_id_text: s("parent_id_text")?,
            payload: s("payload")?,
            hash: fixed_column(batch, "hash", 32)?,
            epoch: int_column(batch, "epoch")?,
        })
    }

    /// The id in `uuid` or `text` of row `i`, if any.
    fn id(uuid: &FixedSizeBinaryArray, text: &StringArray, i: usize) -> Result<Option<String>> {
        let (u, t) = (
            (!uuid.is_null(i)).then(|| uuid.value(i)),
            (!text.is_null(i)).then(|| text.value(i)),
        );
        match (u, t) {
            (None, None) => Ok(None),
            (u, t) => custody_schemas::id::id_from_columns(u, t)
                .map(Some)
                .ok_or_else(|| {
                    Error::WarehouseDamaged(format!(
                        "custody.events row {i} holds an id both as a UUID and as text"
                    ))
                }),
        }
    }

    pub(crate) fn event_id(&self, i: usize) -> Result<String> {
        Self::id(self.event_uuid, self.event_id_text, i)?.ok_or_else(|| {
            Error::WarehouseDamaged(format!("custody.events row {i} has no event id"))
        })
    }

    fn parent_id(&self, i: usize) -> Result<Option<String>> {
        Self::id(self.parent_uuid, self.parent_id_text, i)
    }

    /// The chain hash stored in row `i`.
    fn hash_at(&self, i: usize) -> Result<Hash> {
        self.hash.value(i).try_into().map_err(|_| {
            Error::WarehouseDamaged(format!("custody.events row {i} has a short hash"))
        })
    }

    /// The leaf hash of row `i`, recomputed from its content.
    pub(crate) fn leaf(&self, i: usize) -> Result<Hash> {
        let seq = u64::try_from(self.seq.value(i)).map_err(|_| {
            Error::WarehouseDamaged(format!("custody.events row {i} has a negative seq"))
        })?;
        let (event_id, parent) = (self.event_id(i)?, self.parent_id(i)?);
        let timestamp = custody_schemas::time::rfc3339(self.time.value(i));
        Ok(crate::hashing::canonical_leaf(
            &crate::hashing::CanonicalFields {
                agent_id: self.agent.value(i),
                event_id: &event_id,
                event_type: self.event_type.value(i),
                parent_event_id: parent.as_deref(),
                payload_json: self.payload.value(i),
                schema_version: self.version.value(i),
                seq,
                session_id: self.session.value(i),
                tenant_id: self.tenant.value(i),
                timestamp: timestamp.as_str(),
                user_id: (!self.user.is_null(i)).then(|| self.user.value(i)),
            },
        ))
    }
}

/// What the proof store keeps of an event, read back from the lake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    /// The tenant.
    pub tenant: String,
    /// Position in the tenant's chain.
    pub seq: u64,
    /// The event id.
    pub event_id: String,
    /// Its session.
    pub session_id: String,
    /// Its Merkle leaf (recomputed from the row).
    pub leaf: Hash,
    /// Its chain hash.
    pub hash: Hash,
}

impl LeafEntry {
    /// The entry as the proof store takes it.
    pub fn stored(&self) -> crate::proof_store::StoredEvent<'_> {
        crate::proof_store::StoredEvent {
            tenant: &self.tenant,
            seq: self.seq,
            event_id: &self.event_id,
            session_id: &self.session_id,
            leaf: self.leaf,
            hash: self.hash,
        }
    }
}

/// The event rows of `batches` (of `custody.events`), each linked to the row before it in
/// the same tenant's chain when that row is among them ([`link_rows`]); the others'
/// `prev_hash` is left empty for the caller to fill.
pub fn event_rows(batches: &[RecordBatch]) -> Result<Vec<EventRow>> {
    let mut rows = Vec::new();
    for batch in batches {
        event_rows_of(batch, &mut rows)?;
    }
    link_rows(&mut rows);
    Ok(rows)
}

/// Appends the `EventRow`s of a batch of `custody.events`: the leaf hash recomputed, the
/// previous hash left empty (see [`link_rows`]).
fn event_rows_of(batch: &RecordBatch, rows: &mut Vec<EventRow>) -> Result<()> {
    let c = EventColumns::of(batch)?;
    for i in 0..batch.num_rows() {
        rows.push(EventRow {
            tenant_id: c.tenant.value(i).to_string(),
            seq: c.seq.value(i),
            event_id: c.event_id(i)?,
            schema_version: c.version.value(i).to_string(),
            event_type: c.event_type.value(i).to_string(),
            session_id: c.session.value(i).to_string(),
            agent_id: c.agent.value(i).to_string(),
            user_id: opt_string(c.user, i),
            event_time: format_rfc3339(c.time.value(i)),
            parent_event_id: c.parent_id(i)?,
            payload: c.payload.value(i).to_string(),
            prev_hash: String::new(),
            hash: hex::encode(c.hash.value(i)),
            leaf_hash: hex::encode(c.leaf(i)?),
        });
    }
    Ok(())
}

/// Sorts `rows` by `(tenant, seq)` and sets the `prev_hash` of each row whose predecessor is
/// there: the previous row's `hash` (zeros at seq 0). Two rows with one `seq` (a fork) link to
/// the same predecessor. Rows whose predecessor is missing keep an empty `prev_hash`.
pub fn link_rows(rows: &mut [EventRow]) {
    rows.sort_by(|a, b| (&a.tenant_id, a.seq).cmp(&(&b.tenant_id, b.seq)));
    let mut before: Option<(usize, i64)> = None; // (index of the last row of the previous seq, seq)
    for i in 0..rows.len() {
        if i > 0 && rows[i].tenant_id != rows[i - 1].tenant_id {
            before = None;
        }
        if i > 0 && rows[i - 1].tenant_id == rows[i].tenant_id && rows[i - 1].seq < rows[i].seq {
            before = Some((i - 1, rows[i - 1].seq));
        }
        let seq = rows[i].seq;
        rows[i].prev_hash = match before {
            _ if seq == 0 => hex::encode([0u8; 32]),
            Some((j, s)) if s == seq - 1 => rows[j].hash.clone(),
            _ => String::new(),
        };
    }
}

/// Row `i` of a nullable string column.
fn opt_string(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

fn fixed_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    width: i32,
) -> Result<&'a FixedSizeBinaryArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .filter(|a| a.value_length() == width)
        .ok_or_else(|| Error::SinkStopped(format!("column {name:?} missing or not fixed({width})")))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::SinkStopped(format!("column {name:?} missing or not a string")))
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| Error::SinkStopped(format!("column {name:?} missing or not an int64")))
}

/// The writer side of the sink; owned by the sink thread.
pub struct IcebergSink {
    warehouse: Warehouse,
    sink_id: String,
    metrics: Metrics,
    pending: BTreeMap<Epoch, Vec<SinkRecord>>,
    /// Events the workers wrote, by epoch.
    written: BTreeMap<Epoch, Vec<EventFiles>>,
    /// Snapshots of the views' state being written, by epoch.
    snapshots: BTreeMap<Epoch, SnapshotFile>,
    on_commit: Option<CommitHook>,
    verifier: Option<ContinuousVerifier>,
    dead_letter: Option<DeadLetter>,
    keystore: Option<Keystore>,
    seal_quarantine: bool,
    sealer: Option<Sealer>,
    /// The heads after the last committed epoch, kept to write beside each snapshot.
    heads: Option<HeadsFile>,
    /// Compaction with epochs' commits, when on.
    compact: Option<CompactSchedule>,
    /// A retention application to commit with the next epoch ([`crate::retention`]).
    retention: Option<crate::retention::Job>,
    /// The configuration run under, recorded with the first epoch if it changed
    /// ([`crate::config_log`]).
    config: Option<crate::config_log::ConfigEvidence>,
}

/// Compacting every `every_epochs` epochs under `policy`.
#[derive(Clone, Copy, Debug)]
pub struct CompactSchedule {
    /// Epochs between compactions.
    pub every_epochs: u64,
    /// What to merge.
    pub policy: crate::compaction::Policy,
    epochs_since: u64,
}

impl CompactSchedule {
    /// Compacting every `every_epochs` epochs (the first with the first epoch committed, so a
    /// restart or `custody compact` catches up at once).
    pub fn new(every_epochs: u64, policy: crate::compaction::Policy) -> Self {
        CompactSchedule {
            every_epochs: every_epochs.max(1),
            policy,
            epochs_since: every_epochs.max(1) - 1,
        }
    }
}

/// A view state snapshot being written (`<path>.tmp` until it is finished).
struct SnapshotFile {
    out: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    path: String,
    digest: Sha256,
}

impl SnapshotFile {
    /// Appends JSON lines (one or more, the last newline optional).
    fn write(&mut self, lines: &[u8]) -> Result<()> {
        use std::io::Write;
        self.out.write_all(lines)?;
        self.digest.update(lines);
        if lines.last() != Some(&b'\n') {
            self.out.write_all(b"\n")?;
            self.digest.update(b"\n");
        }
        Ok(())
    }

    /// Puts the file in place; its path relative to the warehouse and its SHA-256, hex.
    fn finish(self, root: &Path) -> Result<(String, String)> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        std::fs::rename(&self.tmp, root.join(&self.path))?;
        Ok((self.path, hex::encode(self.digest.finalize())))
    }
}

/// Signs each committed epoch ([`crate::seal`]) and records the last seal outside the
/// warehouse.
#[derive(Debug)]
pub struct Sealer {
    /// The signing key.
    pub signer: crate::checkpoint::Signer,
    /// Hash of the last committed seal (zeros for none).
    pub prev: Hash,
    /// The whole tenant registry as of the last committed epoch.
    pub registry: crate::seal::Registry,
    /// Where the last seal is recorded outside the warehouse ([`Watermark`]), if anywhere.
    pub watermark: Option<PathBuf>,
}

/// The last epoch this signer sealed, kept beside the key (outside the warehouse): a
/// warehouse that ends before it, or holds another seal for it, was rolled back or replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The epoch.
    pub epoch: Epoch,
    /// Its seal's hash, hex.
    pub seal: String,
}

impl Watermark {
    /// Reads the watermark file; `None` if there is none yet.
    pub fn read(path: &Path) -> Result<Option<Watermark>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::WarehouseDamaged(format!("{} is unreadable: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the watermark file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// One entry of `custody.vault`, as read back for re-identification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEntry {
    /// `token`, `content` or `quarantine`.
    pub kind: String,
    /// Its full reference (the associated data it was sealed with).
    pub reference: String,
    /// The data key that sealed it.
    pub key_id: String,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub sealed: Vec<u8>,
}

impl VaultEntry {
    /// The keystore subject of the data key that sealed it: the token's own key for a token,
    /// the tenant's content key (`""`) otherwise.
    pub fn key_subject(&self) -> &str {
        if self.kind == "token" {
            &self.reference
        } else {
            ""
        }
    }
}

/// One sealed vault row.
struct VaultRow {
    tenant_id: String,
    kind: &'static str,
    reference: String,
    key_id: String,
    sealed: String,
}

/// What one committed epoch contained, for live serving.
#[derive(Debug)]
pub struct CommitNotice<'a> {
    /// The epoch.
    pub epoch: Epoch,
    /// Its events, in `(tenant, seq)` order per tenant.
    pub events: &'a [WrittenEvent],
    /// Its checkpoints.
    pub checkpoints: &'a [Checkpoint],
    /// Its view changes.
    pub views: &'a [ViewUpdate],
    /// Whether the views' state was snapshotted with it.
    pub snapshot: bool,
}

/// Called once an epoch is committed.
pub type CommitHook = Box<dyn FnMut(&CommitNotice<'_>) + Send>;

impl IcebergSink {
    /// A sink writing into `warehouse`; `sink_id` names this pipeline in commit ids.
    pub fn new(warehouse: Warehouse, sink_id: impl Into<String>, metrics: Metrics) -> Self {
        IcebergSink {
            warehouse,
            sink_id: sink_id.into(),
            metrics,
            pending: BTreeMap::new(),
            written: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            on_commit: None,
            verifier: None,
            dead_letter: None,
            keystore: None,
            seal_quarantine: false,
            sealer: None,
            heads: None,
            compact: None,
            retention: None,
            config: None,
        }
    }

    /// The warehouse written to.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// Compacts the tables' small files with epochs' commits ([`crate::compaction`]).
    pub fn with_compaction(self, schedule: CompactSchedule) -> Self {
        self.with_compaction_opt(Some(schedule))
    }

    /// [`Self::with_compaction`], or none.
    pub fn with_compaction_opt(mut self, schedule: Option<CompactSchedule>) -> Self {
        self.compact = schedule;
        self
    }

    /// Commits `plan` with the next epoch (which carries its `RETENTION_APPLIED` events): the
    /// rows it removes go, their leaves are kept, and the views' changelog is replaced by the
    /// epoch's changes (the views rebuilt from the retained events).
    pub fn with_retention(mut self, job: Option<crate::retention::Job>) -> Self {
        self.retention = job;
        self
    }

    /// Records `evidence` in `custody.config_log` with the first epoch committed, unless it is
    /// the configuration last recorded ([`crate::config_log`]).
    pub fn with_config(mut self, evidence: Option<crate::config_log::ConfigEvidence>) -> Self {
        self.config = evidence;
        self
    }

    /// Keeps every chain and emitter head, starting from `heads`, and writes them beside
    /// each views' snapshot ([`HeadsFile`]) so a restart need not read the heads' history.
    pub fn with_heads(mut self, heads: HeadsFile) -> Self {
        self.heads = Some(heads);
        self
    }

    /// Seals every committed epoch with `sealer` ([`crate::seal`]).
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Seals the events' vault items into `custody.vault` with keys from `keystore`; with
    /// `seal_quarantine`, also the redacted copy of quarantined input attributed to a tenant
    /// (the quarantine row then says where it went), so erasure covers it too.
    pub fn with_vault(mut self, keystore: Option<Keystore>, seal_quarantine: bool) -> Self {
        self.keystore = keystore;
        self.seal_quarantine = seal_quarantine;
        self
    }

    /// Publishes each epoch's quarantined raw records to a dead-letter topic before committing.
    pub fn with_dead_letter(mut self, dead_letter: Option<DeadLetter>) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    /// Checks every epoch with `verifier` before writing it; problems raise alerts
    /// (`custody_verifier_alerts_total{kind}` and an error log), the data is still written.
    pub fn with_verifier(mut self, verifier: ContinuousVerifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Calls `hook` with the view changes of every committed epoch.
    pub fn on_commit(mut self, hook: CommitHook) -> Self {
        self.on_commit = Some(hook);
        self
    }

    /// Runs until the channel closes or a commit fails; reports each committed epoch.
    pub async fn run(mut self, rx: Receiver<SinkMsg>, committed: Sender<Committed>) -> Result<()> {
        // The receiver is a std channel: hand the blocking receive to the runtime's blocking pool
        // one message at a time would be overkill here, the thread is dedicated to the sink.
        while let Ok(msg) = rx.recv() {
            match msg {
                SinkMsg::Records(epoch, records) => {
                    let mut rest = Vec::with_capacity(records.len());
                    for record in records {
                        match record {
                            SinkRecord::ViewState(lines) => self.write_state(epoch, &lines)?,
                            other => rest.push(other),
                        }
                    }
                    self.pending.entry(epoch).or_default().extend(rest);
                }
                SinkMsg::Events(epoch, files) => {
                    self.written.entry(epoch).or_default().push(files);
                }
                SinkMsg::WriterFailed(epoch, why) => {
                    return Err(Error::SinkStopped(format!(
                        "a worker could not write the events of epoch {epoch}: {why}"
                    )));
                }
                SinkMsg::Seal(epoch, positions) => {
                    let records = self.pending.remove(&epoch).unwrap_or_default();
                    let written = self.written.remove(&epoch).unwrap_or_default();
                    let rows = self
                        .commit_epoch(epoch, records, written, &positions)
                        .await?;
                    if committed
                        .send(Committed {
                            epoch,
                            positions,
                            rows,
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends view state lines to epoch `epoch`'s snapshot file (started on the first).
    fn write_state(&mut self, epoch: Epoch, lines: &[u8]) -> Result<()> {
        let file = match self.snapshots.entry(epoch) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(self.warehouse.snapshot_file(epoch)?)
            }
        };
        file.write(lines)
    }

    /// Writes one epoch to every table it touches; its events are in `written` (files the
    /// workers wrote) and in `records` (written here).
    pub async fn commit_epoch(
        &mut self,
        epoch: Epoch,
        records: Vec<SinkRecord>,
        mut written: Vec<EventFiles>,
        positions: &SourcePositions,
    ) -> Result<BTreeMap<&'static str, usize>> {
        let started = Instant::now();
        let mut events = Vec::new();
        let mut quarantine = Vec::new();
        let mut heads = Vec::new();
        let mut checkpoints = Vec::new();
        let mut views = Vec::new();
        let mut emitters = Vec::new();
        for record in records {
            match record {
                SinkRecord::Event(e) => events.push(*e),
                SinkRecord::Quarantine(q) => quarantine.push(*q),
                SinkRecord::Head(h) => heads.push(h),
                SinkRecord::Checkpoint(c) => checkpoints.push(*c),
                SinkRecord::View(v) => views.push(v),
                SinkRecord::Emitter(e) => emitters.push(*e),
                SinkRecord::ViewState(lines) => self.write_state(epoch, &lines)?,
            }
        }
        checkpoints.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        emitters.sort_by(|a, b| (&a.tenant_id, &a.agent_id).cmp(&(&b.tenant_id, &b.agent_id)));
        quarantine.sort_by_key(|q| (q.partition, q.offset));
        let retention = self.retention.take();
        // With a retention application, the views' changelog is rewritten whole: the views
        // as rebuilt from the retained events, then this epoch's changes, netted.
        let image = retention.as_ref().map(|job| {
            let history = job
                .history
                .lock()
                .map(|mut h| std::mem::take(&mut *h))
                .unwrap_or_default();
            crate::record::consolidate(history.into_iter().chain(views.iter().cloned()))
        });
        let written_views = image.as_ref().unwrap_or(&views);
        let changes = written_views
            .iter()
            .filter(|v| !matches!(v, ViewUpdate::Retired { .. }))
            .count();
        let events_table = self.warehouse.table(tables::EVENTS).await?;
        if !events.is_empty() {
            let writer = crate::sinks::event_writer::EventWriter {
                table: events_table.clone(),
                source: positions.source.clone(),
            };
            written.push(crate::sinks::event_writer::write(&writer, epoch, events).await?);
        }
        let mut event_files = Vec::new();
        let mut events: Vec<WrittenEvent> = Vec::new();
        let mut vault_events: Vec<VaultEvent> = Vec::new();
        let mut event_digests = Vec::new();
        for w in written {
            event_files.extend(w.files);
            event_digests.extend(w.sha256);
            if events.is_empty() {
                events = w.events;
            } else {
                events.extend(w.events);
            }
            vault_events.extend(w.vault);
        }
        heads.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        if let Some(verifier) = self.verifier.as_mut() {
            for (tenant, problem) in verifier.observe(&events, &checkpoints) {
                self.metrics
                    .verifier_alerts
                    .with_label_values(&[&problem.kind.to_string()])
                    .inc();
                tracing::error!(
                    tenant_id = %tenant,
                    kind = %problem.kind,
                    seq = ?problem.seq,
                    detail = %problem.detail,
                    "integrity alert"
                );
            }
        }
        let (vault, subjects) = match self.keystore.as_mut() {
            Some(keystore) => {
                let (mut rows, subjects) = seal_vault(keystore, &vault_events).await?;
                if self.seal_quarantine {
                    rows.extend(
                        seal_quarantined(keystore, &positions.source, &mut quarantine).await?,
                    );
                }
                (rows, subjects)
            }
            None => (Vec::new(), Vec::new()),
        };
        let mut rows = BTreeMap::new();
        let mut digest = Sha256::new();
        for cp in &checkpoints {
            digest.update(cp.signature.as_bytes());
        }
        let summary = vec![
            (
                SUMMARY_POSITIONS,
                serde_json::to_string(positions).unwrap_or_default(),
            ),
            (SUMMARY_CHECKPOINTS, checkpoints.len().to_string()),
            (SUMMARY_CHECKPOINT_DIGEST, hex::encode(digest.finalize())),
        ];
        let mut batches: Vec<(&'static str, usize, Option<RecordBatch>)> = vec![
            (
                tables::QUARANTINE,
                quarantine.len(),
                nonempty(&quarantine, |q| {
                    quarantine_batch(q, &positions.source, epoch)
                })?,
            ),
            (
                tables::CHAIN_HEADS,
                heads.len(),
                nonempty(&heads, |h| heads_batch(h, epoch))?,
            ),
            (
                tables::CHECKPOINTS,
                checkpoints.len(),
                nonempty(&checkpoints, checkpoints_batch)?,
            ),
            (
                tables::VIEW_CHANGES,
                changes,
                match changes {
                    0 => None,
                    _ => Some(view_changes_batch(written_views, epoch)?),
                },
            ),
        ];
        batches.push((
            tables::VAULT,
            vault.len(),
            nonempty(&vault, |v| vault_batch(v, epoch))?,
        ));
        batches.push((
            tables::EMITTER_HEADS,
            emitters.len(),
            nonempty(&emitters, |e| emitter_heads_batch(e, epoch))?,
        ));
        // The configuration this run is under, if it is not the one last recorded.
        if let Some(evidence) = self.config.take() {
            let last = self.warehouse.config_log().await?.pop();
            let now = custody_schemas::time::format_rfc3339(custody_schemas::time::now_us());
            if let Some(entry) = crate::config_log::entry(&evidence, last.as_ref(), epoch, now) {
                tracing::info!(
                    epoch,
                    changed = %entry.changed.join(","),
                    "configuration recorded in custody.config_log"
                );
                batches.push((tables::CONFIG_LOG, 1, Some(config_log_batch(&entry)?)));
            }
        }
        // A retention application: the rows it removes, rewritten away below with the
        // compactions; the expired events' leaves appended to `custody.expired`.
        let applied = match &retention {
            Some(job) => {
                if let Some(tenant) = job
                    .plan
                    .tenants
                    .keys()
                    .find(|t| !events.iter().any(|e| e.tenant_id == **t))
                {
                    return Err(Error::Retention {
                        table: tables::EVENTS.into(),
                        detail: format!(
                            "epoch {epoch} carries no RETENTION_APPLIED event of tenant {tenant:?}"
                        ),
                    });
                }
                let applied = crate::retention::stage(&self.warehouse, &job.plan, epoch).await?;
                batches.push((
                    tables::EXPIRED,
                    applied.leaves.len(),
                    nonempty(&applied.leaves, |l| expired_batch(l, epoch))?,
                ));
                Some(applied)
            }
            None => None,
        };
        crate::failpoint::hit("commit-start", epoch);
        if let Some(dead_letter) = &self.dead_letter
            && !quarantine.is_empty()
        {
            dead_letter.publish(&positions.source, &quarantine).await?;
        }
        // 1. Every table's data files, written but not visible (the events' by the workers).
        let mut staged = Vec::new();
        let mut manifest = EpochManifest::default();
        if !event_files.is_empty() {
            manifest.sha256.extend(event_digests);
            manifest.tables.insert(
                tables::EVENTS.to_string(),
                data_files_json(&events_table, &event_files)?,
            );
            rows.insert(tables::EVENTS, events.len());
            staged.push((tables::EVENTS, events.len(), events_table, event_files));
        }
        for (name, n, batch) in batches {
            let Some(batch) = batch else { continue };
            let table = self.warehouse.table(name).await?;
            let files = self.warehouse.write_files(&table, epoch, batch).await?;
            for file in &files {
                let digest = self.warehouse.file_sha256(&table, file.file_path()).await?;
                manifest.sha256.insert(file.file_path().to_string(), digest);
            }
            manifest
                .tables
                .insert(name.to_string(), data_files_json(&table, &files)?);
            rows.insert(name, n);
            staged.push((name, n, table, files));
        }
        // The views' state, when this is a snapshot epoch: a file beside the tables, its
        // digest in the manifest (so under the seal).
        if let Some(kept) = self.heads.as_mut() {
            kept.observe(&heads, &emitters, &checkpoints, positions);
        }
        let snapshot = match self.snapshots.remove(&epoch) {
            None => None,
            Some(file) => {
                let (path, digest) = file.finish(&self.warehouse.root)?;
                manifest.sha256.insert(path.clone(), digest);
                if let Some(kept) = &self.heads {
                    let (path, digest) = self.warehouse.write_heads(epoch, kept)?;
                    manifest.sha256.insert(path, digest);
                }
                Some(path)
            }
        };
        // Compactions due with this epoch: outputs written, not visible; the manifest names
        // them and the files they replace, and each table they touch is committed below.
        let mut compactions: BTreeMap<&str, (Vec<iceberg::spec::DataFile>, HashSet<String>)> =
            BTreeMap::new();
        let mut log_merge: (Vec<iceberg::spec::DataFile>, HashSet<String>) = Default::default();
        if let Some(applied) = applied {
            for (name, merges) in applied.merges {
                let table = match staged.iter().find(|(n, ..)| *n == name) {
                    Some((_, _, table, _)) => table.clone(),
                    None => self.warehouse.table(name).await?,
                };
                let mut outputs = Vec::new();
                let mut removed = HashSet::new();
                let mut records = Vec::new();
                for merge in merges {
                    manifest.sha256.extend(merge.sha256);
                    outputs.extend(merge.files);
                    removed.extend(merge.record.inputs.iter().cloned());
                    self.metrics
                        .retention_expired_rows
                        .with_label_values(&[name])
                        .inc_by(merge.record.expired);
                    records.push(merge.record);
                }
                manifest.compacted.insert(name.to_string(), records);
                if !staged.iter().any(|(n, ..)| *n == name) {
                    staged.push((name, 0, table, Vec::new()));
                }
                compactions.insert(name, (outputs, removed));
            }
            // The views' changelog: every file it held goes, this epoch's files (the image)
            // replace them.
            let table = match staged.iter().find(|(n, ..)| *n == tables::VIEW_CHANGES) {
                Some((_, _, table, _)) => table.clone(),
                None => self.warehouse.table(tables::VIEW_CHANGES).await?,
            };
            let (live, _) = crate::compaction::live_files(&table).await?;
            if !live.is_empty() {
                let removed: HashSet<String> =
                    live.iter().map(|e| e.file_path().to_string()).collect();
                let mut inputs: Vec<String> = removed.iter().cloned().collect();
                inputs.sort();
                manifest.compacted.insert(
                    tables::VIEW_CHANGES.to_string(),
                    vec![crate::compaction::Compaction {
                        inputs,
                        outputs: Vec::new(),
                        rows: changes as u64,
                        expired: 0,
                        rebuild: true,
                    }],
                );
                if !staged.iter().any(|(n, ..)| *n == tables::VIEW_CHANGES) {
                    staged.push((tables::VIEW_CHANGES, 0, table, Vec::new()));
                }
                compactions.insert(tables::VIEW_CHANGES, (Vec::new(), removed));
            }
        } else if let Some(compact) = self.compact.as_mut() {
            compact.epochs_since += 1;
            if compact.epochs_since >= compact.every_epochs {
                compact.epochs_since = 0;
                // The commit log's own files, merged with the commit point itself. They are
                // not under the seals (their rows are), so the manifest does not list them.
                let log = self.warehouse.table(tables::EPOCHS).await?;
                for merge in
                    crate::compaction::stage(&log, tables::EPOCHS, epoch, &compact.policy).await?
                {
                    log_merge.0.extend(merge.files);
                    log_merge.1.extend(merge.record.inputs);
                }
                for name in crate::compaction::COMPACTED_TABLES {
                    let table = match staged.iter().find(|(n, ..)| *n == name) {
                        Some((_, _, table, _)) => table.clone(),
                        None => self.warehouse.table(name).await?,
                    };
                    let merges =
                        crate::compaction::stage(&table, name, epoch, &compact.policy).await?;
                    if merges.is_empty() {
                        continue;
                    }
                    let mut outputs = Vec::new();
                    let mut removed = HashSet::new();
                    let mut records = Vec::new();
                    for merge in merges {
                        manifest.sha256.extend(merge.sha256);
                        outputs.extend(merge.files);
                        removed.extend(merge.record.inputs.iter().cloned());
                        records.push(merge.record);
                    }
                    self.metrics
                        .compacted_files
                        .with_label_values(&[name])
                        .inc_by(removed.len() as u64);
                    manifest.compacted.insert(name.to_string(), records);
                    if !staged.iter().any(|(n, ..)| *n == name) {
                        staged.push((name, 0, table, Vec::new()));
                    }
                    compactions.insert(name, (outputs, removed));
                }
            }
        }
        crate::failpoint::hit("files-written", epoch);
        // 2. The commit point: the epoch's row in custody.epochs, listing those files, under
        //    the epoch's seal.
        let registry = crate::seal::registry(&checkpoints);
        let mut row = EpochRow {
            epoch,
            sink_id: &self.sink_id,
            positions,
            events: events.len(),
            quarantined: quarantine.len(),
            checkpoints: checkpoints.len(),
            digest: &summary[2].1,
            committed_at_us: custody_schemas::time::now_us(),
            files: &serde_json::to_string(&manifest)
                .map_err(|e| Error::SinkStopped(format!("epoch manifest: {e}")))?,
            registry: &crate::seal::registry_json(&registry),
            seal: String::new(),
            positions_json: serde_json::to_string(&positions.partitions).unwrap_or_default(),
        };
        // The seal signs the whole registry: the epoch's change applied to the last one (a
        // retried commit applies the same change again, to the same result).
        let seal = self.sealer.as_mut().map(|sealer| {
            sealer.registry.apply(&registry);
            sealer.signer.seal(
                epoch,
                &sealer.prev,
                &crate::seal::row_digest(&row.fields()),
                &sealer.registry,
                custody_schemas::time::now_us(),
            )
        });
        if let Some(seal) = &seal {
            row.seal = serde_json::to_string(seal).unwrap_or_default();
        }
        let marker = epochs_batch(&row)?;
        let epochs_table = self.warehouse.table(tables::EPOCHS).await?;
        let mut marker_files = self
            .warehouse
            .write_files(&epochs_table, epoch, marker)
            .await?;
        marker_files.extend(log_merge.0);
        self.warehouse
            .commit_files(
                &epochs_table,
                tables::EPOCHS,
                epoch,
                marker_files,
                &log_merge.1,
                &summary,
            )
            .await?;
        self.metrics
            .sink_commits
            .with_label_values(&[tables::EPOCHS])
            .inc();
        crate::failpoint::hit("after-commit:epochs", epoch);
        // 3. Each table rolled forward to the epoch; a restart completes what a crash cuts
        //    short here (`Warehouse::resume_state`).
        let mut staged: BTreeMap<&str, _> = staged
            .into_iter()
            .map(|(name, n, table, files)| (name, (n, table, files)))
            .collect();
        // In a fixed order, with both failpoints of every table whether or not the epoch
        // writes to it, so a crash test can stop at each of them in any epoch.
        for name in crate::failpoint::committed_tables() {
            crate::failpoint::hit_table("before-commit", name, epoch);
            let replacing = compactions.remove(name);
            if let Some((n, table, mut files)) = staged.remove(name) {
                let removed = match replacing {
                    Some((outputs, removed)) => {
                        files.extend(outputs);
                        removed
                    }
                    None => Default::default(),
                };
                self.warehouse
                    .commit_files(&table, name, epoch, files, &removed, &summary)
                    .await?;
                self.metrics
                    .sink_rows
                    .with_label_values(&[name])
                    .inc_by(n as u64);
                self.metrics.sink_commits.with_label_values(&[name]).inc();
            }
            crate::failpoint::hit_table("after-commit", name, epoch);
        }
        if let Some(name) = staged.keys().chain(compactions.keys()).next() {
            // Panic-free alternative to an invariant: every table written is listed.
            return Err(Error::SinkStopped(format!(
                "table {name:?} is missing from the commit order"
            )));
        }
        if let (Some(sealer), Some(seal)) = (self.sealer.as_mut(), seal) {
            sealer.prev = seal.hash();
            if let Some(path) = &sealer.watermark {
                Watermark {
                    epoch,
                    seal: hex::encode(sealer.prev),
                }
                .write(path)?;
            }
        }
        if let Some(keystore) = self.keystore.as_mut()
            && !subjects.is_empty()
        {
            // After a crash before this, those values are sealed again when next seen: a
            // duplicate vault row under the same key, never a missing one.
            keystore
                .mark_vaulted(&subjects)
                .await
                .map_err(|e| Error::SinkStopped(e.to_string()))?;
        }
        if let Some(hook) = self.on_commit.as_mut() {
            hook(&CommitNotice {
                epoch,
                events: &events,
                checkpoints: &checkpoints,
                views: &views,
                snapshot: snapshot.is_some(),
            });
        }
        if let Some(job) = &retention {
            // Nothing of the removed rows may stay behind: the rewritten tables' older
            // snapshots go, then every file only they referenced.
            let started = Instant::now();
            let (expired, orphans) = self
                .warehouse
                .purge_history(&crate::retention::REWRITTEN_TABLES, epoch)
                .await?;
            tracing::info!(
                epoch,
                events = job.plan.events(),
                tenants = job.plan.tenants.len(),
                snapshots = expired,
                files = orphans,
                ms = started.elapsed().as_millis() as u64,
                "retention applied"
            );
        }
        if snapshot.is_some() {
            self.warehouse.prune_snapshots(epoch);
            if self.heads.is_some() {
                let started = Instant::now();
                let expired = self.warehouse.expire_history().await?;
                let orphans = self.warehouse.remove_orphans(epoch).await?;
                tracing::debug!(
                    expired,
                    orphans,
                    ms = started.elapsed().as_millis() as u64,
                    "expired Iceberg snapshots before the oldest heads file"
                );
            }
        }
        self.metrics.events_accepted.inc_by(events.len() as u64);
        self.metrics.last_committed_epoch.set(epoch as i64);
        self.metrics
            .last_commit_timestamp
            .set(now_us().div_euclid(1_000_000));
        self.metrics
            .sla_breaches
            .inc_by(new_rows(&views, ViewId::SlaBreaches).len() as u64);
        for (_, key) in new_rows(&views, ViewId::Alerts) {
            // Alert keys start with their kind (`kind/agent/...`).
            let kind = key.split('/').next().unwrap_or_default();
            self.metrics.alerts_raised.with_label_values(&[kind]).inc();
        }
        self.metrics
            .sink_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(epoch, ?rows, "committed epoch");
        Ok(rows)
    }
}

/// The rows of `view` one epoch's view changes add: keys inserted and not also retracted (a
/// retraction paired with an insertion is an update of a row already counted).
fn new_rows(views: &[ViewUpdate], view: ViewId) -> Vec<(&str, &str)> {
    let mut inserted = BTreeSet::new();
    let mut retracted = BTreeSet::new();
    for u in views {
        if let ViewUpdate::Row {
            view: v,
            tenant_id,
            key,
            diff,
            ..
        } = u
            && *v == view
        {
            let side = if *diff > 0 {
                &mut inserted
            } else {
                &mut retracted
            };
            side.insert((tenant_id.as_str(), key.as_str()));
        }
    }
    inserted.difference(&retracted).copied().collect()
}

fn nonempty<T>(
    rows: &[T],
    build: impl FnOnce(&[T]) -> Result<RecordBatch>,
) -> Result<Option<RecordBatch>> {
    if rows.is_empty() {
        Ok(None)
    } else {
        build(rows).map(Some)
    }
}

fn strings<S: AsRef<str>>(it: impl Iterator<Item = S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}

/// Hashes as `fixed(32)`.
fn hashes<'a>(it: impl ExactSizeIterator<Item = &'a [u8; 32]>) -> ArrayRef {
    let mut out = FixedSizeBinaryBuilder::with_capacity(it.len(), 32);
    for hash in it {
        // Panic-free: every value is 32 bytes, the builder's width.
        out.append_value(hash).expect("32 bytes");
    }
    Arc::new(out.finish())
}

/// Ids in their two stored columns ([`custody_schemas::id`]): the UUID's bytes, or the text.
fn ids<'a>(it: impl ExactSizeIterator<Item = Option<&'a str>>) -> (ArrayRef, ArrayRef) {
    use custody_schemas::id::StoredId;
    let mut uuids = FixedSizeBinaryBuilder::with_capacity(it.len(), 16);
    let mut texts = arrow_array::builder::StringBuilder::with_capacity(it.len(), 0);
    for id in it {
        match id.map(StoredId::of) {
            Some(StoredId::Uuid(bytes)) => {
                // Panic-free: 16 bytes, the builder's width.
                uuids.append_value(bytes).expect("16 bytes");
                texts.append_null();
            }
            Some(StoredId::Text(text)) => {
                uuids.append_null();
                texts.append_value(text);
            }
            None => {
                uuids.append_null();
                texts.append_null();
            }
        }
    }
    (Arc::new(uuids.finish()), Arc::new(texts.finish()))
}

/// `source#partition` per row, each label formatted once.
fn source_partitions(source: &str, partitions: impl ExactSizeIterator<Item = i32>) -> ArrayRef {
    let mut labels: Vec<(i32, String)> = Vec::new();
    let mut out = arrow_array::builder::StringBuilder::with_capacity(partitions.len(), 0);
    for p in partitions {
        let label = match labels.iter().find(|(q, _)| *q == p) {
            Some((_, l)) => l,
            None => {
                labels.push((p, format!("{source}#{p}")));
                // Panic-free: just pushed.
                &labels.last().expect("just pushed").1
            }
        };
        out.append_value(label);
    }
    Arc::new(out.finish())
}

fn opt_strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(it.collect::<StringArray>())
}

fn ints(it: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(it))
}

fn batch(schema: arrow_schema::SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

pub(crate) fn events_batch(
    rows: &[ChainedEvent],
    source: &str,
    epoch: Epoch,
) -> Result<RecordBatch> {
    let (event_uuid, event_id_text) = ids(rows.iter().map(|r| Some(r.event.event_id.as_str())));
    let (parent_uuid, parent_id_text) =
        ids(rows.iter().map(|r| r.event.parent_event_id.as_deref()));
    batch(
        tables::events_schema(),
        vec![
            strings(rows.iter().map(|r| r.event.tenant_id.as_str())),
            ints(rows.iter().map(|r| r.seq as i64)),
            event_uuid,
            event_id_text,
            strings(rows.iter().map(|r| r.event.schema_version.as_str())),
            strings(rows.iter().map(|r| r.event.event_type.as_str())),
            strings(rows.iter().map(|r| r.event.session_id.as_str())),
            strings(rows.iter().map(|r| r.event.agent_id.as_str())),
            opt_strings(rows.iter().map(|r| r.event.user_id.as_deref())),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.event.timestamp_us),
                )
                .with_timezone("+00:00"),
            ),
            parent_uuid,
            parent_id_text,
            strings(rows.iter().map(|r| r.event.payload.as_str())),
            hashes(rows.iter().map(|r| &r.hash)),
            source_partitions(source, rows.iter().map(|r| r.partition)),
            ints(rows.iter().map(|r| r.offset)),
            ints(rows.iter().map(|_| epoch as i64)),
        ],
    )
}

/// Seals the vault items of `events`: each token value not vaulted yet under the token's own
/// key, each field's content under the tenant's content key. Returns the rows and the token
/// subjects to mark vaulted once the rows are committed.
async fn seal_vault(
    keystore: &mut Keystore,
    events: &[VaultEvent],
) -> Result<(Vec<VaultRow>, Vec<(String, String)>)> {
    let fail = |e: crate::vault::VaultError| Error::SinkStopped(e.to_string());
    // Every key this epoch needs, fetched or created in one keystore transaction.
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for e in events {
        let tenant = e.tenant_id.as_str();
        for item in &e.items {
            let subject = match item {
                VaultItem::Token { token, .. } if !keystore.is_vaulted(tenant, token) => {
                    token.as_str()
                }
                VaultItem::Token { .. } => continue,
                VaultItem::Content { .. } => "",
            };
            let pair = (tenant.to_string(), subject.to_string());
            if !index.contains_key(&pair) {
                index.insert(pair.clone(), wanted.len());
                wanted.push(pair);
            }
        }
    }
    if wanted.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let keys = keystore.get_or_create_many(&wanted).await.map_err(fail)?;
    let mut rows = Vec::new();
    let mut subjects = Vec::new();
    let mut sealed_tokens = std::collections::HashSet::new();
    for e in events {
        let tenant = e.tenant_id.as_str();
        for item in &e.items {
            match item {
                VaultItem::Token { token, value } => {
                    let Some(&i) = index.get(&(tenant.to_string(), token.clone())) else {
                        continue;
                    };
                    let (key, vaulted) = &keys[i];
                    if *vaulted || !sealed_tokens.insert(i) {
                        continue;
                    }
                    let sealed = seal(&key.key, &vault_aad(tenant, token), value.as_bytes());
                    rows.push(VaultRow {
                        tenant_id: tenant.to_string(),
                        kind: "token",
                        reference: token.clone(),
                        key_id: key.id.clone(),
                        sealed: hex::encode(sealed),
                    });
                    subjects.push((tenant.to_string(), token.clone()));
                }
                VaultItem::Content {
                    field,
                    json,
                    commitment,
                } => {
                    let (key, _) = &keys[index[&(tenant.to_string(), String::new())]];
                    let reference = content_reference(&e.event_id, field, commitment);
                    let sealed = seal(&key.key, &vault_aad(tenant, &reference), json.as_bytes());
                    rows.push(VaultRow {
                        tenant_id: tenant.to_string(),
                        kind: "content",
                        reference,
                        key_id: key.id.clone(),
                        sealed: hex::encode(sealed),
                    });
                }
            }
        }
    }
    Ok((rows, subjects))
}

/// The vault reference of a field's content: `event_id#field#<CONTENT:tok_…>`, found by
/// either its event and field or its commitment ([`Warehouse::vault_entry`]).
fn content_reference(event_id: &str, field: &str, commitment: &str) -> String {
    if commitment.is_empty() {
        format!("{event_id}#{field}")
    } else {
        format!("{event_id}#{field}#{commitment}")
    }
}

/// Moves the redacted copy of each quarantined record attributed to a tenant into the vault,
/// under the tenant's content key.
async fn seal_quarantined(
    keystore: &mut Keystore,
    source: &str,
    quarantine: &mut [Quarantined],
) -> Result<Vec<VaultRow>> {
    let mut rows = Vec::new();
    for q in quarantine.iter_mut() {
        let Some(tenant) = q.tenant_id.clone() else {
            continue;
        };
        let (key, _) = keystore
            .get_or_create(&tenant, "")
            .await
            .map_err(|e| Error::SinkStopped(e.to_string()))?;
        let reference = format!("quarantine:{source}#{}:{}", q.partition, q.offset);
        let sealed = seal(
            &key.key,
            &vault_aad(&tenant, &reference),
            q.raw_redacted.as_bytes(),
        );
        q.raw_redacted = format!("<SEALED in custody.vault as {reference}>");
        rows.push(VaultRow {
            tenant_id: tenant,
            kind: "quarantine",
            reference,
            key_id: key.id,
            sealed: hex::encode(sealed),
        });
    }
    Ok(rows)
}

fn config_log_batch(e: &crate::config_log::ConfigEntry) -> Result<RecordBatch> {
    let changed = serde_json::to_string(&e.changed).unwrap_or_default();
    batch(
        tables::config_log_schema(),
        vec![
            ints(std::iter::once(e.epoch as i64)),
            strings(std::iter::once(e.recorded_at.as_str())),
            strings(std::iter::once(e.digest.as_str())),
            opt_strings(std::iter::once(e.previous_digest.as_deref())),
            strings(std::iter::once(changed.as_str())),
            strings(std::iter::once(e.config.as_str())),
            strings(std::iter::once(e.recorded_by.as_str())),
        ],
    )
}

fn expired_batch(leaves: &[(String, u64, Hash)], epoch: Epoch) -> Result<RecordBatch> {
    batch(
        tables::expired_schema(),
        vec![
            strings(leaves.iter().map(|(t, ..)| t.as_str())),
            ints(leaves.iter().map(|(_, seq, _)| *seq as i64)),
            hashes(leaves.iter().map(|(_, _, leaf)| leaf)),
            ints(leaves.iter().map(|_| epoch as i64)),
        ],
    )
}

fn vault_batch(rows: &[VaultRow], epoch: Epoch) -> Result<RecordBatch> {
    batch(
        tables::vault_schema(),
        vec![
            strings(rows.iter().map(|r| r.tenant_id.as_str())),
            strings(rows.iter().map(|r| r.kind)),
            strings(rows.iter().map(|r| r.reference.as_str())),
            strings(rows.iter().map(|r| r.key_id.as_str())),
            strings(rows.iter().map(|r| r.sealed.as_str())),
            ints(rows.iter().map(|_| epoch as i64)),
        ],
    )
}

struct EpochRow<'a> {
    epoch: Epoch,
    sink_id: &'a str,
    positions: &'a SourcePositions,
    events: usize,
    quarantined: usize,
    checkpoints: usize,
    digest: &'a str,
    committed_at_us: i64,
    files: &'a str,
    registry: &'a str,
    seal: String,
    /// `positions.partitions` as stored.
    positions_json: String,
}

impl EpochRow<'_> {
    /// The sealed columns, exactly as stored.
    fn fields(&self) -> crate::seal::EpochRowFields<'_> {
        crate::seal::EpochRowFields {
            epoch: self.epoch,
            sink_id: self.sink_id,
            source: &self.positions.source,
            positions: self.positions_json.as_str(),
            events: self.events as i64,
            quarantined: self.quarantined as i64,
            checkpoints: self.checkpoints as i64,
            checkpoint_digest: self.digest,
            committed_at_us: self.committed_at_us,
            files: self.files,
            registry: self.registry,
        }
    }
}

fn epochs_batch(row: &EpochRow<'_>) -> Result<RecordBatch> {
    let now = row.committed_at_us;
    batch(
        tables::epochs_schema(),
        vec![
            ints(std::iter::once(row.epoch as i64)),
            strings(std::iter::once(row.sink_id)),
            strings(std::iter::once(row.positions.source.as_str())),
            strings(std::iter::once(row.positions_json.as_str())),
            ints(std::iter::once(row.events as i64)),
            ints(std::iter::once(row.quarantined as i64)),
            ints(std::iter::once(row.checkpoints as i64)),
            strings(std::iter::once(row.digest)),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::once(now))
                    .with_timezone("+00:00"),
            ),
            strings(std::iter::once(row.files)),
            strings(std::iter::once(row.registry)),
            strings(std::iter::once(row.seal.as_str())),
        ],
    )
}

fn emitter_heads_batch(rows: &[EmitterHead], epoch: Epoch) -> Result<RecordBatch> {
    batch(
        tables::emitter_heads_schema(),
        vec![
            strings(rows.iter().map(|r| r.tenant_id.as_str())),
            strings(rows.iter().map(|r| r.agent_id.as_str())),
            strings(rows.iter().map(|r| hex::encode(r.last_sha256))),
            ints(rows.iter().map(|_| epoch as i64)),
        ],
    )
}

fn quarantine_batch(rows: &[Quarantined], source: &str, epoch: Epoch) -> Result<RecordBatch> {
    batch(
        tables::quarantine_schema(),
        vec![
            strings(rows.iter().map(|r| format!("{source}#{}", r.partition))),
            ints(rows.iter().map(|r| r.offset)),
            ints(rows.iter().map(|_| epoch as i64)),
            strings(rows.iter().map(|r| r.reason_kind.as_str())),
            strings(rows.iter().map(|r| r.reason.as_str())),
            opt_strings(rows.iter().map(|r| r.tenant_id.as_deref())),
            ints(rows.iter().map(|r| r.raw_len)),
            strings(rows.iter().map(|r| r.raw_sha256.as_str())),
            strings(rows.iter().map(|r| r.raw_redacted.as_str())),
        ],
    )
}

fn heads_batch(rows: &[ChainHead], epoch: Epoch) -> Result<RecordBatch> {
    batch(
        tables::chain_heads_schema(),
        vec![
            strings(rows.iter().map(|h| h.tenant_id.as_str())),
            ints(rows.iter().map(|h| h.seq as i64)),
            strings(rows.iter().map(|h| hex::encode(h.head_hash))),
            ints(rows.iter().map(|h| h.epoch_events as i64)),
            ints(rows.iter().map(|_| epoch as i64)),
            strings(rows.iter().map(|h| h.merkle_range.as_str())),
        ],
    )
}

fn checkpoints_batch(rows: &[Checkpoint]) -> Result<RecordBatch> {
    batch(
        tables::checkpoints_schema(),
        vec![
            strings(rows.iter().map(|c| c.tenant_id.as_str())),
            ints(rows.iter().map(|c| c.tree_size as i64)),
            strings(rows.iter().map(|c| c.root.as_str())),
            strings(rows.iter().map(|c| c.chain_head.as_str())),
            ints(rows.iter().map(|c| c.epoch as i64)),
            strings(rows.iter().map(|c| c.signed_at.as_str())),
            strings(rows.iter().map(|c| c.key_id.as_str())),
            strings(rows.iter().map(|c| c.signature.as_str())),
            strings(rows.iter().map(|c| c.prev_checkpoint.as_str())),
        ],
    )
}

/// Every change of `views` (retirements are not changes) as rows of `custody.view_changes`.
fn view_changes_batch(views: &[ViewUpdate], epoch: Epoch) -> Result<RecordBatch> {
    let n = views.len();
    let mut view = StringBuilder::with_capacity(n, n * 12);
    let mut tenant = StringBuilder::with_capacity(n, n * 16);
    let mut key = StringBuilder::with_capacity(n, n * 24);
    let mut row = StringBuilder::with_capacity(n, n * 64);
    let mut diff = Int64Builder::with_capacity(n);
    let mut text = String::new();
    for v in views {
        let d = match v {
            ViewUpdate::EventCount {
                tenant_id,
                event_type,
                count,
                diff,
            } => {
                view.append_value(tables::VIEW_EVENT_COUNTS);
                tenant.append_value(tenant_id);
                key.append_value(event_type);
                text.clear();
                // Panic-free: writing to a String cannot fail.
                let _ = write!(text, "{{\"count\":{count}}}");
                row.append_value(&text);
                *diff
            }
            ViewUpdate::HitlLatency {
                tenant_id,
                stats,
                diff,
            } => {
                view.append_value(tables::VIEW_HITL_LATENCY);
                tenant.append_value(tenant_id);
                key.append_value("");
                // Panic-free: the statistics are plain integers.
                row.append_value(serde_json::to_string(stats).unwrap_or_default());
                *diff
            }
            ViewUpdate::Row {
                view: id,
                tenant_id,
                key: k,
                row: r,
                diff,
            } => {
                view.append_value(id.name());
                tenant.append_value(tenant_id);
                key.append_value(k);
                row.append_value(r);
                *diff
            }
            ViewUpdate::Retired { .. } => continue,
        };
        diff.append_value(d);
    }
    let rows = view.len();
    batch(
        tables::view_changes_schema(),
        vec![
            Arc::new(view.finish()),
            Arc::new(tenant.finish()),
            Arc::new(key.finish()),
            Arc::new(row.finish()),
            ints(std::iter::repeat_n(epoch as i64, rows)),
            Arc::new(diff.finish()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{DataContentType, DataFileBuilder, DataFileFormat, Datum, Literal, Struct};

    #[test]
    fn new_rows_count_new_keys_once() {
        let row = |key: &str, diff| ViewUpdate::Row {
            view: ViewId::SlaBreaches,
            tenant_id: "t".into(),
            key: key.into(),
            row: "{}".into(),
            diff,
        };
        let other = ViewUpdate::Row {
            view: ViewId::Sessions,
            tenant_id: "t".into(),
            key: "s".into(),
            row: "{}".into(),
            diff: 1,
        };
        // a new breach, an updated one (retracted and inserted), a retracted one, another view
        let views = [row("a", 1), row("b", -1), row("b", 1), row("c", -1), other];
        assert_eq!(new_rows(&views, ViewId::SlaBreaches), [("t", "a")]);
        assert_eq!(new_rows(&views, ViewId::Sessions), [("t", "s")]);
        assert!(new_rows(&[], ViewId::SlaBreaches).is_empty());
    }

    /// A data file's entry keeps its partition tuple in order and every bound pruning uses
    /// (tenant, numbers, times), and loses the bounds of text and binary columns (values of
    /// rows, which retention must be able to remove from every file).
    #[test]
    fn entries_keep_their_partition_and_lose_content_bounds() {
        let schema = arrow_schema_to_schema(&tables::events_schema()).expect("schema");
        let metadata = iceberg::spec::TableMetadataBuilder::new(
            schema,
            crate::layout::partition_spec(tables::EVENTS).expect("spec"),
            iceberg::spec::SortOrder::unsorted_order(),
            "file:///wh/events".into(),
            iceberg::spec::FormatVersion::V2,
            HashMap::new(),
        )
        .expect("builder")
        .build()
        .expect("metadata")
        .metadata;
        let partition = Struct::from_iter([Some(Literal::int(3)), Some(Literal::date(20_000))]);
        let bounds = HashMap::from([
            (1, Datum::string("tenant-0001")),
            (2, Datum::long(7)),
            (4, Datum::string("an-event-id")),
            (13, Datum::string("{\"prompt\":\"secret\"}")),
        ]);
        let file = DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path("file:///wh/events/data/x.parquet".into())
            .file_format(DataFileFormat::Parquet)
            .partition(partition.clone())
            .record_count(2)
            .file_size_in_bytes(100)
            .lower_bounds(bounds.clone())
            .upper_bounds(bounds)
            .split_offsets(Some(vec![4]))
            .partition_spec_id(metadata.default_partition_spec().spec_id())
            .build()
            .expect("file");
        let kept = without_content_bounds(&metadata, file).expect("rebuilt");
        assert_eq!(kept.partition(), &partition);
        let mut ids: Vec<i32> = kept.lower_bounds().keys().copied().collect();
        ids.sort();
        assert_eq!(ids, [1, 2]);
        assert_eq!(kept.upper_bounds().len(), 2);
        assert_eq!(kept.split_offsets(), Some(&[4i64][..]));
        assert_eq!(kept.record_count(), 2);
    }
}
