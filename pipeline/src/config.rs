//! Typed, layered configuration: embedded defaults < config file < `CUSTODY__SECTION__KEY`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use custody_operators::table_storage::StorageSpec;
use serde::{Deserialize, Serialize};

/// The defaults, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Configuration errors; every problem is reported at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading config {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A layer is not valid TOML or does not match the schema.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Dataflow settings.
    pub pipeline: PipelineConfig,
    /// Where the lake lives.
    pub warehouse: WarehouseConfig,
    /// Where secret keys live.
    pub keys: KeysConfig,
    /// HTTP serving.
    pub serve: ServeConfig,
    /// PII tokenization.
    pub pii: PiiConfig,
    /// Checkpoint signing.
    pub checkpoints: CheckpointsConfig,
    /// View settings.
    pub views: ViewsConfig,
    /// Kafka source settings.
    pub kafka: KafkaSettings,
    /// Producer identity.
    pub identity: IdentityConfig,
    /// The OpenTelemetry intake.
    pub otlp: OtlpConfig,
    /// Vault and envelope keys.
    pub vault: VaultConfig,
    /// HTTP API access.
    pub api: ApiConfig,
    /// Drift and anomaly alerts.
    pub drift: DriftSettings,
    /// Where alerts go.
    pub alerts: AlertsConfig,
    /// Policy rules.
    pub policy: PolicyConfig,
    /// How long events are kept, by default.
    pub retention: RetentionConfig,
    /// Per-tenant settings (retention, location), by tenant id.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantSettings>,
    /// Storage locations tenants can be pinned to, by name (`[locations.eu]`).
    #[serde(default)]
    pub locations: std::collections::BTreeMap<String, LocationConfig>,
    /// The location this process works in (`--location`); `None`: the default location, whose
    /// warehouse is `[warehouse] path` and whose tenants are those pinned nowhere.
    #[serde(skip)]
    pub location: Option<String>,
}

/// A storage location (`[locations.NAME]`): its own warehouse and key directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Its warehouse.
    pub warehouse: PathBuf,
    /// Its key directory; empty: `<warehouse>.keys`.
    #[serde(default)]
    pub keys_dir: PathBuf,
    /// Where its tables' files go (`s3://bucket/prefix` in that location); empty: under its
    /// warehouse directory. The S3 endpoint, if other than `[warehouse] s3_endpoint`, is
    /// `s3_endpoint`.
    #[serde(default)]
    pub tables: String,
    /// See `tables`.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// Its own key providers (a regional KMS), replacing those of `[keys]` where set.
    #[serde(default)]
    pub signing: Option<String>,
    /// See `signing`.
    #[serde(default)]
    pub kek: Option<String>,
    /// See `signing`.
    #[serde(default)]
    pub kek_previous: Option<String>,
    /// See `signing`.
    #[serde(default)]
    pub pii_master: Option<String>,
}

/// How long events are kept, and when the policies are applied.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a tenant's events are kept unless its `[tenants.<id>]` sets its own; unset:
    /// forever.
    #[serde(default)]
    pub days: Option<u64>,
    /// Event types kept for another number of days, for every tenant.
    #[serde(default)]
    pub event_types: std::collections::BTreeMap<String, u64>,
    /// How often `custody run` applies the policies; zero: only `custody retention apply`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The least retention the law asks for, in days; shorter policies are flagged.
    pub legal_minimum_days: u64,
}

/// One tenant's own settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Days its events are kept (overrides `[retention] days`).
    #[serde(default)]
    pub retention_days: Option<u64>,
    /// Its event types kept for another number of days (added to `[retention]
    /// event_types`).
    #[serde(default)]
    pub retention_event_types: std::collections::BTreeMap<String, u64>,
    /// The location (`[locations.NAME]`) its data, vault, keys and exports are kept in;
    /// unset: the default location.
    #[serde(default)]
    pub location: Option<String>,
}

impl Config {
    /// Works in `location` (`None`: the default location): its warehouse and key directory
    /// become this configuration's.
    pub fn select_location(&mut self, location: Option<&str>) -> Result<(), ConfigError> {
        self.check_locations()?;
        let Some(name) = location else {
            return Ok(());
        };
        let Some(at) = self.locations.get(name) else {
            return Err(ConfigError::Invalid(format!(
                "--location {name:?}: no [locations.{name}] is configured"
            )));
        };
        self.warehouse.path = at.warehouse.clone();
        self.warehouse.tables = at.tables.clone();
        if let Some(endpoint) = &at.s3_endpoint {
            self.warehouse.s3_endpoint = endpoint.clone();
        }
        self.keys.dir = at.keys_dir.clone();
        for (mine, theirs) in [
            (&mut self.keys.signing, &at.signing),
            (&mut self.keys.kek, &at.kek),
            (&mut self.keys.kek_previous, &at.kek_previous),
            (&mut self.keys.pii_master, &at.pii_master),
        ] {
            if let Some(source) = theirs {
                *mine = source.clone();
            }
        }
        self.location = Some(name.to_string());
        Ok(())
    }

