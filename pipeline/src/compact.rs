//! `custody compact`: compaction, snapshot expiry and orphan removal on a warehouse no
//! pipeline is writing to.
//!
//! A compaction is always committed with an epoch, under its seal
//! ([`custody_operators::compaction`]), so this command commits one epoch of its own: no
//! records, the source positions and views' clock of the last epoch restated, a checkpoint of
//! every tenant re-signed at the new epoch (same tree, same head), and every table's due
//! merges. A later run resumes after it like after any epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use custody_operators::checkpoint::Signer;
use custody_operators::compaction::{self, Policy};
use custody_operators::metrics::Metrics;
use custody_operators::record::SinkRecord;
use custody_operators::sinks::iceberg::{
    CompactSchedule, IcebergSink, Sealer, Warehouse, Watermark,
};
use custody_schemas::time::now_us;

use crate::dataflow::{PipelineError, lock_warehouse, watermark_path};

/// What `custody compact` did.
#[derive(Debug, Default)]
pub struct CompactReport {
    /// The epoch committed (none when the warehouse has no epoch yet).
    pub epoch: Option<u64>,
    /// Live data files per table, before and after.
    pub files: BTreeMap<&'static str, (usize, usize)>,
    /// Snapshots expired.
    pub snapshots_expired: usize,
    /// Unreferenced data files deleted.
    pub orphans_removed: usize,
}

/// Runs one compaction epoch on the warehouse at `root`; see the module docs.
pub fn compact(
    root: &Path,
    key_dir: &Path,
    signing_seed: &[u8; 32],
    sink_id: &str,
    policy: Policy,
) -> Result<CompactReport, PipelineError> {
    if !root.join("catalog.db").is_file() {
        return Err(PipelineError::SinkStopped(format!(
            "{} is not a custody warehouse (no catalog.db)",
            root.display()
        )));
    }
    let _lock = lock_warehouse(root)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(custody_operators::Error::Io)?;
    let warehouse = runtime.block_on(Warehouse::open(root))?;
    let resume = runtime.block_on(warehouse.resume_state())?;
    let signer = Signer::from_seed(signing_seed);
    let watermark: PathBuf = watermark_path(key_dir, warehouse.root());
    resume.verify(&signer.public_key(), Watermark::read(&watermark)?.as_ref())?;
    let mut report = CompactReport::default();
    let Some(last) = resume.last_epoch else {
        return Ok(report);
    };
    let positions = runtime
        .block_on(warehouse.epoch_positions(last))?
        .ok_or_else(|| {
            PipelineError::SinkStopped(format!(
                "custody.epochs has no commit for its last epoch {last}"
            ))
        })?;
    for name in compaction::COMPACTED_TABLES {
        let table = runtime.block_on(warehouse.table(name))?;
        let (live, _) = runtime.block_on(compaction::live_files(&table))?;
        report.files.insert(name, (live.len(), 0));
    }
    let epoch = last + 1;
    let now = now_us();
    let mut records = Vec::new();
    let mut tenants: Vec<&String> = resume.heads.keys().collect();
    tenants.sort();
    for tenant in tenants {
        let log = &resume.heads[tenant];
        let cp = signer.checkpoint(
            tenant,
            log.merkle.size(),
            &log.merkle.root(),
            &log.head,
            epoch,
            now,
            &log.last_checkpoint,
        );
        records.push(SinkRecord::Checkpoint(Box::new(cp)));
    }
    let prev = resume
        .last_record
        .as_ref()
        .and_then(|r| r.seal())
        .map_or([0; 32], |s| s.hash());
    let mut sink = IcebergSink::new(warehouse, sink_id.to_string(), Metrics::new())
        .with_sealer(Sealer {
            signer,
            prev,
            watermark: Some(watermark),
        })
        .with_compaction(CompactSchedule::new(1, policy));
    runtime.block_on(sink.commit_epoch(epoch, records, Vec::new(), &positions))?;
    report.epoch = Some(epoch);
    let warehouse = sink.warehouse();
    report.snapshots_expired = runtime.block_on(warehouse.expire_history())?;
    report.orphans_removed = runtime.block_on(warehouse.remove_orphans(epoch))?;
    for name in compaction::COMPACTED_TABLES {
        let table = runtime.block_on(warehouse.table(name))?;
        let (live, _) = runtime.block_on(compaction::live_files(&table))?;
        if let Some(counts) = report.files.get_mut(name) {
            counts.1 = live.len();
        }
    }
    Ok(report)
}
