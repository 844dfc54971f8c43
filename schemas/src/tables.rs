//! Arrow schemas of the Iceberg tables the pipeline writes, with stable Iceberg field ids.
//!
//! Field ids are the columns' positions (1..n): a catalog assigns fresh ids in that order when it
//! creates a table, and the data files must carry the same ones. The ids live in Arrow field
//! metadata under [`FIELD_ID_KEY`], which is how Iceberg and Parquet readers (iceberg-rust,
//! pyiceberg, Spark) map columns. A warehouse whose tables have another layout was written by
//! another version of Custody and is refused when opened.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The Arrow metadata key Iceberg uses for field ids (`PARQUET:field_id`).
pub const FIELD_ID_KEY: &str = "PARQUET:field_id";

/// The Iceberg namespace that holds every Custody table.
pub const NAMESPACE: &str = "custody";

/// Accepted, tokenized, hash-chained events.
pub const EVENTS: &str = "events";
/// Rejected input with the reason.
pub const QUARANTINE: &str = "quarantine";
/// Per-tenant chain head at the close of each epoch that touched the tenant.
pub const CHAIN_HEADS: &str = "chain_heads";
/// Signed per-tenant checkpoints, one per tenant per epoch.
pub const CHECKPOINTS: &str = "checkpoints";
/// The views' changelog: every change of every view, one table keyed by view name
/// ([`view_changes_schema`]).
pub const VIEW_CHANGES: &str = "view_changes";
/// The name of the event counts view in [`VIEW_CHANGES`] (key: the event type).
pub const VIEW_EVENT_COUNTS: &str = "event_counts";
/// The name of the HITL review latency view in [`VIEW_CHANGES`] (one row per tenant, key "").
pub const VIEW_HITL_LATENCY: &str = "hitl_latency";

/// Sealed token values and field content (XChaCha20-Poly1305 under per-tenant data keys).
pub const VAULT: &str = "vault";
/// The commit log: one row per committed epoch, listing the data files the epoch adds to every
/// other table. It is appended first: an epoch is durable exactly when its row is here, and a
/// restart completes any table commit of the last epoch that a crash cut short (roll-forward).
pub const EPOCHS: &str = "epochs";
/// The emitter-side chains: per tenant and agent, the SHA-256 of the last raw event the agent
/// sent, at the close of each epoch that touched it (so the check survives restarts).
pub const EMITTER_HEADS: &str = "emitter_heads";

/// The leaf hashes of events removed by retention, one row per event: what the chain and
/// every checkpoint still need of them ([`expired_schema`]).
pub const EXPIRED: &str = "expired";

/// The system log of Custody's evidence-relevant configuration: one row per change, in the
/// epoch from which it is in force ([`config_log_schema`]).
pub const CONFIG_LOG: &str = "config_log";

/// Every table, in creation order; after `epochs`, the order an epoch's commits are applied in.
pub const ALL_TABLES: [&str; 10] = [
    EVENTS,
    QUARANTINE,
    CHAIN_HEADS,
    CHECKPOINTS,
    VIEW_CHANGES,
    VAULT,
    EMITTER_HEADS,
    EXPIRED,
    CONFIG_LOG,
    EPOCHS,
];

