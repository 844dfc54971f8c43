//! The system log of Custody's evidence-relevant configuration: what decides which events are
//! kept, what is tokenized, which rules are checked and which keys sign and seal.
//!
//! As `custody run`, `serve`, `demo` and `retention` start, the configuration they run under
//! is summarized ([`evidence`]: retention policies, policy rules, PII recognizers and field
//! policies, vault modes, tenants' locations, producer bindings, detection thresholds, and the
//! ids of the signing,
//! envelope and PII keys, never the keys) and digested. If the digest differs from the last
//! `CONFIG_CHANGED` event of the system log ([`SYSTEM_TENANT`]), a new one is appended, chained
//! and signed like any tenant's event: a change of policy or a key rotation is on record,
//! with what changed and when it took effect, before any event is processed under it. Legal
//! holds are recorded in their own tenant's log (`LEGAL_HOLD_*`).

use std::path::Path;
use std::sync::Arc;

use custody_operators::sinks::iceberg::Warehouse;
use custody_schemas::event::SYSTEM_TENANT;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::dataflow::RunOptions;

/// The evidence-relevant configuration of a run under `config` with `opts`, by section.
pub fn evidence(config: &Config, opts: &RunOptions) -> anyhow::Result<Value> {
    let policy = |p: &custody_operators::retention::Policy| json!({ "days": p.days, "event_type_days": p.event_type_days });
    let policies = config.retention_policies()?;
    let signer = custody_operators::checkpoint::Signer::from_seed(&opts.signing_seed);
    let pii_master_id = {
        let mut h = Sha256::new();
        h.update(b"custody/pii-master-id/v1");
        h.update(&opts.master_key);
        hex::encode(&h.finalize()[..8])
    };
    let producers: serde_json::Map<String, Value> = config
        .identity
        .producers
        .iter()
        .map(|(id, p)| (id.clone(), json!({ "tenant": p.tenant })))
        .collect();
    Ok(json!({
        "retention": {
            "default": policy(&policies.default),
            "tenants": policies.tenants.iter()
                .map(|(t, p)| (t.clone(), policy(p)))
                .collect::<serde_json::Map<_, _>>(),
            "legal_minimum_days": config.retention.legal_minimum_days,
        },
        "policy": { "rules": config.policy.rules },
        "pii": {
            "custom": config.pii.custom,
            "tenants": config.pii.tenants,
        },
        "vault": { "tokens": opts.vault.tokens, "content": opts.vault.content },
        "residency": {
            "location": config.location,
            "tenants": config.tenants.iter()
                .filter_map(|(t, s)| Some((t.clone(), json!(s.location.as_ref()?))))
                .collect::<serde_json::Map<_, _>>(),
        },
        "identity": {
            "mode": format!("{:?}", config.identity.mode),
            "producers": producers,
        },
        "detection": {
            "drift": config.drift,
            "rubber_stamp": humantime::format_duration(config.views.rubber_stamp).to_string(),
        },
        "keys": {
            "signing": {
                "key_id": signer.key_id(),
                "public_key": hex::encode(signer.public_key().as_bytes()),
            },
            "signing_previous": opts.previous_signers.iter()
                .map(|k| json!({
                    "key_id": custody_operators::checkpoint::key_id(k),
                    "public_key": hex::encode(k.as_bytes()),
                }))
                .collect::<Vec<_>>(),
            "kek": opts.keks.as_ref().map(|(kek, _)| kek.id()),
            "kek_previous": opts.keks.as_ref()
                .map(|(_, previous)| previous.iter().map(|k| k.id()).collect::<Vec<_>>())
                .unwrap_or_default(),
            "pii_master": pii_master_id,
        },
    }))
}

/// SHA-256 (hex) of `config`'s canonical JSON (`Value`'s maps are sorted).
pub fn digest(config: &Value) -> String {
    hex::encode(Sha256::digest(config.to_string().as_bytes()))
}

/// The sections of `now` that differ from `before` (every section of `now` without one).
pub fn changed(before: Option<&Value>, now: &Value) -> Vec<String> {
    let Some(sections) = now.as_object() else {
        return Vec::new();
    };
    sections
        .iter()
        .filter(|(name, value)| before.and_then(|b| b.get(name.as_str())) != Some(value))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The last configuration recorded in `warehouse`'s system log: its payload, if any.
pub fn last_recorded(warehouse: &Path) -> anyhow::Result<Option<Value>> {
    if !warehouse.join("catalog.db").is_file() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let events = runtime.block_on(async {
        let warehouse = Warehouse::open_read_only(warehouse).await?;
        warehouse
            .events_of_types(Some(SYSTEM_TENANT), &["CONFIG_CHANGED"])
            .await
    })?;
    let Some(last) = events.into_iter().max_by_key(|e| e.seq) else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&last.payload)?))
}

/// Records `config` (run with `opts`) in `warehouse`'s system log if it differs from the last
/// recorded; the sections that changed (empty if none). `lock` is the warehouse's writer lock
/// if the caller holds it.
pub fn record(
    config: &Config,
    opts: &RunOptions,
    warehouse: &Path,
    requested_by: &str,
    lock: Option<Arc<std::fs::File>>,
) -> anyhow::Result<Vec<String>> {
    let now = evidence(config, opts)?;
    let digest_now = digest(&now);
    let last = last_recorded(warehouse)?;
    let previous_digest = last
        .as_ref()
        .and_then(|l| l["digest"].as_str())
        .map(str::to_string);
    if previous_digest.as_deref() == Some(digest_now.as_str()) {
        return Ok(Vec::new());
    }
    let changed = changed(last.as_ref().map(|l| &l["config"]), &now);
    let (_, event) = crate::admin::custody_event(
        SYSTEM_TENANT,
        requested_by,
        "CONFIG_CHANGED",
        json!({
            "digest": digest_now,
            "previous_digest": previous_digest,
            "changed": changed,
            "config": now,
            "requested_by": requested_by,
        }),
    );
    crate::admin::append_events(config, warehouse, &[event], None, lock)?;
    tracing::info!(
        "configuration recorded in the system log ({SYSTEM_TENANT}): {}",
        changed.join(", ")
    );
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_names_the_sections_that_differ() {
        let a = json!({"keys": {"kek": "1"}, "retention": {"days": 180}});
        let b = json!({"keys": {"kek": "2"}, "retention": {"days": 180}});
        assert_eq!(changed(None, &a), ["keys", "retention"]);
        assert_eq!(changed(Some(&a), &b), ["keys"]);
        assert!(changed(Some(&a), &a).is_empty());
        assert_ne!(digest(&a), digest(&b));
        // Canonical: member order does not matter.
        let reordered: Value =
            serde_json::from_str(r#"{"retention":{"days":180},"keys":{"kek":"1"}}"#).unwrap();
        assert_eq!(digest(&a), digest(&reordered));
    }
}
