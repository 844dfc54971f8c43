//! Where a warehouse's Iceberg tables live: the local directory `<warehouse>/data`, or an
//! S3-compatible bucket reached through iceberg's storage layer (OpenDAL's S3 service).
//!
//! The catalog (`catalog.db`), the state snapshots and heads files, the proof store and the
//! key directory stay on the machine; table data and metadata files go to the location
//! recorded in `<warehouse>/storage.json` when the warehouse is created, so every later
//! opener (`verify`, `export`, the API) finds them without configuration. Credentials are
//! never recorded: they come from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or a profile).
//!
//! # State
//! None beyond the record file.
//!
//! # Failure modes
//! A warehouse whose recorded location differs from the configured one is refused
//! ([`Error::WarehouseDamaged`]), as is an unreadable record; storage failures are
//! [`Error::ObjectStorage`] (external, retried by callers that retry).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorageFactory, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg_storage_opendal::OpenDalStorage;
use opendal::services::S3Config;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file, in the warehouse directory, recording where its tables live.
pub const STORAGE_FILE: &str = "storage.json";

/// Where a warehouse's tables live, as recorded in [`STORAGE_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// `s3://bucket/prefix`: the tables are `<location>/custody/<table>`.
    pub location: String,
    /// The S3 endpoint (`http://127.0.0.1:9000`); none for AWS itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when none is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    #[serde(default)]
    pub path_style: bool,
    /// The bucket has S3 Object Lock with a default retention, so every object written is
    /// locked: each file is then written in one PUT carrying `Content-MD5`, as S3 requires
    /// of writes under Object Lock (a multipart upload's parts cannot carry it here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub object_lock: bool,
}

impl StorageSpec {
    /// Checks the location names a bucket: `s3://bucket[/prefix]`.
    pub fn validate(&self) -> Result<()> {
        let (bucket, _) = self.bucket_and_prefix()?;
        if bucket.is_empty() {
            return Err(Error::StorageConfig(format!(
                "{}: no bucket (expected s3://bucket/prefix)",
                self.location
            )));
        }
        Ok(())
    }

    fn bucket_and_prefix(&self) -> Result<(&str, &str)> {
        let rest = self
            .location
            .strip_prefix("s3://")
            .or_else(|| self.location.strip_prefix("s3a://"))
            .ok_or_else(|| {
                Error::StorageConfig(format!(
                    "{}: only s3:// locations are supported for object storage",
                    self.location
                ))
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Ok((bucket, prefix.trim_matches('/')))
    }

    /// The location without a trailing slash.
    fn base(&self) -> &str {
        self.location.trim_end_matches('/')
    }

    /// Iceberg FileIO properties (`s3.*`), credentials from the AWS environment if set there.
    fn props(&self) -> HashMap<String, String> {
        let mut props = HashMap::new();
        if let Some(endpoint) = &self.endpoint {
            props.insert("s3.endpoint".into(), endpoint.clone());
        }
        props.insert(
            "s3.region".into(),
            self.region.clone().unwrap_or_else(|| "us-east-1".into()),
        );
        props.insert("s3.path-style-access".into(), self.path_style.to_string());
        for (var, prop) in [
            ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
            ("AWS_SESSION_TOKEN", "s3.session-token"),
        ] {
            if let Ok(value) = std::env::var(var) {
                props.insert(prop.into(), value);
            }
        }
        if self.endpoint.is_some() {
            // A private endpoint: no instance metadata service to ask.
            props.insert("s3.disable-ec2-metadata".into(), "true".into());
        }
        if self.object_lock {
            props.insert(OBJECT_LOCK_PROP.into(), "true".into());
        }
        props
    }

    /// An OpenDAL operator on the bucket, rooted at the location's prefix (for listing).
    fn operator(&self) -> Result<opendal::Operator> {
        let (bucket, prefix) = self.bucket_and_prefix()?;
        let props = self.props();
        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .root(&format!("/{prefix}"))
            .region(&props["s3.region"]);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint).disable_ec2_metadata();
        }
        if !self.path_style {
            builder = builder.enable_virtual_host_style();
        }
        if let Some(v) = props.get("s3.access-key-id") {
            builder = builder.access_key_id(v);
        }
        if let Some(v) = props.get("s3.secret-access-key") {
            builder = builder.secret_access_key(v);
        }
        if let Some(v) = props.get("s3.session-token") {
            builder = builder.session_token(v);
        }
        Ok(opendal::Operator::new(builder)?.finish())
    }

