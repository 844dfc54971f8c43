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
use custody_operators::sinks::iceberg::Warehouse;
use custody_operators::verify::{
    EventRow, Problem, ProblemKind, TenantReport, Verifier, WarehouseState, group_by_tenant,
};
use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;

/// Everything needed to verify logs.
#[derive(Debug, Default)]
pub struct Bundle {
    /// Event rows.
    pub events: Vec<EventRow>,
    /// Stored checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Public keys shipped with the data (not trusted by default).
    pub keys: Vec<VerifyingKey>,
    /// For a warehouse: its sealed epochs and table files.
    pub warehouse: Option<WarehouseState>,
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
            Ok(Bundle {
                events: warehouse.event_rows().await?,
                checkpoints: warehouse.checkpoint_rows().await?,
                keys: read_keys(&path.join("keys"))?,
                warehouse: Some(WarehouseState {
                    records: warehouse.epoch_records(None).await?,
                    files,
                }),
            })
        })
    }

    /// Reads an export bundle.
    pub fn from_export(dir: &Path) -> anyhow::Result<Bundle> {
        Ok(Bundle {
            events: read_ndjson(&dir.join("events.ndjson"))?,
            checkpoints: read_ndjson(&dir.join("checkpoints.ndjson"))?,
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
        write_ndjson(&dir.join("checkpoints.ndjson"), &checkpoints)?;
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
    bundle: Bundle,
    trusted: Vec<VerifyingKey>,
    mut held: Vec<Checkpoint>,
    witness: Option<(crate::witness::WitnessState, VerifyingKey)>,
    show_progress: bool,
) -> (Vec<TenantReport>, u64, f64) {
    let verifier = Verifier::new(trusted);
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
    let latest = verifier.latest_epoch(&bundle.checkpoints);
    let with_events: std::collections::HashSet<&str> =
        bundle.events.iter().map(|e| e.tenant_id.as_str()).collect();
    let warehouse = bundle
        .warehouse
        .as_ref()
        .map(|w| verifier.verify_warehouse(w, &bundle.checkpoints, &with_events));
    for (tenant, mut input) in group_by_tenant(bundle.events, bundle.checkpoints, held) {
        let n = input.events.len() as u64;
        reports.push(verifier.verify_tenant_at(
            &tenant,
            &mut input.events,
            &input.checkpoints,
            &input.held,
            latest,
        ));
        progress.inc(n);
    }
    progress.finish_and_clear();
    let (warehouse_report, mut tenant_problems) = warehouse.unwrap_or_default();
    tenant_problems.extend(witness_problems);
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
    }
    (reports, bytes, started.elapsed().as_secs_f64())
}
