//! Custody's own audited actions on a tenant: `custody erase` (crypto-shredding) and
//! `custody reveal` (re-identification). Each is recorded as an event in the tenant's chain,
//! hashed, checkpointed and signed like any other, by running the pipeline over that one event.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use custody_operators::Metrics;
use custody_operators::pii::VaultMode;
use custody_operators::sinks::iceberg::Warehouse;
use custody_operators::sources::ndjson::NdjsonSource;
use custody_operators::vault::{Keystore, open, vault_aad};
use custody_reports::live::LiveViews;
use custody_reports::proofs::LiveLogs;
use custody_schemas::time::format_rfc3339;
use serde_json::{Value, json};

use crate::config::Config;
use crate::dataflow::run_pipeline;

/// Appends one Custody event of `event_type` to `tenant`'s chain.
fn record(
    config: &Config,
    warehouse: &Path,
    tenant: &str,
    requested_by: &str,
    event_type: &str,
    payload: Value,
) -> anyhow::Result<String> {
    let (id, event) = custody_event(tenant, requested_by, event_type, payload);
    append_events(config, warehouse, &[event], None, None)?;
    Ok(id)
}

/// A Custody event of `event_type` about `tenant`, as a producer would send it, and its id.
pub(crate) fn custody_event(
    tenant: &str,
    requested_by: &str,
    event_type: &str,
    payload: Value,
) -> (String, Value) {
    let id = format!("custody-{}", uuid::Uuid::new_v4());
    let now = custody_schemas::time::now_us();
    let event = json!({
        "event_id": id,
        "schema_version": custody_schemas::event::SCHEMA_VERSION,
        "tenant_id": tenant,
        "session_id": "custody-admin",
        "agent_id": "custody",
        "user_id": requested_by,
        "event_type": event_type,
        "timestamp": format_rfc3339(now),
        "parent_event_id": null,
        "payload": payload,
    });
    (id, event)
}

/// Appends Custody's own `events` (each to its tenant's chain, hashed, checkpointed and
/// signed like any other) by running the pipeline over them; with `retention`, that
/// application is committed in the same epoch. `lock` is the warehouse's writer lock if the
/// caller holds it.
pub(crate) fn append_events(
    config: &Config,
    warehouse: &Path,
    events: &[Value],
    retention: Option<custody_operators::retention::Job>,
    lock: Option<Arc<std::fs::File>>,
) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    for event in events {
        serde_json::to_writer(&mut lines, event)?;
        lines.push(b'\n');
    }
    let source = NdjsonSource::new(
        format!("admin:{}", uuid::Uuid::new_v4()),
        Cursor::new(lines),
        config.pipeline.max_event_bytes,
    )
    .with_partition(custody_operators::record::ADMIN_PARTITION);
    let mut opts = crate::run_options(config, warehouse.to_path_buf(), None)?;
    // Custody's own events: not from a producer, and their fields are not vaulted.
    opts.decode.producers = None;
    opts.vault = VaultMode::default();
    // Only these events: pending API access records wait for the next pipeline run.
    opts.access_log = false;
    opts.retention = retention;
    opts.held_lock = lock;
    let summary = run_pipeline(
        Box::new(source),
        opts,
        Metrics::new(),
        Arc::new(Mutex::new(LiveViews::default())),
        Arc::new(Mutex::new(LiveLogs::default())),
        Arc::new(AtomicBool::new(false)),
    )?;
    if summary.accepted != events.len() as u64 {
        bail!(
            "{} of Custody's {} events were accepted into the chain (see custody.quarantine)",
            summary.accepted,
            events.len()
        );
    }
    Ok(())
}

