//! Compaction: merging a table's small data files into larger ones, as part of an epoch.
//!
//! # What is merged
//! Per partition ([`crate::layout`]), files are grouped in size tiers (each tier four times the
//! one below, from 1 MiB); a tier holding at least [`Policy::min_files`] files is merged,
//! together with every smaller file of the partition, into one file (rows sorted by the
//! table's order: `(tenant, seq)` for events). Files of [`Policy::target_bytes`] or more are
//! never inputs. A partition thus holds a bounded number of files per tier, tiers grow by four,
//! and a row is rewritten about log4(table size) times in all.
//!
//! # How it is committed
//! A compaction rides on an epoch's commit, so it is under that epoch's seal and its crash
//! recovery: the output files are written (not visible) before the epoch's commit point, the
//! epoch's manifest names them and the input files they replace
//! ([`crate::sinks::iceberg::EpochManifest::compacted`]), and the table's commit for that epoch
//! is one snapshot that adds the epoch's own files and the outputs and removes the inputs
//! ([`commit_replacing`]). `custody verify` replays the manifests: a replaced file leaves the
//! sealed set, its replacement enters it, and the row counts must match. A crash anywhere in
//! between either leaves the outputs unreferenced (before the commit point: orphans) or is
//! rolled forward from the manifest like any other commit.
//!
//! # Bounds
//! Reads at most [`Policy::max_input_bytes`] of input per table per compaction, in memory.
//!
//! # Failure modes
//! An input that cannot be read, or outputs whose row count differs from the inputs', fail the
//! compaction (and so the epoch's commit, which is retried from the source on restart) before
//! anything is visible. A commit that finds the table changed since it was read is a
//! [`Error::CommitConflict`]: Custody is the only writer of its tables.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use iceberg::MetadataLocation;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, ManifestContentType, ManifestEntryRef, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadataBuilder,
};
use iceberg::table::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::Epoch;
use custody_schemas::tables;

/// The tables compacted: every table an epoch appends to but the commit log itself
/// (`custody.epochs`, whose rows are the seals).
pub const COMPACTED_TABLES: [&str; 7] = [
    tables::EVENTS,
    tables::VIEW_CHANGES,
    tables::CHECKPOINTS,
    tables::CHAIN_HEADS,
    tables::QUARANTINE,
    tables::VAULT,
    tables::EMITTER_HEADS,
];

/// When and how much to compact.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// A size tier is merged once it holds this many files.
    pub min_files: usize,
    /// Files at least this large are left alone.
    pub target_bytes: u64,
    /// At most this many bytes of input per table per compaction.
    pub max_input_bytes: u64,
    /// Rows per row group in the outputs (small groups let a tenant's query skip the rest).
    pub row_group_rows: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_files: 4,
            target_bytes: 256 << 20,
            max_input_bytes: 512 << 20,
            row_group_rows: 8192,
        }
    }
}

/// One merge, as recorded in an epoch's manifest: the data files replaced (by path) and their
/// replacement (Iceberg's JSON form of a data file, like the manifest's other entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// Paths of the files replaced.
    pub inputs: Vec<String>,
    /// The files replacing them.
    pub outputs: Vec<String>,
    /// Rows in the outputs: the inputs' rows, less `expired`.
    pub rows: u64,
    /// Rows of the inputs removed by retention ([`crate::retention`]), not carried over.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expired: u64,
    /// A derived table rebuilt whole: the inputs are every file the table held, the epoch's
    /// own files replace them (the views' changelog after retention), and the row counts are
    /// not compared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuild: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A merge written but not committed: its record and its output files with their SHA-256.
#[derive(Debug)]
pub struct Staged {
    /// What the epoch's manifest records.
    pub record: Compaction,
    /// The output files.
    pub files: Vec<DataFile>,
    /// Output path → SHA-256, hex.
    pub sha256: Vec<(String, String)>,
}