    /// Every pinned tenant's location exists, and no two locations share a warehouse or a
    /// key directory (with each other or with the default location).
    fn check_locations(&self) -> Result<(), ConfigError> {
        for (tenant, settings) in &self.tenants {
            if let Some(l) = &settings.location
                && !self.locations.contains_key(l)
            {
                return Err(ConfigError::Invalid(format!(
                    "tenants.{tenant}.location: no [locations.{l}] is configured"
                )));
            }
        }
        if self.locations.is_empty() {
            return Ok(());
        }
        let keys_of = |wh: &Path, dir: &Path| {
            if dir.as_os_str().is_empty() {
                let mut name = wh.as_os_str().to_owned();
                name.push(".keys");
                PathBuf::from(name)
            } else {
                dir.to_path_buf()
            }
        };
        let mut seen: Vec<(String, PathBuf)> = vec![
            ("[warehouse] path".into(), self.warehouse.path.clone()),
            (
                "[keys] dir".into(),
                keys_of(&self.warehouse.path, &self.keys.dir),
            ),
        ];
        for (name, at) in &self.locations {
            for (what, path) in [
                (format!("locations.{name}.warehouse"), at.warehouse.clone()),
                (
                    format!("locations.{name}.keys_dir"),
                    keys_of(&at.warehouse, &at.keys_dir),
                ),
            ] {
                if let Some((other, _)) = seen
                    .iter()
                    .find(|(_, p)| is_within(&path, p) || is_within(p, &path))
                {
                    return Err(ConfigError::Invalid(format!(
                        "{what} ({}) overlaps {other}: each location keeps its own",
                        path.display()
                    )));
                }
                seen.push((what, path));
            }
        }
        // Object storage: no two locations' tables under one prefix.
        let mut buckets: Vec<(String, String)> = Vec::new();
        let default = self.warehouse.tables.trim_end_matches('/');
        if !default.is_empty() {
            buckets.push(("[warehouse] tables".into(), format!("{default}/")));
        }
        for (name, at) in &self.locations {
            let tables = at.tables.trim_end_matches('/');
            if tables.is_empty() {
                continue;
            }
            let tables = format!("{tables}/");
            if let Some((other, _)) = buckets
                .iter()
                .find(|(_, t)| t.starts_with(&tables) || tables.starts_with(t.as_str()))
            {
                return Err(ConfigError::Invalid(format!(
                    "locations.{name}.tables ({tables}) overlaps {other}: each location keeps \
                     its own"
                )));
            }
            buckets.push((format!("locations.{name}.tables"), tables));
        }
        Ok(())
    }

    /// The residency of a pipeline working here, if any tenant is pinned to a location.
    pub fn residency(&self) -> Option<custody_operators::residency::Residency> {
        let pinned: Vec<(String, String)> = self
            .tenants
            .iter()
            .filter_map(|(t, s)| Some((t.clone(), s.location.clone()?)))
            .collect();
        (!pinned.is_empty() || self.location.is_some())
            .then(|| custody_operators::residency::Residency::new(self.location.clone(), pinned))
    }

    /// An error unless `tenant`'s data is kept in the location this process works in.
    pub fn require_here(&self, tenant: &str) -> Result<(), ConfigError> {
        let theirs = self.tenants.get(tenant).and_then(|s| s.location.as_deref());
        if theirs == self.location.as_deref() {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "tenant {tenant:?} is kept in location {:?}, not here ({:?}): run with {}",
            theirs.unwrap_or(custody_operators::residency::DEFAULT_LOCATION),
            self.location
                .as_deref()
                .unwrap_or(custody_operators::residency::DEFAULT_LOCATION),
            theirs.map_or("no --location".to_string(), |l| format!("--location {l}"))
        )))
    }
}

impl Config {
    /// Every tenant's retention policy.
    pub fn retention_policies(
        &self,
    ) -> Result<custody_operators::retention::Policies, ConfigError> {
        use custody_operators::retention::{Policies, Policy};
        let check = |types: &std::collections::BTreeMap<String, u64>, at: &str| match types
            .keys()
            .find(|t| custody_schemas::event::EventType::parse(t).is_none())
        {
            Some(t) => Err(ConfigError::Invalid(format!(
                "{at}: {t:?} is not an event type"
            ))),
            None => Ok(()),
        };
        check(&self.retention.event_types, "retention.event_types")?;
        let default = Policy {
            days: self.retention.days,
            event_type_days: self.retention.event_types.clone(),
        };
        let mut tenants = std::collections::BTreeMap::new();
        for (tenant, settings) in &self.tenants {
            check(
                &settings.retention_event_types,
                &format!("tenants.{tenant}.retention_event_types"),
            )?;
            let mut event_type_days = default.event_type_days.clone();
            event_type_days.extend(settings.retention_event_types.clone());
            tenants.insert(
                tenant.clone(),
                Policy {
                    days: settings.retention_days.or(default.days),
                    event_type_days,
                },
            );
        }
        Ok(Policies { default, tenants })
    }
}