    fn write_record(root: &Path, spec: &StorageSpec) -> Result<()> {
        spec.validate()?;
        std::fs::create_dir_all(root)?;
        let tmp = root.join(format!("{STORAGE_FILE}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(spec).expect("spec serializes");
        bytes.push(b'\n');
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, root.join(STORAGE_FILE))?;
        Ok(())
    }

    /// The spec recorded in warehouse `root`, if any.
    pub fn recorded(root: &Path) -> Result<Option<StorageSpec>> {
        let path = root.join(STORAGE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::WarehouseDamaged(format!("{} is unreadable: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records `spec` (or, `None`, the local directory) as where warehouse `root` keeps its
    /// tables, for a new warehouse; for an existing one, checks it is what was recorded. A
    /// warehouse never moves silently: its catalog points at the files where they are.
    pub fn record(root: &Path, spec: Option<&StorageSpec>) -> Result<()> {
        let recorded = Self::recorded(root)?;
        let exists = root.join("catalog.db").exists();
        match (recorded.as_ref(), spec) {
            (Some(r), Some(s)) if r == s => Ok(()),
            (None, None) => Ok(()),
            // The same bucket and prefix, reached differently (endpoint, region, addressing
            // style) or with Object Lock turned on since: the record follows the configuration.
            (Some(r), Some(s)) if r.location == s.location => Self::write_record(root, s),
            (None, Some(s)) if !exists => Self::write_record(root, s),
            (r, s) => {
                let name = |s: Option<&StorageSpec>| {
                    s.map_or_else(
                        || format!("{}", root.join("data").display()),
                        |s| s.location.clone(),
                    )
                };
                Err(Error::WarehouseDamaged(format!(
                    "{} keeps its tables in {}, but the configuration puts them in {}; a \
                     warehouse's tables cannot move under its catalog",
                    root.display(),
                    name(r),
                    name(s)
                )))
            }
        }
    }
}

/// The runtime every object storage request runs on. OpenDAL's HTTP client is one per
/// process and pools its connections, each driven by a task of the runtime that opened it;
/// Custody's commands use several runtimes, some short-lived, and a request sent on a
/// connection whose runtime is gone or idle waits until it times out. On one long-lived
/// runtime, every connection is always driven.
static IO: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("custody-storage-io")
        .enable_all()
        .build()
        .expect("storage IO runtime")
});

/// Runs `f` on [`IO`] and awaits it from any runtime.
async fn on_io<T: Send + 'static>(
    f: impl Future<Output = iceberg::Result<T>> + Send + 'static,
) -> iceberg::Result<T> {
    IO.spawn(f).await.map_err(|e| {
        iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            format!("object storage task failed: {e}"),
        )
    })?
}

/// The FileIO property telling [`PinnedS3Factory`] the bucket locks every object.
const OBJECT_LOCK_PROP: &str = "custody.s3.object-lock";

/// The OpenDAL S3 configuration for the FileIO properties [`StorageSpec::props`] sets (the
/// `s3.*` names of Iceberg's S3 FileIO). Iceberg's parser does not expose OpenDAL's
/// `checksum_algorithm`, which buckets under Object Lock need.
fn s3_config(props: &HashMap<String, String>) -> S3Config {
    let mut cfg = S3Config::default();
    let get = |key: &str| props.get(key).cloned();
    let truthy = |key: &str| {
        props
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    cfg.endpoint = get("s3.endpoint");
    cfg.region = get("s3.region");
    cfg.access_key_id = get("s3.access-key-id");
    cfg.secret_access_key = get("s3.secret-access-key");
    cfg.session_token = get("s3.session-token");
    cfg.enable_virtual_host_style = !truthy("s3.path-style-access");
    cfg.disable_ec2_metadata = truthy("s3.disable-ec2-metadata");
    if truthy(OBJECT_LOCK_PROP) {
        cfg.checksum_algorithm = Some("md5".into());
    }
    cfg
}

/// Iceberg's S3 storage (OpenDAL), every request of it run on [`IO`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinnedS3Factory;

#[typetag::serde(name = "CustodyPinnedS3")]
impl StorageFactory for PinnedS3Factory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        let inner = OpenDalStorage::S3 {
            config: Arc::new(s3_config(config.props())),
            customized_credential_load: None,
        };
        Ok(Arc::new(PinnedStorage {
            inner: Arc::new(inner),
            whole_puts: config
                .props()
                .get(OBJECT_LOCK_PROP)
                .is_some_and(|v| v == "true"),
        }))
    }
}