/// The live data files of `table`'s current snapshot (manifest entries, with their sequence
/// numbers), and its delete manifests (carried over untouched by a rewrite).
pub async fn live_files(table: &Table) -> Result<(Vec<ManifestEntryRef>, Vec<ManifestFile>)> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let list = load_manifest_list(table.file_io(), snapshot.manifest_list(), metadata).await?;
    let mut live = Vec::new();
    let mut deletes = Vec::new();
    for manifest in list.consume_entries() {
        if manifest.content != ManifestContentType::Data {
            deletes.push(manifest);
            continue;
        }
        let loaded = manifest.load_manifest(table.file_io()).await?;
        live.extend(loaded.entries().iter().filter(|e| e.is_alive()).cloned());
    }
    Ok((live, deletes))
}

/// Every data file live in `snapshot` of `table`, in the manifests not in `seen` (which it
/// extends: snapshots share most manifests). A file a snapshot deleted (a compaction's
/// input) is live in its parent, so it stays referenced until that snapshot expires.
pub async fn snapshot_files(
    table: &Table,
    snapshot: &iceberg::spec::Snapshot,
    seen: &mut std::collections::HashSet<String>,
) -> Result<Vec<String>> {
    let list =
        load_manifest_list(table.file_io(), snapshot.manifest_list(), table.metadata()).await?;
    let mut out = Vec::new();
    for manifest in list.consume_entries() {
        if !seen.insert(manifest.manifest_path.clone()) {
            continue;
        }
        let loaded = manifest.load_manifest(table.file_io()).await?;
        out.extend(
            loaded
                .entries()
                .iter()
                .filter(|e| e.is_alive())
                .map(|e| e.file_path().to_string()),
        );
    }
    Ok(out)
}

async fn load_manifest_list(
    io: &FileIO,
    path: &str,
    metadata: &iceberg::spec::TableMetadata,
) -> Result<ManifestList> {
    let bytes = io.new_input(path)?.read().await?;
    Ok(ManifestList::parse_with_version(
        &bytes,
        metadata.format_version(),
    )?)
}

/// The size tier of a file: 0 below 1 MiB, then one per factor of four.
fn tier(bytes: u64) -> u32 {
    let mib = (bytes >> 20).max(1);
    (63 - mib.leading_zeros()) / 2 + u32::from(bytes >= 1 << 20)
}

/// The files of `live` to merge, per partition: see the module docs.
pub fn plan(live: &[ManifestEntryRef], policy: &Policy) -> Vec<Vec<ManifestEntryRef>> {
    let mut partitions: Vec<(String, Vec<ManifestEntryRef>)> = Vec::new();
    for entry in live {
        let file = entry.data_file();
        if file.file_size_in_bytes() >= policy.target_bytes {
            continue;
        }
        let key = format!("{:?}", file.partition());
        match partitions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, files)) => files.push(entry.clone()),
            None => partitions.push((key, vec![entry.clone()])),
        }
    }
    let mut out = Vec::new();
    let mut budget = policy.max_input_bytes;
    for (_, mut files) in partitions {
        files.sort_by_key(|e| e.data_file().file_size_in_bytes());
        let mut per_tier: BTreeMap<u32, usize> = BTreeMap::new();
        for e in &files {
            *per_tier
                .entry(tier(e.data_file().file_size_in_bytes()))
                .or_default() += 1;
        }
        // The highest tier with enough files: it and everything smaller.
        let Some(top) = per_tier
            .iter()
            .rev()
            .find(|(_, n)| **n >= policy.min_files)
            .map(|(t, _)| *t)
        else {
            continue;
        };
        let mut inputs = Vec::new();
        let mut bytes = 0;
        for e in files {
            let size = e.data_file().file_size_in_bytes();
            if tier(size) > top || bytes + size > budget {
                break;
            }
            bytes += size;
            inputs.push(e);
        }
        if inputs.len() >= 2 {
            budget -= bytes;
            // Oldest first, so unsorted tables keep their rows in commit order.
            inputs.sort_by_key(|e| (e.sequence_number(), e.data_file().file_path().to_string()));
            out.push(inputs);
        }
        if budget == 0 {
            break;
        }
    }
    out
}

/// The sort columns of a table's compacted files (none: commit order).
fn sort_columns(name: &str) -> &'static [&'static str] {
    match name {
        tables::EVENTS => &["tenant_id", "seq"],
        tables::VIEW_CHANGES => &["tenant_id", "view", "key", "epoch"],
        _ => &[],
    }
}

