//! `custody export` and `custody verify`: bundles of a tenant's log that anyone can check.
//!
//! An export bundle is a directory with `events.ndjson` (one [`EventRow`] per line),
//! `checkpoints.ndjson` (one [`Checkpoint`] per line) and `keys/<key_id>.pub` (hex Ed25519
//! public keys). `docs/chain-format.md` specifies the format and the checks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use custody_operators::checkpoint::{Checkpoint, parse_public_key};
use std::collections::HashMap;

use custody_operators::seal::{Registry, SealedRegistry, parse_registry};
use custody_operators::sinks::iceberg::Warehouse;
use custody_operators::verify::{
    EventRow, ExpiredLeaf, Problem, ProblemKind, TenantReport, Verifier, WarehouseFindings,
    WarehouseState, group_by_tenant,
};
use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The name of the report on an export bundle's form (malformed rows).
pub const BUNDLE_REPORT: &str = "(bundle)";

/// An export's sealed registry ([`SealedRegistry`]).
pub const REGISTRY_FILE: &str = "registry.json";

/// Reads an export's `registry.json`; a bundle without one, or with one that does not parse,
/// has no pin (listed in `malformed` when unreadable).
fn read_sealed(path: &Path, malformed: &mut Vec<String>) -> Option<SealedRegistry> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(sealed) => Some(sealed),
        Err(e) => {
            malformed.push(format!("{}: {e}", path.display()));
            None
        }
    }
}

/// Everything needed to verify logs.
#[derive(Debug, Default)]
pub struct Bundle {
    /// Event rows.
    pub events: Vec<EventRow>,
    /// The leaves of events removed by retention.
    pub expired: Vec<ExpiredLeaf>,
    /// Stored checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Public keys shipped with the data (not trusted by default).
    pub keys: Vec<VerifyingKey>,
    /// For a warehouse: its sealed epochs and table files.
    pub warehouse: Option<WarehouseState>,
    /// For an export: the last seal and the exported tenants' entries in its registry
    /// (`registry.json`), which pin each tenant's latest checkpoint.
    pub sealed: Option<SealedRegistry>,
    /// Bundle rows not in the strict form (`file:line: why`), left out of the logs.
    pub malformed: Vec<String>,
}

fn read_keys(dir: &Path) -> anyhow::Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(keys);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pub") {
            let text = std::fs::read_to_string(&path)?;
            keys.push(
                parse_public_key(&text)
                    .with_context(|| format!("{} is not a hex ed25519 key", path.display()))?,
            );
        }
    }
    Ok(keys)
}

fn read_ndjson<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: invalid row", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// The members of an `events.ndjson` row (`docs/chain-format.md` §5), every one required.
const EVENT_MEMBERS: [&str; 14] = [
    "agent_id",
    "event_id",
    "event_time",
    "event_type",
    "hash",
    "leaf_hash",
    "parent_event_id",
    "payload",
    "prev_hash",
    "schema_version",
    "seq",
    "session_id",
    "tenant_id",
    "user_id",
];

/// The leaves of removed events in an export ([`ExpiredLeaf`]).
pub const EXPIRED_FILE: &str = "expired.ndjson";

/// The members of an `expired.ndjson` row, every one required.
const EXPIRED_MEMBERS: [&str; 3] = ["leaf_hash", "seq", "tenant_id"];

/// The members of a `checkpoints.ndjson` row, every one required.
const CHECKPOINT_MEMBERS: [&str; 9] = [
    "chain_head",
    "epoch",
    "key_id",
    "prev_checkpoint",
    "root",
    "signature",
    "signed_at",
    "tenant_id",
    "tree_size",
];