/// A [`Storage`] whose every operation runs on [`IO`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PinnedStorage {
    inner: Arc<dyn Storage>,
    /// Every file is written in one PUT (Object Lock buckets): writers buffer until closed.
    whole_puts: bool,
}

#[async_trait::async_trait]
#[typetag::serde(name = "CustodyPinnedStorage")]
impl Storage for PinnedStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        on_io(async move { inner.exists(&path).await }).await
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        on_io(async move { inner.metadata(&path).await }).await
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        on_io(async move { inner.read(&path).await }).await
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        let reader = on_io(async move { inner.reader(&path).await }).await?;
        Ok(Box::new(PinnedRead(Arc::new(reader))))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        on_io(async move { inner.write(&path, bs).await }).await
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        if self.whole_puts {
            return Ok(Box::new(WholeWrite {
                inner,
                path,
                parts: Vec::new(),
            }));
        }
        let writer = on_io(async move { inner.writer(&path).await }).await?;
        Ok(Box::new(PinnedWrite(Some(writer))))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        on_io(async move { inner.delete(&path).await }).await
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let (inner, path) = (self.inner.clone(), path.to_string());
        on_io(async move { inner.delete_prefix(&path).await }).await
    }

    async fn delete_stream(&self, paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        let inner = self.inner.clone();
        on_io(async move { inner.delete_stream(paths).await }).await
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// A reader whose reads run on [`IO`].
struct PinnedRead(Arc<Box<dyn FileRead>>);

#[async_trait::async_trait]
impl FileRead for PinnedRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        let reader = self.0.clone();
        on_io(async move { reader.read(range).await }).await
    }
}

/// A writer whose writes run on [`IO`] (the writer travels to the task and back).
struct PinnedWrite(Option<Box<dyn FileWrite>>);

impl PinnedWrite {
    fn take(&mut self) -> iceberg::Result<Box<dyn FileWrite>> {
        self.0.take().ok_or_else(|| {
            iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "object storage writer used after a failed write",
            )
        })
    }
}

#[async_trait::async_trait]
impl FileWrite for PinnedWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let mut writer = self.take()?;
        let writer = on_io(async move {
            writer.write(bs).await?;
            Ok(writer)
        })
        .await?;
        self.0 = Some(writer);
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let mut writer = self.take()?;
        let writer = on_io(async move {
            writer.close().await?;
            Ok(writer)
        })
        .await?;
        self.0 = Some(writer);
        Ok(())
    }
}

/// A writer that sends the file in one PUT when closed (so the request can carry the
/// whole body's `Content-MD5`). Holds the file in memory until then: data files are bounded
/// by the table writer's target file size.
struct WholeWrite {
    inner: Arc<dyn Storage>,
    path: String,
    parts: Vec<Bytes>,
}

#[async_trait::async_trait]
impl FileWrite for WholeWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.parts.push(bs);
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let body = match self.parts.len() {
            1 => self.parts.pop().expect("one part"),
            _ => Bytes::from(self.parts.concat()),
        };
        self.parts.clear();
        let (inner, path) = (self.inner.clone(), self.path.clone());
        on_io(async move { inner.write(&path, body).await }).await
    }
}

/// Where the tables of an open warehouse are, and how to reach them.
#[derive(Clone, Debug)]
pub enum TableStorage {
    /// `<root>/data`.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3 {
        /// The recorded spec.
        spec: StorageSpec,
        /// For listing files (orphans), which Iceberg's FileIO does not do.
        operator: opendal::Operator,
    },
}

impl TableStorage {
    /// The storage of warehouse `root` (already canonical), as recorded there.
    pub fn of(root: &Path) -> Result<Self> {
        Ok(match StorageSpec::recorded(root)? {
            None => TableStorage::Local(root.join("data")),
            Some(spec) => {
                let operator = spec.operator()?;
                TableStorage::S3 { spec, operator }
            }
        })
    }

    /// The Iceberg warehouse location (`file:///…/data` or `s3://bucket/prefix`).
    pub fn location(&self) -> String {
        match self {
            TableStorage::Local(dir) => format!("file://{}", dir.display()),
            TableStorage::S3 { spec, .. } => spec.base().to_string(),
        }
    }

    /// The catalog's storage factory and FileIO properties.
    pub fn factory(&self) -> (Arc<dyn StorageFactory>, HashMap<String, String>) {
        match self {
            TableStorage::Local(_) => (Arc::new(LocalFsStorageFactory), HashMap::new()),
            TableStorage::S3 { spec, .. } => (Arc::new(PinnedS3Factory), spec.props()),
        }
    }

