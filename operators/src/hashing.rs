//! The canonical encoding of an event and its chain hash.
//!
//! Canonical JSON: an object with keys sorted by their UTF-8 bytes, no insignificant whitespace,
//! strings escaped as `serde_json` does (only `"`, `\` and control characters), integers in
//! decimal. Leaf: `SHA-256(0x00 || canonical)`. Chain: `hash = SHA-256(0x02 || prev_hash || leaf)`
//! with `prev_hash` = 32 zero bytes for `seq` 0 (0x01 is the Merkle node prefix). The canonical
//! object is `{agent_id, event_id, event_type, parent_event_id, payload, schema_version, seq,
//! session_id, tenant_id, timestamp, user_id}` where `payload` is the tokenized payload and
//! `timestamp` the event time normalized to `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
//! The full specification is `docs/chain-format.md`.

use custody_schemas::AuditEvent;
use custody_schemas::time::format_rfc3339;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Canonical JSON of a value: sorted keys, compact. (`serde_json`'s map is a `BTreeMap`.)
pub fn canonical_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The canonical bytes of an event at position `seq` of its tenant's chain.
pub fn canonical_event(event: &AuditEvent, seq: u64) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("agent_id".into(), Value::from(event.agent_id.as_str()));
    map.insert("event_id".into(), Value::from(event.event_id.as_str()));
    map.insert("event_type".into(), Value::from(event.event_type.as_str()));
    map.insert(
        "parent_event_id".into(),
        event
            .parent_event_id
            .clone()
            .map_or(Value::Null, Value::from),
    );
    map.insert("payload".into(), event.payload.clone());
    map.insert(
        "schema_version".into(),
        Value::from(event.schema_version.as_str()),
    );
    map.insert("seq".into(), Value::from(seq));
    map.insert("session_id".into(), Value::from(event.session_id.as_str()));
    map.insert("tenant_id".into(), Value::from(event.tenant_id.as_str()));
    map.insert(
        "timestamp".into(),
        Value::from(format_rfc3339(event.timestamp_us)),
    );
    map.insert(
        "user_id".into(),
        event.user_id.clone().map_or(Value::Null, Value::from),
    );
    canonical_json(&Value::Object(map)).into_bytes()
}

/// `SHA-256(0x00 || canonical)`.
pub fn leaf_hash(canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(canonical);
    h.finalize().into()
}

/// `SHA-256(0x02 || prev || leaf)`.
pub fn chain_hash(prev: &[u8; 32], leaf: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([2u8]);
    h.update(prev);
    h.update(leaf);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_is_compact() {
        let v: Value = serde_json::from_str(r#"{ "b": 1, "a": {"d": [1, 2], "c": "x"} }"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
    }

    #[test]
    fn chain_depends_on_every_input() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_ne!(a, b);
        let zero = [0u8; 32];
        assert_ne!(chain_hash(&zero, &a), chain_hash(&a, &a));
        assert_ne!(chain_hash(&zero, &a), chain_hash(&zero, &b));
    }
}