/// Reads `inputs`, merges them in `name`'s order and writes the result as `epoch`'s
/// compaction files (not visible until committed).
pub async fn merge(
    table: &Table,
    name: &str,
    epoch: Epoch,
    inputs: &[ManifestEntryRef],
    policy: &Policy,
) -> Result<Staged> {
    let mut batches = Vec::new();
    let mut rows = 0u64;
    for entry in inputs {
        let bytes = table.file_io().new_input(entry.file_path())?.read().await?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            batches.push(batch);
        }
    }
    let expected: u64 = inputs.iter().map(|e| e.record_count()).sum();
    let fail = |detail: String| Error::Compaction {
        table: name.to_string(),
        detail,
    };
    if rows != expected {
        return Err(fail(format!(
            "the inputs hold {rows} rows, their manifest entries {expected}"
        )));
    }
    let Some(first) = batches.first() else {
        return Err(fail("no input rows".into()));
    };
    let schema = first.schema();
    let mut merged = arrow_select::concat::concat_batches(&schema, &batches)?;
    drop(batches);
    let keys = sort_columns(name);
    if !keys.is_empty() {
        let columns = keys
            .iter()
            .map(|k| {
                merged
                    .column_by_name(k)
                    .cloned()
                    .map(|values| arrow_ord::sort::SortColumn {
                        values,
                        options: None,
                    })
                    .ok_or_else(|| fail(format!("no column {k}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let order = arrow_ord::sort::lexsort_to_indices(&columns, None)?;
        merged = arrow_select::take::take_record_batch(&merged, &order)?;
    }
    let files = crate::sinks::iceberg::write_parquet(
        table,
        &format!("compact-{epoch:012}"),
        merged,
        Some(policy.row_group_rows),
    )
    .await?;
    let written: u64 = files.iter().map(|f| f.record_count()).sum();
    if written != rows {
        return Err(fail(format!("wrote {written} rows of {rows}")));
    }
    let mut sha256 = Vec::with_capacity(files.len());
    for f in &files {
        let digest = crate::sinks::iceberg::data_file_sha256(table, f.file_path()).await?;
        sha256.push((f.file_path().to_string(), digest));
    }
    let outputs = crate::sinks::iceberg::data_files_json(table, &files)?;
    Ok(Staged {
        record: Compaction {
            inputs: inputs.iter().map(|e| e.file_path().to_string()).collect(),
            outputs,
            rows,
            ..Compaction::default()
        },
        files,
        sha256,
    })
}

/// Plans and writes `table`'s compactions for `epoch` (nothing visible yet).
pub async fn stage(
    table: &Table,
    name: &str,
    epoch: Epoch,
    policy: &Policy,
) -> Result<Vec<Staged>> {
    let (live, _) = live_files(table).await?;
    let mut out = Vec::new();
    for inputs in plan(&live, policy) {
        out.push(merge(table, name, epoch, &inputs, policy).await?);
    }
    Ok(out)
}

/// Commits to `table` one snapshot that adds `added` and removes the files named in
/// `removed`, with `summary` (the epoch's commit id and positions) and every other live file
/// kept: all live data files go into one new manifest, so a table's manifests do not pile up
/// either. The catalog row is swapped only if the table is still at the metadata read
/// ([`Error::CommitConflict`] otherwise).
pub async fn commit_replacing(
    catalog_db: &Path,
    table: &Table,
    name: &str,
    added: Vec<DataFile>,
    removed: &HashSet<String>,
    summary: std::collections::HashMap<String, String>,
) -> Result<()> {
    let metadata = table.metadata();
    let io = table.file_io();
    let (live, deletes) = live_files(table).await?;
    let parent = metadata.current_snapshot().map(|s| s.snapshot_id());
    let sequence = metadata.next_sequence_number();
    let snapshot_id = unique_snapshot_id(metadata);
    let uuid = uuid::Uuid::new_v4();
    let location = metadata.location();
    let manifest_path = format!("{location}/metadata/{uuid}-m0.avro");
    let mut writer = ManifestWriterBuilder::new(
        io.new_output(&manifest_path)?,
        Some(snapshot_id),
        metadata.current_schema().clone(),
        metadata.default_partition_spec().as_ref().clone(),
    )
    .build_v2_data();
    let mut found = 0;
    let mut deleted_rows = 0u64;
    for entry in live {
        let file = entry.data_file().clone();
        let seq = entry.sequence_number().unwrap_or(0);
        if removed.contains(entry.file_path()) {
            found += 1;
            deleted_rows += entry.record_count();
            writer.add_delete_file(file, seq, entry.file_sequence_number)?;
        } else {
            writer.add_existing_file(
                file,
                entry.snapshot_id().unwrap_or(0),
                seq,
                entry.file_sequence_number,
            )?;
        }
    }
    if found != removed.len() {
        return Err(Error::Compaction {
            table: name.to_string(),
            detail: format!(
                "{} of the {} files to replace are not live in the table",
                removed.len() - found,
                removed.len()
            ),
        });
    }
    let added_rows: u64 = added.iter().map(|f| f.record_count()).sum();
    let added_files = added.len();
    for file in added {
        writer.add_file(file, sequence)?;
    }
    let manifest = writer.write_manifest_file().await?;
    let list_path = format!("{location}/metadata/snap-{snapshot_id}-1-{uuid}.avro");
    let mut list = ManifestListWriter::v2(
        io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        parent,
        sequence,
    );
    list.add_manifests(std::iter::once(manifest).chain(deletes))?;
    list.close().await?;
    let mut properties = summary;
    properties.insert("added-data-files".into(), added_files.to_string());
    properties.insert("deleted-data-files".into(), removed.len().to_string());
    properties.insert("added-records".into(), added_rows.to_string());
    properties.insert("deleted-records".into(), deleted_rows.to_string());
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence)
        .with_timestamp_ms(custody_schemas::time::now_us() / 1000)
        .with_manifest_list(list_path)
        .with_schema_id(metadata.current_schema_id())
        .with_summary(Summary {
            operation: if removed.is_empty() {
                Operation::Append
            } else {
                Operation::Overwrite
            },
            additional_properties: properties,
        })
        .build();
    let current = table.metadata_location_result()?.to_string();
    let next = TableMetadataBuilder::new_from_metadata(metadata.clone(), Some(current.clone()))
        .set_branch_snapshot(snapshot, "main")?
        .build()?
        .metadata;
    // A new file (next version, new id): the current one is never written over, since
    // readers may be reading it (an overwrite in place showed as metadata with trailing
    // characters to a concurrent query).
    let next_location = current
        .parse::<MetadataLocation>()?
        .with_next_version()
        .with_new_metadata(&next);
    next.write_to(io, &next_location).await?;
    swap_metadata(
        catalog_db,
        table,
        name,
        &current,
        &next_location.to_string(),
    )
    .await
}

/// Points the catalog's row for `table` at `next` if it is still at `current`.
async fn swap_metadata(
    catalog_db: &Path,
    table: &Table,
    name: &str,
    current: &str,
    next: &str,
) -> Result<()> {
    use sqlx::Connection;
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rw", catalog_db.display()))
            .await?;
    let ident = table.identifier();
    let done = sqlx::query(
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
         AND metadata_location = ?",
    )
    .bind(next)
    .bind(current)
    .bind(crate::sinks::iceberg::CATALOG_NAME)
    .bind(ident.namespace().join("."))
    .bind(ident.name())
    .bind(current)
    .execute(&mut db)
    .await?;
    db.close().await?;
    if done.rows_affected() != 1 {
        return Err(Error::CommitConflict(name.to_string()));
    }
    Ok(())
}

fn unique_snapshot_id(metadata: &iceberg::spec::TableMetadata) -> i64 {
    loop {
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_grow_by_four() {
        assert_eq!(tier(0), 0);
        assert_eq!(tier(1 << 19), 0);
        assert_eq!(tier(1 << 20), 1);
        assert_eq!(tier((4 << 20) - 1), 1);
        assert_eq!(tier(4 << 20), 2);
        assert_eq!(tier(16 << 20), 3);
        assert_eq!(tier(64 << 20), 4);
    }
}