/// Drift and anomaly detection.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// Window length.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Windows in the baseline.
    pub baseline_windows: i64,
    /// Least samples for a rate alert.
    pub min_samples: i64,
    /// Rate rise that raises an alert, per mille.
    pub rate_increase_permille: i64,
    /// Volume multiple that raises an alert.
    pub volume_factor: f64,
    /// Least events for a volume alert.
    pub min_volume: i64,
}

impl DriftSettings {
    /// As the view's settings.
    pub fn view_config(&self) -> custody_reports::views::alerts::DriftConfig {
        custody_reports::views::alerts::DriftConfig {
            window_us: (self.window.as_micros() as i64).max(1),
            baseline_windows: self.baseline_windows.max(1),
            min_samples: self.min_samples,
            rate_increase_permille: self.rate_increase_permille,
            volume_factor: self.volume_factor,
            min_volume: self.min_volume,
        }
    }
}

/// Where alerts go.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alertmanager base URL; empty = off.
    pub alertmanager_url: String,
    /// Kafka topic; empty = off.
    pub kafka_topic: String,
    /// Re-send period of active alerts.
    #[serde(with = "humantime_serde")]
    pub resend: Duration,
    /// PEM file of a CA to trust for an `https://` Alertmanager (besides the system's roots).
    #[serde(default)]
    pub alertmanager_ca_file: String,
}

/// Policy rules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The rules.
    #[serde(default)]
    pub rules: Vec<custody_reports::views::policy_violations::PolicyRule>,
}

/// HTTP API access.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens by name.
    #[serde(default)]
    pub tokens: std::collections::BTreeMap<String, crate::auth::TokenSettings>,
    /// SHA-256 (hex) of the bearer token `/metrics` asks for; empty: `/metrics` is open.
    #[serde(default)]
    pub metrics_token_sha256: String,
}

/// Dataflow settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// Raw records per epoch.
    pub batch_size: usize,
    /// Epochs read ahead of the last sealed one.
    pub max_epochs_in_flight: usize,
    /// Larger inputs are quarantined unparsed.
    pub max_event_bytes: usize,
    /// Bytes of a rejected input kept in quarantine.
    pub quarantine_keep_bytes: usize,
    /// How long a source poll waits for records.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Least time between epochs for input that does not fill a batch; 0 = none.
    #[serde(with = "humantime_serde")]
    pub epoch_interval: Duration,
}

/// Where the lake lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Directory with `catalog.db` and `data/`.
    pub path: PathBuf,
    /// Names this pipeline in snapshot commit ids.
    pub sink_id: String,
    /// Compact the tables' small files with every this many epochs' commits; 0 = never.
    pub compact_every_epochs: u64,
    /// Where the tables' files go: empty for `<path>/data`, or `s3://bucket/prefix`.
    #[serde(default)]
    pub tables: String,
    /// The S3 endpoint of `tables`; empty: AWS.
    #[serde(default)]
    pub s3_endpoint: String,
    /// The S3 region of `tables`.
    #[serde(default)]
    pub s3_region: String,
    /// Path-style S3 requests (`endpoint/bucket/key`).
    #[serde(default)]
    pub s3_path_style: bool,
    /// The bucket of `tables` has S3 Object Lock with a default retention: every file is
    /// written in one PUT with `Content-MD5`, as S3 requires under Object Lock.
    #[serde(default)]
    pub s3_object_lock: bool,
}

impl WarehouseConfig {
    /// Where the tables' files go, if not under the warehouse directory.
    pub fn tables(&self) -> Result<Option<StorageSpec>, ConfigError> {
        if self.tables.is_empty() {
            return Ok(None);
        }
        let spec = StorageSpec {
            location: self.tables.clone(),
            endpoint: (!self.s3_endpoint.is_empty()).then(|| self.s3_endpoint.clone()),
            region: (!self.s3_region.is_empty()).then(|| self.s3_region.clone()),
            path_style: self.s3_path_style,
            object_lock: self.s3_object_lock,
        };
        spec.validate()
            .map_err(|e| ConfigError::Invalid(format!("warehouse.tables: {e}")))?;
        Ok(Some(spec))
    }
}