/// Why `line` is not in the strict form of a bundle row with exactly `members`, whose `hashes`
/// are lowercase hex of the given length (§5): duplicated or missing members (nulls are
/// written, never omitted), unknown members, uppercase or malformed hex, negative numbers.
fn strict_row(line: &str, members: &[&str], hashes: &[(&str, usize)]) -> Result<Value, String> {
    let value = custody_schemas::json::to_value(line).map_err(|e| e.to_string())?;
    let Value::Object(map) = &value else {
        return Err("not a JSON object".into());
    };
    for m in members {
        if !map.contains_key(*m) {
            return Err(format!("member {m:?} is missing (write null, never omit)"));
        }
    }
    if let Some(extra) = map.keys().find(|k| !members.contains(&k.as_str())) {
        return Err(format!("unknown member {extra:?}"));
    }
    for (name, len) in hashes {
        let ok = map[*name].as_str().is_some_and(|h| {
            h.len() == *len && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if !ok {
            return Err(format!("{name} is not {len} lowercase hex digits"));
        }
    }
    for (name, v) in map {
        if v.is_number() && v.as_u64().is_none() {
            return Err(format!("{name} is not a non-negative integer"));
        }
    }
    Ok(value)
}

/// Rows of a bundle file in strict form; each malformed line is reported (`file:line: why`)
/// and left out.
fn read_strict<T: DeserializeOwned>(
    path: &Path,
    members: &[&str],
    hashes: &[(&str, usize)],
    malformed: &mut Vec<String>,
) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match strict_row(&line, members, hashes)
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
        {
            Ok(row) => out.push(row),
            Err(why) => malformed.push(format!("{name}:{}: {why}", i + 1)),
        }
    }
    Ok(out)
}

fn write_ndjson<T: serde::Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

impl Bundle {
    /// Reads the events, checkpoints and published keys of a warehouse.
    pub fn from_warehouse(path: &Path) -> anyhow::Result<Bundle> {
        if !path.join("catalog.db").exists() {
            bail!(
                "{} is not a custody warehouse (no catalog.db)",
                path.display()
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let warehouse = Warehouse::open_read_only(path).await?;
            let mut files = std::collections::BTreeMap::new();
            for table in custody_operators::failpoint::committed_tables() {
                files.insert(table.to_string(), warehouse.data_file_digests(table).await?);
            }
            let records = warehouse.epoch_records(None).await?;
            // The registry as of the last epoch: every epoch's change, in order.
            let mut registry = Registry::default();
            for r in &records {
                registry.apply(&parse_registry(&r.registry).unwrap_or_default());
            }
            let tenants: Vec<String> = registry.iter().map(|(t, _)| t.to_string()).collect();
            let sealed = records.last().and_then(|r| r.seal()).map(|seal| {
                SealedRegistry::new(seal, &registry, tenants.iter().map(String::as_str))
            });
            let expired = warehouse.expired_leaves().await?;
            let mut events = warehouse.event_rows().await?;
            custody_operators::verify::link_through_expired(&mut events, &expired);
            Ok(Bundle {
                events,
                expired,
                checkpoints: warehouse.checkpoint_rows().await?,
                keys: read_keys(&path.join("keys"))?,
                warehouse: Some(WarehouseState {
                    records,
                    files,
                    config_log: warehouse.config_log().await?,
                }),
                sealed,
                malformed: Vec::new(),
            })
        })
    }

    /// Reads an export bundle; rows not in the strict form are listed in `malformed`.
    pub fn from_export(dir: &Path) -> anyhow::Result<Bundle> {
        let mut malformed = Vec::new();
        Ok(Bundle {
            events: read_strict(
                &dir.join("events.ndjson"),
                &EVENT_MEMBERS,
                &[("prev_hash", 64), ("hash", 64), ("leaf_hash", 64)],
                &mut malformed,
            )?,
            // Absent from bundles of logs nothing was ever removed from.
            expired: if dir.join(EXPIRED_FILE).exists() {
                read_strict(
                    &dir.join(EXPIRED_FILE),
                    &EXPIRED_MEMBERS,
                    &[("leaf_hash", 64)],
                    &mut malformed,
                )?
            } else {
                Vec::new()
            },
            checkpoints: read_strict(
                &dir.join("checkpoints.ndjson"),
                &CHECKPOINT_MEMBERS,
                &[
                    ("root", 64),
                    ("chain_head", 64),
                    ("prev_checkpoint", 64),
                    ("signature", 128),
                ],
                &mut malformed,
            )?,
            sealed: read_sealed(&dir.join(REGISTRY_FILE), &mut malformed),
            malformed,
            keys: read_keys(&dir.join("keys"))?,
            warehouse: None,
        })
    }

