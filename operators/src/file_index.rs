//! Which data files of a table may hold one tenant's rows, without re-reading the table's
//! manifests for every query.
//!
//! A query of tenant `T` needs the live data files of the table's current snapshot that can
//! hold `T`: those whose partition admits `T` (the `bucket(tenant_id)` of [`crate::layout`])
//! and whose `tenant_id` bounds include `T`. Iceberg's own planning answers that too, but it
//! parses every manifest again for each new table version, and each epoch makes one; here
//! manifests (immutable files, named uniquely) are parsed once per process and kept.
//!
//! A query bounded in `seq` (a page's window, a lookup by position) is narrowed further, to
//! the files with a row group whose `tenant_id` and `seq` statistics admit both: a tenant's
//! rows of a window sit in one or two of the dozens of files of its partitions. Those ranges
//! are read once per file from its Parquet footer.
//!
//! # State and its bound
//! Parsed manifest lists, manifests and files' key ranges by path, at most
//! [`ManifestCache::CAPACITY`] of each; past it the oldest are dropped (a table's live
//! manifests are few after compaction).
//!
//! # Failure modes
//! An unreadable manifest list or manifest is an error; a snapshot with delete files is an
//! error ([`Error::Unsupported`]): Custody never writes them, and reading around them would
//! return deleted rows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use iceberg::spec::{
    DataContentType, Datum, Literal, Manifest, ManifestContentType, ManifestList, PrimitiveLiteral,
    Transform,
};
use iceberg::table::Table;
use iceberg::transform::create_transform_function;

use crate::error::{Error, Result};

/// One data file a query must read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFileRef {
    /// Its location (`file://…`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Parsed manifests and manifest lists, by path.
#[derive(Default)]
pub struct ManifestCache {
    lists: Mutex<Lru<ManifestList>>,
    manifests: Mutex<Lru<Manifest>>,
    keys: Mutex<Lru<Vec<RowGroupKeys>>>,
}

/// What one row group holds of `tenant_id` and `seq` (its statistics; `None` if absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowGroupKeys {
    tenants: Option<(Vec<u8>, Vec<u8>)>,
    seqs: Option<(i64, i64)>,
}

impl RowGroupKeys {
    /// Whether the group may hold a row of `tenant` with `seq` in `seqs`.
    fn admits(&self, tenant: &str, seqs: &std::ops::Range<i64>) -> bool {
        let tenant_ok = self.tenants.as_ref().is_none_or(|(lo, hi)| {
            let t = tenant.as_bytes();
            t >= lo.as_slice() && (t <= hi.as_slice() || t.starts_with(hi))
        });
        let seq_ok = self
            .seqs
            .is_none_or(|(lo, hi)| lo < seqs.end && hi >= seqs.start);
        tenant_ok && seq_ok
    }
}

/// A map of at most [`ManifestCache::CAPACITY`] entries dropping the oldest first.
struct Lru<T> {
    entries: HashMap<String, Arc<T>>,
    order: VecDeque<String>,
}