/// Secret key material.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Key directory; empty for `<warehouse>.keys` beside the warehouse.
    pub dir: PathBuf,
    /// Where the signing seed comes from ([`crate::keys::KeySource`]); empty: the default.
    #[serde(default)]
    pub signing: String,
    /// Public keys (hex, or `file:PATH` holding one) of signing keys used before a rotation:
    /// a warehouse last sealed under one of them is resumed, and sealed on under the new key.
    #[serde(default)]
    pub signing_previous: Vec<String>,
    /// Where the key-encryption key comes from; empty: the default.
    #[serde(default)]
    pub kek: String,
    /// Where the previous key-encryption key comes from during a rotation; empty: the
    /// default.
    #[serde(default)]
    pub kek_previous: String,
    /// Where the PII master key comes from; empty: the default.
    #[serde(default)]
    pub pii_master: String,
}

/// Files of the old layout that kept secret keys inside the warehouse.
const LEGACY_KEY_FILES: [&str; 2] = ["keys/signing.key", "keys/kek.key"];

/// `path` made absolute (lexically, `.` and `..` resolved) without touching the file system.
fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    let abs = std::path::absolute(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    // Follow symlinks where the path exists, so an alias cannot hide the warehouse.
    Ok(std::fs::canonicalize(&out).unwrap_or(out))
}

/// Whether `path` is `dir` or inside it (both made absolute).
pub fn is_within(path: &Path, dir: &Path) -> bool {
    match (absolute(path), absolute(dir)) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

impl KeysConfig {
    /// The provider configured for key `name` (`signing`, `kek`, `kek_previous`,
    /// `pii_master`), if any.
    pub fn source(&self, name: &str) -> Result<Option<crate::keys::KeySource>, ConfigError> {
        let entry = match name {
            "signing" => &self.signing,
            "kek" => &self.kek,
            "kek_previous" => &self.kek_previous,
            _ => &self.pii_master,
        };
        crate::keys::KeySource::parse(entry, name)
    }

    /// The public keys of `signing_previous`.
    pub fn previous_signers(
        &self,
        key_dir: &Path,
    ) -> Result<Vec<ed25519_dalek::VerifyingKey>, ConfigError> {
        self.signing_previous
            .iter()
            .map(|entry| {
                let text = match entry.strip_prefix("file:") {
                    Some(path) => {
                        let path = key_dir.join(path.trim());
                        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                            path: path.clone(),
                            source,
                        })?
                    }
                    None => entry.clone(),
                };
                custody_operators::checkpoint::parse_public_key(text.trim()).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "keys.signing_previous {entry:?}: not a hex Ed25519 public key"
                    ))
                })
            })
            .collect()
    }

    /// The key directory of `warehouse`; refuses one inside the warehouse and secret keys
    /// left inside the warehouse by the old layout.
    pub fn dir(&self, warehouse: &Path) -> Result<PathBuf, ConfigError> {
        let dir = if self.dir.as_os_str().is_empty() {
            let wh = absolute(warehouse)?;
            let mut name = wh.file_name().unwrap_or_default().to_os_string();
            name.push(".keys");
            wh.with_file_name(name)
        } else {
            absolute(&self.dir)?
        };
        if is_within(&dir, warehouse) {
            return Err(ConfigError::Invalid(format!(
                "keys.dir {} is inside the warehouse {}: whoever can write the warehouse would \
                 hold the keys; choose a directory outside it",
                dir.display(),
                warehouse.display()
            )));
        }
        for legacy in LEGACY_KEY_FILES {
            let old = warehouse.join(legacy);
            if old.exists() {
                return Err(ConfigError::Invalid(format!(
                    "{} is a secret key inside the warehouse; move it out (to {}) and restrict it \
                     to its owner (chmod 600)",
                    old.display(),
                    dir.join(Path::new(legacy).file_name().unwrap_or_default())
                        .display()
                )));
            }
        }
        Ok(dir)
    }
}

/// HTTP serving.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: String,
    /// Lake queries run at once; more wait for a slot (within their deadline).
    #[serde(default = "default_query_slots")]
    pub query_slots: usize,
    /// Deadline of one lake query, waiting for a slot included; past it the answer is 503.
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: std::time::Duration,
    /// Deadline of any request; past it the answer is 503.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    /// Threads serving HTTP (views and API); lake queries run on their own.
    #[serde(default = "default_http_threads")]
    pub http_threads: usize,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP (both or neither).
    #[serde(default)]
    pub tls_cert_file: String,
    /// See `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: String,
}

fn default_query_slots() -> usize {
    4
}

fn default_query_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_http_threads() -> usize {
    2
}

/// PII tokenization.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    /// Environment variable holding the master key.
    pub master_key_env: String,
    /// Fallback key for demos.
    pub dev_master_key: String,
    /// Custom recognizers by name.
    #[serde(default)]
    pub custom: std::collections::BTreeMap<String, CustomRuleSettings>,
    /// Per-tenant field policies.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantPiiSettings>,
}