    /// Writes the bundle (optionally one tenant's part) to `dir`.
    pub fn export(&self, dir: &Path, tenant: Option<&str>) -> anyhow::Result<(usize, usize)> {
        std::fs::create_dir_all(dir.join("keys"))?;
        let keep = |t: &str| tenant.is_none_or(|want| want == t);
        let mut events: Vec<&EventRow> =
            self.events.iter().filter(|e| keep(&e.tenant_id)).collect();
        events.sort_by(|a, b| (&a.tenant_id, a.seq).cmp(&(&b.tenant_id, b.seq)));
        let mut checkpoints: Vec<&Checkpoint> = self
            .checkpoints
            .iter()
            .filter(|c| keep(&c.tenant_id))
            .collect();
        checkpoints.sort_by(|a, b| (&a.tenant_id, a.epoch).cmp(&(&b.tenant_id, b.epoch)));
        write_ndjson(&dir.join("events.ndjson"), &events)?;
        let expired: Vec<&ExpiredLeaf> =
            self.expired.iter().filter(|e| keep(&e.tenant_id)).collect();
        if !expired.is_empty() {
            write_ndjson(&dir.join(EXPIRED_FILE), &expired)?;
        }
        write_ndjson(&dir.join("checkpoints.ndjson"), &checkpoints)?;
        if let Some(sealed) = &self.sealed {
            let pin = SealedRegistry {
                seal: sealed.seal.clone(),
                tenants: sealed
                    .tenants
                    .iter()
                    .filter(|e| keep(&e.tenant_id))
                    .cloned()
                    .collect(),
            };
            std::fs::write(dir.join(REGISTRY_FILE), serde_json::to_vec_pretty(&pin)?)?;
        }
        for key in &self.keys {
            let id = custody_operators::checkpoint::key_id(key);
            std::fs::write(
                dir.join("keys").join(format!("{id}.pub")),
                hex::encode(key.as_bytes()),
            )?;
        }
        Ok((events.len(), checkpoints.len()))
    }
}

/// The bytes of content a row carries (every field as stored).
fn row_bytes(e: &EventRow) -> u64 {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    (e.tenant_id.len()
        + 8
        + e.event_id.len()
        + e.schema_version.len()
        + e.event_type.len()
        + e.session_id.len()
        + e.agent_id.len()
        + opt(&e.user_id)
        + e.event_time.len()
        + opt(&e.parent_event_id)
        + e.payload.len()
        + e.prev_hash.len()
        + e.hash.len()
        + e.leaf_hash.len()) as u64
}

/// Parses `--trusted-key` values: a hex key or a file holding one. A file inside `checked`
/// (the warehouse or bundle under verification) is refused: whoever could rewrite the data
/// could rewrite the key beside it, so the trusted key must come from elsewhere.
pub fn trusted_keys(values: &[String], checked: &Path) -> anyhow::Result<Vec<VerifyingKey>> {
    values
        .iter()
        .map(|v| {
            let text = if Path::new(v).exists() {
                if crate::config::is_within(Path::new(v), checked) {
                    bail!(
                        "the trusted key {v} is inside {} (the data under verification): take \
                         the key from where it was published out of band (e.g. the key \
                         directory's signing.pub), not from the data",
                        checked.display()
                    );
                }
                std::fs::read_to_string(v)?
            } else {
                v.clone()
            };
            parse_public_key(&text)
                .with_context(|| format!("{v:?} is not a hex ed25519 public key"))
        })
        .collect()
}

