//! `custody compact`: compaction, snapshot expiry and orphan removal on a warehouse no
//! pipeline is writing to.
//!
//! A compaction is always committed with an epoch, under its seal
//! ([`custody_operators::compaction`]), so this command commits one epoch of its own: no
//! records, the source positions and views' clock of the last epoch restated, no checkpoint
//! (no log grew; the seal restates every tenant's latest one), and every table's due merges.
//! A later run resumes after it like after any epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use custody_operators::checkpoint::Signer;
use custody_operators::compaction::{self, Policy};
use custody_operators::metrics::Metrics;
use custody_operators::sinks::iceberg::{CompactSchedule, IcebergSink, Warehouse, Watermark};

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
    previous_signers: &[ed25519_dalek::VerifyingKey],
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
    let trusted: Vec<_> = std::iter::once(signer.public_key())
        .chain(previous_signers.iter().copied())
        .collect();
    resume.verify(&trusted, Watermark::read(&watermark)?.as_ref())?;
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
    // No log grew: nothing to checkpoint. The seal restates every tenant's latest checkpoint.
    let sealer = resume.sealer(signer, Some(watermark));
    let mut sink = IcebergSink::new(warehouse, sink_id.to_string(), Metrics::new())
        .with_sealer(sealer)
        .with_compaction(CompactSchedule::new(1, policy));
    runtime.block_on(sink.commit_epoch(epoch, Vec::new(), Vec::new(), &positions))?;
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