/// A custom recognizer (`[pii.custom.NAME]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRuleSettings {
    /// Token label; defaults to the rule's name in upper case.
    pub label: Option<String>,
    /// Regular expression.
    pub pattern: Option<String>,
    /// Dictionary words or phrases (case-insensitive, whole words).
    #[serde(default)]
    pub words: Vec<String>,
    /// Tenants it applies to; empty for all.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// A tenant's PII policy (`[pii.tenants.TENANT]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPiiSettings {
    /// `EVENT_TYPE.field` or `EVENT_TYPE.*` selectors replacing the default text fields.
    pub fields: Vec<String>,
}

impl std::fmt::Debug for PiiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiConfig")
            .field("master_key_env", &self.master_key_env)
            .field("dev_master_key", &"<redacted>")
            .finish()
    }
}

impl PiiConfig {
    /// The compiled custom rules and field policies.
    pub fn policy(
        &self,
    ) -> Result<custody_operators::pii::PiiPolicy, custody_operators::pii::PolicyError> {
        let rules = self
            .custom
            .iter()
            .map(|(name, r)| custody_operators::pii::CustomRule {
                label: r.label.clone().unwrap_or_else(|| name.to_ascii_uppercase()),
                pattern: r.pattern.clone(),
                words: r.words.clone(),
                tenants: r.tenants.clone(),
            })
            .collect();
        let fields = self
            .tenants
            .iter()
            .map(|(t, p)| (t.clone(), p.fields.clone()));
        custody_operators::pii::PiiPolicy::new(rules, fields)
    }

    /// The master key: from the environment variable (hex, or raw text; at least
    /// [`MIN_MASTER_KEY_BYTES`]), else the dev key (with a warning).
    pub fn master_key(
        &self,
        keys: &KeysConfig,
        key_dir: &Path,
        warehouse: &Path,
    ) -> Result<Vec<u8>, ConfigError> {
        if let Some(source) = keys.source("pii_master")? {
            let key = source.load("pii-master", key_dir, warehouse)?;
            if key.len() < MIN_MASTER_KEY_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "keys.pii_master: the pii master key has {} bytes; at least \
                     {MIN_MASTER_KEY_BYTES} are required",
                    key.len()
                )));
            }
            return Ok(key);
        }
        match std::env::var(&self.master_key_env) {
            Ok(key) if !key.is_empty() => {
                let key = hex::decode(key.trim()).unwrap_or_else(|_| key.into_bytes());
                if key.len() < MIN_MASTER_KEY_BYTES {
                    return Err(ConfigError::Invalid(format!(
                        "{}: the pii master key has {} bytes; at least {MIN_MASTER_KEY_BYTES} \
                         are required (e.g. 64 hex digits from `openssl rand -hex 32`)",
                        self.master_key_env,
                        key.len()
                    )));
                }
                Ok(key)
            }
            _ => {
                tracing::warn!(
                    env = %self.master_key_env,
                    "no pii master key set; using the development key"
                );
                Ok(self.dev_master_key.clone().into_bytes())
            }
        }
    }
}

/// The shortest PII master key accepted from the environment.
pub const MIN_MASTER_KEY_BYTES: usize = 32;

/// Checkpoint signing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsConfig {
    /// Environment variable holding the signing key seed (hex).
    pub signing_key_env: String,
    /// Seed file used when the variable is unset (relative to the key directory).
    pub signing_key_file: PathBuf,
}

impl CheckpointsConfig {
    /// The signing key seed: from the environment, else from the key file in `key_dir`
    /// (created if missing, readable by the owner only).
    pub fn signing_seed(
        &self,
        keys: &KeysConfig,
        key_dir: &Path,
        warehouse: &Path,
    ) -> Result<[u8; 32], ConfigError> {
        match keys.source("signing")? {
            Some(source) => source.load_32("signing", key_dir, warehouse),
            None => secret_32(&self.signing_key_env, &key_dir.join(&self.signing_key_file)),
        }
    }
}