fn field(id: i32, name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
        .with_metadata(HashMap::from([(FIELD_ID_KEY.to_string(), id.to_string())]))
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

/// The Arrow schema of a table by name.
pub fn table_schema(name: &str) -> Option<SchemaRef> {
    match name {
        EVENTS => Some(events_schema()),
        QUARANTINE => Some(quarantine_schema()),
        CHAIN_HEADS => Some(chain_heads_schema()),
        CHECKPOINTS => Some(checkpoints_schema()),
        VIEW_CHANGES => Some(view_changes_schema()),
        EPOCHS => Some(epochs_schema()),
        VAULT => Some(vault_schema()),
        EMITTER_HEADS => Some(emitter_heads_schema()),
        EXPIRED => Some(expired_schema()),
        CONFIG_LOG => Some(config_log_schema()),
        _ => None,
    }
}

/// `custody.events`: what the leaf hashes, stored compactly. The ids are in two columns each
/// ([`crate::id`]): the UUID's 16 bytes, or the text when the id is not a canonical UUID. The
/// chain hash is 32 bytes; the leaf hash (recomputable from the row) and the previous hash (the
/// previous row's `hash`) are not stored.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "tenant_id", DataType::Utf8, false),
        field(2, "seq", DataType::Int64, false),
        field(3, "event_uuid", DataType::FixedSizeBinary(16), true),
        field(4, "event_id_text", DataType::Utf8, true),
        field(5, "schema_version", DataType::Utf8, false),
        field(6, "event_type", DataType::Utf8, false),
        field(7, "session_id", DataType::Utf8, false),
        field(8, "agent_id", DataType::Utf8, false),
        field(9, "user_id", DataType::Utf8, true),
        field(10, "event_time", utc_micros(), false),
        field(11, "parent_uuid", DataType::FixedSizeBinary(16), true),
        field(12, "parent_id_text", DataType::Utf8, true),
        field(13, "payload", DataType::Utf8, false),
        field(14, "hash", DataType::FixedSizeBinary(32), false),
        field(15, "source", DataType::Utf8, false),
        field(16, "source_offset", DataType::Int64, false),
        field(17, "epoch", DataType::Int64, false),
    ]))
}

/// `custody.quarantine`.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "source", DataType::Utf8, false),
        field(2, "source_offset", DataType::Int64, false),
        field(3, "epoch", DataType::Int64, false),
        field(4, "reason_kind", DataType::Utf8, false),
        field(5, "reason", DataType::Utf8, false),
        field(6, "tenant_id", DataType::Utf8, true),
        field(7, "raw_len", DataType::Int64, false),
        field(8, "raw_sha256", DataType::Utf8, false),
        field(9, "raw_redacted", DataType::Utf8, false),
    ]))
}

/// `custody.chain_heads`.
pub fn chain_heads_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "tenant_id", DataType::Utf8, false),
        field(2, "seq", DataType::Int64, false),
        field(3, "head_hash", DataType::Utf8, false),
        field(4, "epoch_events", DataType::Int64, false),
        field(5, "epoch", DataType::Int64, false),
        field(6, "merkle_range", DataType::Utf8, false),
    ]))
}

/// `custody.checkpoints`.
pub fn checkpoints_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "tenant_id", DataType::Utf8, false),
        field(2, "tree_size", DataType::Int64, false),
        field(3, "root", DataType::Utf8, false),
        field(4, "chain_head", DataType::Utf8, false),
        field(5, "epoch", DataType::Int64, false),
        field(6, "signed_at", DataType::Utf8, false),
        field(7, "key_id", DataType::Utf8, false),
        field(8, "signature", DataType::Utf8, false),
        field(9, "prev_checkpoint", DataType::Utf8, false),
    ]))
}

/// `custody.vault`: `kind` is `token` (ref: the token, sealed under the token's key),
/// `content` (ref: `event_id#field#<CONTENT:tok_…>`, the commitment that replaced the field)
/// or `quarantine` (ref: `quarantine:source#partition:offset`), both under the tenant's content
/// key; `sealed` is hex `nonce ‖ ciphertext ‖ tag` under data key `key_id`, with the ref in the
/// associated data.
pub fn vault_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "tenant_id", DataType::Utf8, false),
        field(2, "kind", DataType::Utf8, false),
        field(3, "ref", DataType::Utf8, false),
        field(4, "key_id", DataType::Utf8, false),
        field(5, "sealed", DataType::Utf8, false),
        field(6, "epoch", DataType::Int64, false),
    ]))
}