/// Reads held checkpoints from JSON-lines files.
pub fn held_checkpoints(files: &[PathBuf]) -> anyhow::Result<Vec<Checkpoint>> {
    let mut out = Vec::new();
    for f in files {
        out.extend(read_ndjson::<Checkpoint>(f)?);
    }
    Ok(out)
}

/// Verifies every tenant of `bundle`, with a progress bar on stderr; returns the reports and
/// the bytes of event content verified.
pub fn verify_bundle(
    mut bundle: Bundle,
    trusted: Vec<VerifyingKey>,
    mut held: Vec<Checkpoint>,
    witness: Option<(crate::witness::WitnessState, VerifyingKey)>,
    show_progress: bool,
) -> (Vec<TenantReport>, u64, f64) {
    let verifier = Verifier::new(trusted);
    let malformed = std::mem::take(&mut bundle.malformed);
    // What the witness cosigned is held for it: the log must still extend each of those.
    let mut witness_problems: Vec<(String, Problem)> = Vec::new();
    let mut latest_stored: BTreeMap<&str, &Checkpoint> = BTreeMap::new();
    for cp in &bundle.checkpoints {
        let e = latest_stored.entry(cp.tenant_id.as_str()).or_insert(cp);
        if cp.epoch > e.epoch {
            *e = cp;
        }
    }
    if let Some((state, key)) = &witness {
        let problem = |kind, detail: String| Problem {
            kind,
            seq: None,
            detail,
        };
        for (tenant, w) in &state.tenants {
            if !w.cosignature.verify(&w.checkpoint, key) || w.checkpoint.tenant_id != *tenant {
                witness_problems.push((
                    tenant.clone(),
                    problem(
                        ProblemKind::BadSignature,
                        "the witness's cosignature does not verify under the witness key".into(),
                    ),
                ));
                continue;
            }
            held.push(w.checkpoint.clone());
            let has_events = bundle.events.iter().any(|e| e.tenant_id == *tenant);
            if !has_events && !latest_stored.contains_key(tenant.as_str()) {
                witness_problems.push((
                    tenant.clone(),
                    problem(
                        ProblemKind::TenantMissing,
                        format!(
                            "the witness cosigned this tenant's log at {} events (epoch {}); \
                             it is gone",
                            w.checkpoint.tree_size, w.checkpoint.epoch
                        ),
                    ),
                ));
            }
        }
        for (tenant, cp) in &latest_stored {
            let cosigned = state
                .tenants
                .get(*tenant)
                .is_some_and(|w| w.checkpoint == **cp && w.cosignature.verify(cp, key));
            if !cosigned {
                witness_problems.push((
                    tenant.to_string(),
                    problem(
                        ProblemKind::Unwitnessed,
                        format!(
                            "the latest checkpoint (epoch {}, {} events) has no cosignature \
                             by witness {}{}",
                            cp.epoch,
                            cp.tree_size,
                            custody_operators::checkpoint::key_id(key),
                            state
                                .tenants
                                .get(*tenant)
                                .map_or(String::new(), |w| format!(
                                    " (it last cosigned epoch {})",
                                    w.checkpoint.epoch
                                ))
                        ),
                    ),
                ));
            }
        }
    }
    drop(latest_stored);
    let bytes: u64 = bundle.events.iter().map(row_bytes).sum();
    let progress = if show_progress {
        ProgressBar::new(bundle.events.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "verifying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut reports = Vec::new();
    // An export pins each tenant's latest checkpoint under the last seal; a warehouse's
    // seals are all verified below.
    let mut pinned: BTreeMap<String, custody_operators::merkle::Hash> = BTreeMap::new();
    let mut pin_problems: Vec<(String, Problem)> = Vec::new();
    let mut bundle_problems: Vec<Problem> = Vec::new();
    let mut pins_checked = false;
    if bundle.warehouse.is_none() {
        match bundle.sealed.as_ref().map(|s| verifier.pins(s)) {
            Some(Ok(pins)) => {
                pinned = pins;
                pins_checked = true;
            }
            Some(Err(detail)) => bundle_problems.push(Problem {
                kind: ProblemKind::BadSeal,
                seq: None,
                detail,
            }),
            None => bundle_problems.push(Problem {
                kind: ProblemKind::Truncated,
                seq: None,
                detail: format!(
                    "the bundle has no sealed registry ({REGISTRY_FILE}): nothing signed pins \
                     its tenants' latest checkpoints, so a log cut back consistently would pass"
                ),
            }),
        }
    }
    let mut pinned_epochs: BTreeMap<String, u64> = BTreeMap::new();
    if pins_checked {
        let tenants: std::collections::BTreeSet<&str> = bundle
            .events
            .iter()
            .map(|e| e.tenant_id.as_str())
            .chain(bundle.checkpoints.iter().map(|c| c.tenant_id.as_str()))
            .collect();
        // Each checkpoint hashed once, not once per tenant.
        let by_hash: HashMap<(&str, custody_operators::merkle::Hash), &Checkpoint> = bundle
            .checkpoints
            .iter()
            .map(|c| ((c.tenant_id.as_str(), c.hash()), c))
            .collect();
        for tenant in tenants {
            let found = pinned
                .get(tenant)
                .and_then(|h| by_hash.get(&(tenant, *h)).copied());
            match (pinned.get(tenant), found) {
                (Some(_), Some(cp)) => {
                    pinned_epochs.insert(tenant.to_string(), cp.epoch);
                }
                (pin, _) => pin_problems.push((
                    tenant.to_string(),
                    Problem {
                        kind: ProblemKind::Truncated,
                        seq: None,
                        detail: match pin {
                            Some(_) => format!(
                                "the latest checkpoint the seal of epoch {} lists for this \
                                 tenant is not in the bundle: its log was cut back",
                                bundle.sealed.as_ref().map_or(0, |s| s.seal.epoch)
                            ),
                            None => "the bundle's sealed registry has no entry for this tenant"
                                .to_string(),
                        },
                    },
                )),
            }
        }
    }
    let with_events: std::collections::HashSet<&str> =
        bundle.events.iter().map(|e| e.tenant_id.as_str()).collect();
    let warehouse = bundle
        .warehouse
        .as_ref()
        .map(|w| verifier.verify_warehouse(w, &bundle.checkpoints, &with_events));
    for (tenant, mut input) in
        group_by_tenant(bundle.events, bundle.expired, bundle.checkpoints, held)
    {
        let n = input.events.len() as u64;
        reports.push(
            verifier.verify_tenant_at(
                &tenant,
                &mut input.events,
                &input.expired,
                &input.checkpoints,
                &input.held,
                warehouse
                    .as_ref()
                    .and_then(|w| w.latest_registered.get(&tenant).copied())
                    .or_else(|| pinned_epochs.get(&tenant).copied()),
            ),
        );
        progress.inc(n);
    }
    progress.finish_and_clear();
    let WarehouseFindings {
        report: warehouse_report,
        mut tenant_problems,
        ..
    } = warehouse.unwrap_or_default();
    tenant_problems.extend(witness_problems);
    tenant_problems.extend(pin_problems);
    {
        for (tenant, problem) in tenant_problems {
            let i = match reports.iter().position(|r| r.tenant_id == tenant) {
                Some(i) => i,
                None => {
                    reports.push(TenantReport {
                        tenant_id: tenant,
                        ..TenantReport::default()
                    });
                    reports.len() - 1
                }
            };
            reports[i].problems.push(problem);
        }
        if !warehouse_report.tenant_id.is_empty() {
            reports.push(warehouse_report);
        }
        if !malformed.is_empty() || !bundle_problems.is_empty() {
            bundle_problems.extend(malformed.into_iter().map(|detail| Problem {
                kind: ProblemKind::Malformed,
                seq: None,
                detail,
            }));
            reports.push(TenantReport {
                tenant_id: BUNDLE_REPORT.to_string(),
                problems: bundle_problems,
                ..TenantReport::default()
            });
        }
    }
    (reports, bytes, started.elapsed().as_secs_f64())
}