/// 32 secret bytes: from the environment variable (64 hex digits), else from `file` (created
/// with random bytes and mode 0600 if missing).
pub fn secret_32(env: &str, path: &Path) -> Result<[u8; 32], ConfigError> {
    let invalid = |what: &str| ConfigError::Invalid(format!("key {what}: expected 64 hex digits"));
    if let Ok(hex_seed) = std::env::var(env)
        && !hex_seed.is_empty()
    {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex_seed.trim(), &mut seed).map_err(|_| invalid(env))?;
        return Ok(seed);
    }
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        if let Some(dir) = path.parent() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(read_err)?;
        }
        let mut seed = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(read_err)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        use std::io::Write;
        options
            .open(path)
            .and_then(|mut f| f.write_all(hex::encode(seed).as_bytes()))
            .map_err(read_err)?;
        tracing::warn!(path = %path.display(), "generated a new key");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ConfigError::Invalid(format!(
                "{} is readable by others (mode {:o}): a secret key must be readable by its \
                 owner only (chmod 600)",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .map_err(|_| invalid(&path.display().to_string()))?;
    Ok(seed)
}

/// Vault and envelope keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Seal each token's value (re-identification, per-subject erasure).
    pub tokens: bool,
    /// Replace text fields by commitments and seal their content.
    pub content: bool,
    /// Environment variable holding the KEK (64 hex digits).
    pub kek_env: String,
    /// Environment variable holding the previous KEK during a rotation.
    pub kek_previous_env: String,
    /// KEK file used when the variable is unset (relative to the key directory; created if
    /// missing). For development.
    pub kek_file: PathBuf,
}

impl VaultConfig {
    /// The current KEK and the previous one, if set.
    pub fn keks(
        &self,
        keys: &KeysConfig,
        key_dir: &Path,
        warehouse: &Path,
    ) -> Result<
        (
            custody_operators::vault::Kek,
            Vec<custody_operators::vault::Kek>,
        ),
        ConfigError,
    > {
        let current = match keys.source("kek")? {
            Some(source) => source.load_32("kek", key_dir, warehouse)?,
            None => secret_32(&self.kek_env, &key_dir.join(&self.kek_file))?,
        };
        if let Some(source) = keys.source("kek_previous")? {
            let previous = source.load_32("kek-previous", key_dir, warehouse)?;
            return Ok((
                custody_operators::vault::Kek::new(&current),
                vec![custody_operators::vault::Kek::new(&previous)],
            ));
        }
        let previous = match std::env::var(&self.kek_previous_env) {
            Ok(v) if !v.is_empty() => {
                let mut k = [0u8; 32];
                hex::decode_to_slice(v.trim(), &mut k).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "{}: expected 64 hex digits",
                        self.kek_previous_env
                    ))
                })?;
                vec![custody_operators::vault::Kek::new(&k)]
            }
            _ => Vec::new(),
        };
        Ok((custody_operators::vault::Kek::new(&current), previous))
    }
}

/// View settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// Approvals faster than this are rubber stamps.
    #[serde(with = "humantime_serde")]
    pub rubber_stamp: Duration,
    /// With no input, an epoch is opened this often so the views' clock moves; zero = never.
    #[serde(with = "humantime_serde")]
    pub clock_tick: Duration,
    /// Epochs a session's state is kept after the epoch that ended it.
    pub retire_grace_epochs: u64,
    /// Epochs after its last event a session that never ends is retired.
    pub retire_idle_epochs: u64,
    /// Live epochs between snapshots of the views' state (0: never; a restart then replays
    /// every event).
    pub snapshot_every_epochs: u64,
}

impl ViewsConfig {
    /// The session retirement settings.
    pub fn retire(&self) -> custody_reports::views::session_scoped::RetireConfig {
        custody_reports::views::session_scoped::RetireConfig {
            grace_epochs: self.retire_grace_epochs,
            idle_epochs: self.retire_idle_epochs,
            // Long enough for a late event to be counted as late, short enough that
            // retired keys do not pile up.
            tombstone_epochs: (4 * self.retire_grace_epochs).max(8),
        }
    }
}

/// Kafka source settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Consumer group.
    pub group_id: String,
    /// Cap on librdkafka's prefetch queue, KiB.
    pub fetch_queue_kbytes: u32,
    /// How often to look for new partitions.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh: Duration,
    /// A run whose brokers never answered with the topic's partitions within this long
    /// stops with an error (so does an idle exit before that).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Dead-letter topic; empty for none.
    pub dead_letter_topic: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default = "default_security_protocol")]
    pub security_protocol: String,
    /// PEM file of the CA that signed the brokers' certificates; empty: the system's roots.
    #[serde(default)]
    pub ssl_ca_file: String,
    /// PEM client certificate and key for mutual TLS; empty: none.
    #[serde(default)]
    pub ssl_cert_file: String,
    /// See `ssl_cert_file`.
    #[serde(default)]
    pub ssl_key_file: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a `sasl_*` protocol).
    #[serde(default)]
    pub sasl_mechanism: String,
    /// SASL user name.
    #[serde(default)]
    pub sasl_username: String,
    /// Environment variable holding the SASL password (never the password itself).
    #[serde(default = "default_sasl_password_env")]
    pub sasl_password_env: String,
}

fn default_security_protocol() -> String {
    "plaintext".into()
}

fn default_sasl_password_env() -> String {
    "CUSTODY_KAFKA_PASSWORD".into()
}