    /// Prepares the location for a new or reopened warehouse (the local directory).
    pub fn prepare(&self) -> Result<()> {
        if let TableStorage::Local(dir) = self {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// Every file under `dir` (a location as the catalog writes them: `file:///…` or
    /// `s3://bucket/…`), recursively, as full locations of the same form.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let dir = dir.trim_end_matches('/');
        match self {
            TableStorage::Local(_) => {
                let Some(path) = dir.strip_prefix("file://") else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                let mut stack = vec![PathBuf::from(path)];
                while let Some(d) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let path = entry.path();
                        if path.is_dir() {
                            stack.push(path);
                        } else {
                            out.push(format!("file://{}", path.display()));
                        }
                    }
                }
                Ok(out)
            }
            TableStorage::S3 { spec, operator } => {
                let base = spec.base();
                let Some(relative) = dir.strip_prefix(base) else {
                    return Ok(Vec::new());
                };
                let relative = format!("{}/", relative.trim_start_matches('/'));
                let operator = operator.clone();
                let listed = IO
                    .spawn(async move { operator.list_with(&relative).recursive(true).await })
                    .await
                    .map_err(|e| Error::StorageConfig(format!("object storage task: {e}")))?;
                let entries = match listed {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                Ok(entries
                    .into_iter()
                    .filter(|e| !e.path().ends_with('/'))
                    .map(|e| format!("{base}/{}", e.path().trim_start_matches('/')))
                    .collect())
            }
        }
    }

    /// Whether any file under the tables' location ends with `suffix` (a catalog deleted
    /// while data remains), and one such file.
    pub async fn any_file(&self, suffix: &str) -> Result<Option<String>> {
        Ok(self
            .list(&self.location())
            .await?
            .into_iter()
            .find(|f| f.ends_with(suffix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(location: &str) -> StorageSpec {
        StorageSpec {
            location: location.into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: None,
            path_style: true,
            object_lock: false,
        }
    }

    #[test]
    fn a_warehouse_records_its_storage_once_and_never_moves() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("wh");
        let s3 = spec("s3://bucket/lake");
        StorageSpec::record(&root, Some(&s3)).unwrap();
        assert_eq!(StorageSpec::recorded(&root).unwrap(), Some(s3.clone()));
        // The same again is fine, before and after the catalog exists.
        StorageSpec::record(&root, Some(&s3)).unwrap();
        std::fs::write(root.join("catalog.db"), b"").unwrap();
        StorageSpec::record(&root, Some(&s3)).unwrap();
        // Another bucket, or none, is refused.
        let err = StorageSpec::record(&root, Some(&spec("s3://other/lake"))).unwrap_err();
        assert!(err.to_string().contains("cannot move"), "{err}");
        assert!(StorageSpec::record(&root, None).is_err());
        // The same bucket reached through another endpoint, or locked since: recorded.
        let locked = StorageSpec {
            endpoint: Some("http://127.0.0.1:10".into()),
            object_lock: true,
            ..s3.clone()
        };
        StorageSpec::record(&root, Some(&locked)).unwrap();
        assert_eq!(StorageSpec::recorded(&root).unwrap(), Some(locked));
        // A local warehouse cannot be moved to a bucket.
        let local = dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("catalog.db"), b"").unwrap();
        StorageSpec::record(&local, None).unwrap();
        assert!(StorageSpec::record(&local, Some(&s3)).is_err());
    }

    #[test]
    fn object_lock_buckets_get_content_md5() {
        let mut s3 = spec("s3://bucket/lake");
        let cfg = s3_config(&s3.props());
        assert_eq!(cfg.checksum_algorithm, None);
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert!(!cfg.enable_virtual_host_style);
        assert!(cfg.disable_ec2_metadata);
        s3.object_lock = true;
        assert_eq!(
            s3_config(&s3.props()).checksum_algorithm.as_deref(),
            Some("md5")
        );
    }

    #[test]
    fn locations_must_name_a_bucket() {
        assert!(spec("s3://bucket").validate().is_ok());
        assert!(spec("s3:///prefix").validate().is_err());
        assert!(spec("gs://bucket").validate().is_err());
        let storage = TableStorage::S3 {
            spec: spec("s3://bucket/lake/"),
            operator: spec("s3://bucket/lake/").operator().unwrap(),
        };
        assert_eq!(storage.location(), "s3://bucket/lake");
    }
}
