//! The evidence-relevant configuration a pipeline runs under, for `custody.config_log`
//! ([`custody_operators::config_log`]): what decides which events are kept, what is
//! tokenized, which rules are checked and which keys sign and seal.
//!
//! Every pipeline (`custody run`, `serve`, `demo`, and the admin commands that append
//! Custody's own events) is given [`evidence`]: retention policies, policy rules, PII
//! recognizers and field policies, vault modes, tenants' locations, producer bindings,
//! detection thresholds, and the ids and public keys of the signing, envelope and PII keys,
//! never a secret. Its sink records it with the first epoch it commits whenever it differs
//! from the last configuration recorded, so a change of policy or a key rotation is on record
//! (sealed and signed with that epoch) from the first event processed under it. Legal holds
//! are recorded in their own tenant's log (`LEGAL_HOLD_*`).

use std::sync::OnceLock;

use custody_operators::config_log::ConfigEvidence;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::dataflow::RunOptions;

/// The command this process runs (`custody run`, …), recorded with its configuration.
static COMMAND: OnceLock<String> = OnceLock::new();

/// Names the command this process runs (`run`, `demo`, …), once, as it starts.
pub fn set_command(name: &str) {
    let _ = COMMAND.set(format!("custody {name}"));
}

/// The evidence of a run under `config` with `opts`, recorded by the running command.
pub fn of_run(config: &Config, opts: &RunOptions) -> anyhow::Result<ConfigEvidence> {
    Ok(ConfigEvidence {
        config: evidence(config, opts)?,
        recorded_by: COMMAND.get().cloned().unwrap_or_else(|| "custody".into()),
    })
}

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