impl KafkaSettings {
    /// The librdkafka properties of `security_protocol`, TLS and SASL; an error names what is
    /// missing or wrong.
    pub fn security_properties(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let protocol = self.security_protocol.trim().to_ascii_lowercase();
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            other => {
                return Err(ConfigError::Invalid(format!(
                    "kafka.security_protocol {other:?}: expected plaintext, ssl, sasl_plaintext \
                     or sasl_ssl"
                )));
            }
        };
        let mut props = vec![("security.protocol".to_string(), protocol.clone())];
        let file = |key: &str, path: &str| -> Result<(String, String), ConfigError> {
            if !std::path::Path::new(path).is_file() {
                return Err(ConfigError::Invalid(format!(
                    "kafka.{key}: {path:?} is not a file"
                )));
            }
            Ok((
                key.replace('_', ".").replace(".file", ".location"),
                path.to_string(),
            ))
        };
        if tls {
            if !self.ssl_ca_file.is_empty() {
                props.push(file("ssl_ca_file", &self.ssl_ca_file)?);
            }
            match (self.ssl_cert_file.is_empty(), self.ssl_key_file.is_empty()) {
                (true, true) => {}
                (false, false) => {
                    props.push(file("ssl_cert_file", &self.ssl_cert_file)?);
                    props.push(file("ssl_key_file", &self.ssl_key_file)?);
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "kafka.ssl_cert_file and kafka.ssl_key_file go together".into(),
                    ));
                }
            }
        } else if !self.ssl_ca_file.is_empty() || !self.ssl_cert_file.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "kafka.ssl_* is set but security_protocol {protocol:?} has no TLS"
            )));
        }
        if sasl {
            let mechanism = self.sasl_mechanism.trim().to_ascii_uppercase();
            if !matches!(
                mechanism.as_str(),
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
            ) {
                return Err(ConfigError::Invalid(format!(
                    "kafka.sasl_mechanism {:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    self.sasl_mechanism
                )));
            }
            if self.sasl_username.is_empty() {
                return Err(ConfigError::Invalid("kafka.sasl_username is empty".into()));
            }
            let password = std::env::var(&self.sasl_password_env).map_err(|_| {
                ConfigError::Invalid(format!(
                    "kafka: SASL needs the password in ${}",
                    self.sasl_password_env
                ))
            })?;
            props.push(("sasl.mechanisms".into(), mechanism));
            props.push(("sasl.username".into(), self.sasl_username.clone()));
            props.push(("sasl.password".into(), password));
        }
        Ok(props)
    }
}

/// Producer identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `none` or `signed-header`.
    pub mode: IdentityMode,
    /// Producer id → binding.
    pub producers: std::collections::BTreeMap<String, ProducerSettings>,
}

/// How tenants are bound to producers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    /// Trust the payload's tenant.
    None,
    /// Require a registered producer's signature; its tenant must be the payload's.
    SignedHeader,
}

/// One registered producer.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSettings {
    /// The tenant it writes for.
    pub tenant: String,
    /// Environment variable holding its key (hex or raw text).
    pub key_env: Option<String>,
    /// The key in hex (tests and demos).
    pub key_hex: Option<String>,
    /// SHA-256 (hex) of the bearer token with which it may export over OTLP (`custody otlp`);
    /// empty: not over OTLP.
    #[serde(default)]
    pub otlp_token_sha256: String,
}

impl std::fmt::Debug for ProducerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerSettings")
            .field("tenant", &self.tenant)
            .field("key_env", &self.key_env)
            .finish_non_exhaustive()
    }
}

impl IdentityConfig {
    /// `(producer id, tenant, key)` of every producer; an error names each one without a
    /// usable key.
    pub fn producers(&self) -> Result<Vec<(String, String, Vec<u8>)>, ConfigError> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (id, p) in &self.producers {
            let key = match (&p.key_env, &p.key_hex) {
                (Some(var), _) => std::env::var(var)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .map(|k| hex::decode(&k).unwrap_or_else(|_| k.into_bytes())),
                (None, Some(h)) => hex::decode(h).ok(),
                (None, None) => None,
            };
            match key {
                Some(key) if !key.is_empty() => out.push((id.clone(), p.tenant.clone(), key)),
                _ => errors.push(format!(
                    "identity.producers.{id}: no key (set key_env to a variable that holds it, or key_hex)"
                )),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError::Invalid(errors.join("; ")))
        }
    }
}