impl<T> Default for Lru<T> {
    fn default() -> Self {
        Lru {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> Lru<T> {
    fn get(&self, key: &str) -> Option<Arc<T>> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, value: Arc<T>) {
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > ManifestCache::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

impl ManifestCache {
    /// Manifest lists, and manifests, kept.
    pub const CAPACITY: usize = 4096;

    async fn list(&self, table: &Table, path: &str) -> Result<Arc<ManifestList>> {
        if let Some(hit) = self.lists.lock().ok().and_then(|l| l.get(path)) {
            return Ok(hit);
        }
        let bytes = table.file_io().new_input(path)?.read().await?;
        let list = Arc::new(ManifestList::parse_with_version(
            &bytes,
            table.metadata().format_version(),
        )?);
        if let Ok(mut lists) = self.lists.lock() {
            lists.insert(path.to_string(), Arc::clone(&list));
        }
        Ok(list)
    }

    async fn manifest(
        &self,
        table: &Table,
        file: &iceberg::spec::ManifestFile,
    ) -> Result<Arc<Manifest>> {
        let path = file.manifest_path.as_str();
        if let Some(hit) = self.manifests.lock().ok().and_then(|m| m.get(path)) {
            return Ok(hit);
        }
        let manifest = Arc::new(file.load_manifest(table.file_io()).await?);
        if let Ok(mut manifests) = self.manifests.lock() {
            manifests.insert(path.to_string(), Arc::clone(&manifest));
        }
        Ok(manifest)
    }

    /// The `tenant_id` and `seq` ranges of each row group of `file`, from its footer.
    async fn keys(&self, table: &Table, file: &DataFileRef) -> Result<Arc<Vec<RowGroupKeys>>> {
        use parquet::errors::ParquetError;
        use parquet::file::metadata::ParquetMetaDataReader;
        if let Some(hit) = self.keys.lock().ok().and_then(|k| k.get(&file.path)) {
            return Ok(hit);
        }
        let reader = table.file_io().new_input(&file.path)?.reader().await?;
        let size = file.size;
        let mut want = size.min(64 * 1024);
        let metadata = loop {
            let bytes = reader.read(size - want..size).await?;
            let mut parser = ParquetMetaDataReader::new();
            match parser.try_parse_sized(&bytes, size) {
                Ok(()) => break parser.finish()?,
                Err(ParquetError::NeedMoreData(n)) if n as u64 > want && n as u64 <= size => {
                    want = n as u64
                }
                Err(e) => return Err(e.into()),
            }
        };
        let columns = metadata.file_metadata().schema_descr().columns();
        let position = |name: &str| columns.iter().position(|c| c.name() == name);
        let (tenant_at, seq_at) = (position("tenant_id"), position("seq"));
        let mut groups = Vec::with_capacity(metadata.num_row_groups());
        for group in metadata.row_groups() {
            let stats = |at: Option<usize>| {
                at.and_then(|i| group.column(i).statistics())
                    .and_then(|s| Some((s.min_bytes_opt()?, s.max_bytes_opt()?)))
            };
            let seq = |b: &[u8]| b.try_into().ok().map(i64::from_le_bytes);
            groups.push(RowGroupKeys {
                tenants: stats(tenant_at).map(|(lo, hi)| (lo.to_vec(), hi.to_vec())),
                seqs: stats(seq_at).and_then(|(lo, hi)| Some((seq(lo)?, seq(hi)?))),
            });
        }
        let groups = Arc::new(groups);
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(file.path.clone(), Arc::clone(&groups));
        }
        Ok(groups)
    }

    /// The live data files of `table`'s current snapshot that may hold rows of `tenant`
    /// (with `seq` in `seqs`, when given), in manifest order.
    pub async fn tenant_files(
        &self,
        table: &Table,
        tenant: &str,
        seqs: Option<std::ops::Range<i64>>,
    ) -> Result<Vec<DataFileRef>> {
        let files = self.partition_files(table, tenant).await?;
        let Some(seqs) = seqs else {
            return Ok(files);
        };
        let mut out = Vec::with_capacity(files.len());
        for file in files {
            let keys = self.keys(table, &file).await?;
            if keys.iter().any(|g| g.admits(tenant, &seqs)) {
                out.push(file);
            }
        }
        Ok(out)
    }

    /// The live data files of `table`'s current snapshot whose partition and `tenant_id`
    /// bounds admit `tenant`.
    async fn partition_files(&self, table: &Table, tenant: &str) -> Result<Vec<DataFileRef>> {
        let metadata = table.metadata();
        let Some(snapshot) = metadata.current_snapshot() else {
            return Ok(Vec::new());
        };
        let tenant_field = metadata
            .current_schema()
            .field_by_name("tenant_id")
            .map(|f| f.id);
        let list = self.list(table, snapshot.manifest_list()).await?;
        let deletes = || Error::Unsupported(format!("{} has delete files", table.identifier()));
        let mut out = Vec::new();
        for file in list.entries() {
            if file.content != ManifestContentType::Data {
                return Err(deletes());
            }
            let manifest = self.manifest(table, file).await?;
            let partition = tenant_partition(manifest.metadata().partition_spec(), tenant_field);
            let wanted = partition
                .map(|(_, transform)| bucket_of(transform, tenant))
                .transpose()?;
            for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
                let data = entry.data_file();
                if data.content_type() != DataContentType::Data {
                    return Err(deletes());
                }
                if let (Some((index, _)), Some(wanted)) = (partition, wanted)
                    && data.partition().fields().get(index).cloned().flatten()
                        != Some(Literal::Primitive(PrimitiveLiteral::Int(wanted)))
                {
                    continue;
                }
                if let Some(id) = tenant_field
                    && !within_bounds(
                        tenant,
                        data.lower_bounds().get(&id),
                        data.upper_bounds().get(&id),
                    )
                {
                    continue;
                }
                out.push(DataFileRef {
                    path: data.file_path().to_string(),
                    size: data.file_size_in_bytes(),
                });
            }
        }
        Ok(out)
    }
}

/// The position and transform of the spec's partition field over `tenant_id`, if any.
fn tenant_partition(
    spec: &iceberg::spec::PartitionSpec,
    tenant_field: Option<i32>,
) -> Option<(usize, &Transform)> {
    let tenant_field = tenant_field?;
    spec.fields()
        .iter()
        .position(|f| f.source_id == tenant_field)
        .map(|i| (i, &spec.fields()[i].transform))
}

/// The partition value `transform` gives `tenant`.
fn bucket_of(transform: &Transform, tenant: &str) -> Result<i32> {
    let value = create_transform_function(transform)?.transform_literal(&Datum::string(tenant))?;
    match value.as_ref().map(Datum::literal) {
        Some(PrimitiveLiteral::Int(v)) => Ok(*v),
        other => Err(Error::Unsupported(format!(
            "tenant partition value {other:?} is not an int"
        ))),
    }
}

/// Whether a file whose `tenant_id` bounds are `lower`..=`upper` may hold `tenant`. Bounds may
/// be truncated: a lower bound is then a prefix (still below), an upper bound a prefix of the
/// largest value (so a tenant it prefixes may be in the file).
fn within_bounds(tenant: &str, lower: Option<&Datum>, upper: Option<&Datum>) -> bool {
    let text = |d: Option<&Datum>| match d.map(Datum::literal) {
        Some(PrimitiveLiteral::String(s)) => Some(s.clone()),
        _ => None,
    };
    if let Some(lower) = text(lower)
        && tenant < lower.as_str()
    {
        return false;
    }
    if let Some(upper) = text(upper)
        && tenant > upper.as_str()
        && !tenant.starts_with(upper.as_str())
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_keep_every_tenant_they_may_hold() {
        let (a, m) = (Datum::string("tenant-0100"), Datum::string("tenant-0500"));
        assert!(within_bounds("tenant-0100", Some(&a), Some(&m)));
        assert!(within_bounds("tenant-0300", Some(&a), Some(&m)));
        assert!(within_bounds("tenant-0500", Some(&a), Some(&m)));
        assert!(!within_bounds("tenant-0099", Some(&a), Some(&m)));
        assert!(!within_bounds("tenant-0501", Some(&a), Some(&m)));
        // A truncated upper bound prefixes the largest tenant: a longer name may be there.
        let truncated = Datum::string("tenant-05");
        assert!(within_bounds("tenant-0501", Some(&a), Some(&truncated)));
        assert!(!within_bounds("tenant-06", Some(&a), Some(&truncated)));
        // No bounds: the file may hold anything.
        assert!(within_bounds("x", None, None));
    }

    #[test]
    fn row_groups_admit_a_tenant_and_positions_they_may_hold() {
        let group = RowGroupKeys {
            tenants: Some((b"tenant-0100".to_vec(), b"tenant-0200".to_vec())),
            seqs: Some((40, 90)),
        };
        assert!(group.admits("tenant-0150", &(0..41)));
        assert!(group.admits("tenant-0100", &(90..91)));
        assert!(!group.admits("tenant-0150", &(0..40)));
        assert!(!group.admits("tenant-0150", &(91..100)));
        assert!(!group.admits("tenant-0201", &(0..100)));
        // Missing statistics admit everything.
        let blind = RowGroupKeys {
            tenants: None,
            seqs: None,
        };
        assert!(blind.admits("anyone", &(5..6)));
    }

    #[test]
    fn the_cache_drops_the_oldest_past_its_capacity() {
        let mut lru: Lru<u32> = Lru::default();
        for i in 0..ManifestCache::CAPACITY + 3 {
            lru.insert(format!("m{i}"), Arc::new(i as u32));
        }
        assert_eq!(lru.entries.len(), ManifestCache::CAPACITY);
        assert!(lru.get("m0").is_none() && lru.get("m2").is_none());
        assert_eq!(lru.get("m3").as_deref(), Some(&3));
        // Inserting a key again does not count it twice.
        lru.insert("m3".into(), Arc::new(7));
        assert_eq!(lru.order.len(), ManifestCache::CAPACITY);
    }
}