/// `custody.epochs`: the commit log, see [`EPOCHS`].
pub fn epochs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "epoch", DataType::Int64, false),
        field(2, "sink_id", DataType::Utf8, false),
        field(3, "source", DataType::Utf8, false),
        field(4, "positions", DataType::Utf8, false),
        field(5, "events", DataType::Int64, false),
        field(6, "quarantined", DataType::Int64, false),
        field(7, "checkpoints", DataType::Int64, false),
        field(8, "checkpoint_digest", DataType::Utf8, false),
        field(9, "committed_at", utc_micros(), false),
        field(10, "files", DataType::Utf8, false),
        field(11, "registry", DataType::Utf8, false),
        field(12, "seal", DataType::Utf8, false),
    ]))
}

/// `custody.emitter_heads`: see [`EMITTER_HEADS`].
pub fn emitter_heads_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "tenant_id", DataType::Utf8, false),
        field(2, "agent_id", DataType::Utf8, false),
        field(3, "last_sha256", DataType::Utf8, false),
        field(4, "epoch", DataType::Int64, false),
    ]))
}

/// `custody.expired`: for each event removed by retention, its tenant, position and leaf hash
/// (`SHA-256(0x00 || canonical bytes)`), and the epoch that removed it. Nothing else of the
/// event is kept: the chain is re-walked through its leaf (`hash(seq) = SHA-256(0x02 ||
/// hash(seq-1) || leaf)`), and the Merkle tree, so every checkpoint, is rebuilt from it.
pub fn expired_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "tenant_id", DataType::Utf8, false),
        field(2, "seq", DataType::Int64, false),
        field(3, "leaf_hash", DataType::FixedSizeBinary(32), false),
        field(4, "epoch", DataType::Int64, false),
    ]))
}

/// `custody.config_log`: Custody's evidence-relevant configuration (retention policies, policy
/// rules, PII recognizers and field policies, vault modes, tenants' locations, producer
/// bindings, detection thresholds, key ids and public keys; never a secret), one row each
/// time it changed, committed and sealed with `epoch`, the first epoch processed under it.
/// `config` is canonical JSON, `digest` its SHA-256 (hex), `previous_digest` the digest of
/// the row before (null on the first), `changed` a JSON array of the sections that differ
/// from it, `recorded_by` the command that ran under it.
pub fn config_log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "epoch", DataType::Int64, false),
        field(2, "recorded_at", DataType::Utf8, false),
        field(3, "digest", DataType::Utf8, false),
        field(4, "previous_digest", DataType::Utf8, true),
        field(5, "changed", DataType::Utf8, false),
        field(6, "config", DataType::Utf8, false),
        field(7, "recorded_by", DataType::Utf8, false),
    ]))
}

/// `custody.view_changes`: the changelog of every view, `(view, tenant, key) -> row` with
/// `diff` +1 (inserted) or -1 (retracted) at `epoch`. `row` is the view's row as JSON (its
/// fields are documented per view in `reports/src/views/`; `event_counts` rows are
/// `{"count":n}` keyed by event type, `hitl_latency` rows the tenant's statistics under key
/// ""). One table for all views: an epoch commits it once, whatever the views changed.
pub fn view_changes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field(1, "view", DataType::Utf8, false),
        field(2, "tenant_id", DataType::Utf8, false),
        field(3, "key", DataType::Utf8, false),
        field(4, "row", DataType::Utf8, false),
        field(5, "epoch", DataType::Int64, false),
        field(6, "diff", DataType::Int64, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_unique_id() {
        for name in ALL_TABLES {
            let schema = table_schema(name).unwrap();
            let mut ids: Vec<i32> = schema
                .fields()
                .iter()
                .map(|f| f.metadata()[FIELD_ID_KEY].parse().unwrap())
                .collect();
            let n = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n, "duplicate field id in {name}");
            assert_eq!(ids, (1..=n as i32).collect::<Vec<_>>(), "{name}");
        }
    }
}