impl IdentityConfig {
    /// `(token SHA-256, producer id, tenant, key)` of every producer that may export over OTLP.
    pub fn otlp_clients(&self) -> Result<Vec<OtlpClient>, ConfigError> {
        let keys = self.producers()?;
        let mut out = Vec::new();
        for (id, tenant, key) in keys {
            let hash = self.producers[&id].otlp_token_sha256.trim();
            if hash.is_empty() {
                continue;
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest).map_err(|_| {
                ConfigError::Invalid(format!(
                    "identity.producers.{id}.otlp_token_sha256: expected 64 hex digits"
                ))
            })?;
            out.push((digest, id, tenant, key));
        }
        Ok(out)
    }
}

/// A producer that may export over OTLP: `(token SHA-256, producer id, tenant, key)`.
pub type OtlpClient = ([u8; 32], String, String, Vec<u8>);

/// `custody otlp`, the OpenTelemetry intake.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// OTLP/HTTP address.
    pub http_listen: String,
    /// OTLP/gRPC address.
    pub grpc_listen: String,
    /// Largest export request, decompressed.
    pub max_request_bytes: usize,
    /// How long an export waits for the brokers to acknowledge its records.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

fn parse_layer(name: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then `CUSTODY__SECTION__KEY` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`] with explicit environment variables.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_layer("defaults", DEFAULT_TOML)?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            merge(&mut table, parse_layer(&path.display().to_string(), &text)?);
        }
        let mut errors = Vec::new();
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("CUSTODY__") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            let [section, field] = parts.as_slice() else {
                errors.push(format!("{key}: expected CUSTODY__SECTION__KEY"));
                continue;
            };
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let mut layer = toml::Table::new();
            let mut inner = toml::Table::new();
            inner.insert(field.clone(), parsed);
            layer.insert(section.clone(), toml::Value::Table(inner));
            merge(&mut table, layer);
        }
        let result = Config::deserialize(toml::Value::Table(table));
        match result {
            Ok(config) if errors.is_empty() => config.validate(),
            Ok(_) => Err(ConfigError::Invalid(errors.join("; "))),
            Err(e) => {
                errors.push(e.to_string().trim().to_string());
                Err(ConfigError::Invalid(errors.join("; ")))
            }
        }
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let p = &self.pipeline;
        if p.workers == 0 {
            errors.push("pipeline.workers must be at least 1".to_string());
        }
        if p.batch_size == 0 {
            errors.push("pipeline.batch_size must be at least 1".to_string());
        }
        if p.max_epochs_in_flight == 0 {
            errors.push("pipeline.max_epochs_in_flight must be at least 1".to_string());
        }
        if self.identity.mode == IdentityMode::SignedHeader && self.identity.producers.is_empty() {
            errors.push(
                "identity.mode = \"signed-header\" needs at least one identity.producers entry"
                    .to_string(),
            );
        }
        if let Err(e) = crate::auth::ApiAuth::new(&self.api.tokens) {
            errors.push(e);
        }
        if let Err(e) = self.pii.policy() {
            errors.push(e.to_string());
        }
        if self.drift.window.is_zero() {
            errors.push("drift.window must be more than zero".to_string());
        }
        let mut ids = std::collections::BTreeSet::new();
        for rule in &self.policy.rules {
            if !ids.insert(rule.id.as_str()) {
                errors.push(format!("policy rule id {:?} is used twice", rule.id));
            }
            if rule.tools.is_empty() {
                errors.push(format!("policy rule {:?} names no tools", rule.id));
            }
            if rule.amount_field.is_some() != rule.above.is_some() {
                errors.push(format!(
                    "policy rule {:?}: amount_field and above go together",
                    rule.id
                ));
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid(errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::load_with_env(None, []).unwrap();
        assert_eq!(c.pipeline.workers, 2);
        assert_eq!(c.views.rubber_stamp, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("custody-dev-only-master-key"));
    }

    #[test]
    fn docker_example_parses() {
        let path = manifest_dir().join("../docker/custody.toml");
        let c = Config::load_with_env(Some(&path), []).unwrap();
        assert_eq!(c.serve.listen, "0.0.0.0:9464");
    }

    #[test]
    fn env_overrides_and_all_errors_reported() {
        let c = Config::load_with_env(
            None,
            [("CUSTODY__PIPELINE__BATCH_SIZE".to_string(), "7".to_string())],
        )
        .unwrap();
        assert_eq!(c.pipeline.batch_size, 7);
        let e = Config::load_with_env(
            None,
            [
                ("CUSTODY__PIPELINE__WORKERS".to_string(), "0".to_string()),
                ("CUSTODY__PIPELINE__BATCH_SIZE".to_string(), "0".to_string()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("workers") && e.contains("batch_size"), "{e}");
        let e = Config::load_with_env(
            None,
            [("CUSTODY__PIPELINE__BOGUS".to_string(), "1".to_string())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    /// The package directory: taken at run time from cargo (the build may have been made in
    /// another checkout sharing the target directory), at build time otherwise.
    fn manifest_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
    }
}