fn keystore(
    config: &Config,
    warehouse: &Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Keystore> {
    // Before anything is read or made (a KEK file, a key directory): a mistyped path is an
    // error with no side effect.
    require_warehouse(warehouse)?;
    let (current, previous) =
        config
            .vault
            .keks(&config.keys, &config.keys.dir(warehouse)?, warehouse)?;
    let path = warehouse.join("keys/keystore.db");
    if !path.exists() {
        bail!(
            "{} has no keystore: the vault was never enabled",
            warehouse.display()
        );
    }
    Ok(rt.block_on(Keystore::open(&path, current, previous))?)
}

/// Refuses a path that is not a warehouse, before anything is read or made there.
pub(crate) fn require_warehouse(warehouse: &Path) -> anyhow::Result<()> {
    if !warehouse.join("catalog.db").is_file() {
        bail!(
            "{} is not a custody warehouse (no catalog.db)",
            warehouse.display()
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Destroys the keys of `tenant` (or of one token), then records `DATA_ERASED`. Refused while
/// a legal hold is in force on the tenant, unless `override_hold` gives the reason to erase
/// anyway (recorded with the holds overridden).
pub fn erase(
    config: &Config,
    warehouse: &Path,
    tenant: &str,
    subject: Option<&str>,
    requested_by: &str,
    reason: &str,
    override_hold: Option<&str>,
) -> anyhow::Result<()> {
    config.require_here(tenant)?;
    require_warehouse(warehouse)?;
    // The tenant's keys protect every sealed value of it, held or not.
    let holds = crate::holds::in_force(warehouse, Some(tenant))?;
    if !holds.is_empty() && override_hold.is_none() {
        bail!(
            "{tenant:?} is under legal hold: {}; erasure refused (pass --override-hold REASON \
             to erase anyway; the override is recorded in the DATA_ERASED event)",
            holds
                .iter()
                .map(custody_operators::holds::Hold::describe)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let rt = runtime()?;
    let destroyed = {
        let _lock = crate::dataflow::lock_warehouse(warehouse)?;
        let mut keys = keystore(config, warehouse, &rt)?;
        rt.block_on(keys.erase(tenant, subject))?
    };
    let id = record(
        config,
        warehouse,
        tenant,
        requested_by,
        "DATA_ERASED",
        json!({
            "scope": if subject.is_some() { "subject" } else { "tenant" },
            "subject": subject,
            "keys_destroyed": destroyed,
            "requested_by": requested_by,
            "reason": reason,
            "overridden_holds": holds.iter().map(|h| h.hold_id.as_str()).collect::<Vec<_>>(),
            "override_reason": override_hold.filter(|_| !holds.is_empty()),
        }),
    )?;
    println!("erased {destroyed} data key(s) of {tenant:?}; recorded as event {id}");
    if !holds.is_empty() {
        println!(
            "overrode {} legal hold(s): {}",
            holds.len(),
            holds
                .iter()
                .map(|h| h.hold_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Reveals the value behind `token`, after recording `DATA_REIDENTIFIED` (no record, no reveal).
pub fn reveal(
    config: &Config,
    warehouse: &Path,
    tenant: &str,
    token: &str,
    requested_by: &str,
    reason: &str,
) -> anyhow::Result<()> {
    config.require_here(tenant)?;
    let rt = runtime()?;
    let value = {
        let keys = keystore(config, warehouse, &rt)?;
        let lake = rt.block_on(Warehouse::open(warehouse))?;
        let entry = rt
            .block_on(lake.vault_entry(tenant, token))?
            .with_context(|| format!("no vault entry for {token} in tenant {tenant:?}"))?;
        let subject = entry.key_subject();
        let key = rt.block_on(keys.get(tenant, subject))?.with_context(|| {
            if subject.is_empty() {
                format!("the content key of tenant {tenant:?} was erased: {token} is irrecoverable")
            } else {
                format!("the key of {token} was erased: its value is irrecoverable")
            }
        })?;
        if key.id != entry.key_id {
            bail!(
                "{token} was sealed under data key {} but the keystore holds {}: the key it \
                 was sealed with was erased",
                entry.key_id,
                key.id
            );
        }
        open(
            &key.key,
            &vault_aad(tenant, &entry.reference),
            &entry.sealed,
        )?
    };
    record(
        config,
        warehouse,
        tenant,
        requested_by,
        "DATA_REIDENTIFIED",
        json!({ "token": token, "requested_by": requested_by, "reason": reason }),
    )?;
    println!("{}", String::from_utf8_lossy(&value));
    Ok(())
}

/// Re-wraps every data key under the current KEK.
pub fn rewrap(config: &Config, warehouse: &Path) -> anyhow::Result<()> {
    require_warehouse(warehouse)?;
    let rt = runtime()?;
    // The lock file is made in the warehouse, so only once it is known to be one.
    let _lock = crate::dataflow::lock_warehouse(warehouse)?;
    let mut keys = keystore(config, warehouse, &rt)?;
    let n = rt.block_on(keys.rewrap())?;
    println!("re-wrapped {n} data key(s) under the current key-encryption key");
    Ok(())
}
