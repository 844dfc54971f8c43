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
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Canonical JSON of a value: sorted keys, compact. (`serde_json`'s map is a `BTreeMap`.)
pub fn canonical_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The fields of an event that its canonical encoding covers.
#[derive(Clone, Copy, Debug)]
pub struct CanonicalFields<'a> {
    /// Agent.
    pub agent_id: &'a str,
    /// Event id.
    pub event_id: &'a str,
    /// Event type wire name.
    pub event_type: &'a str,
    /// Causal parent.
    pub parent_event_id: Option<&'a str>,
    /// The stored payload text (canonical JSON), embedded verbatim.
    pub payload_json: &'a str,
    /// Schema version.
    pub schema_version: &'a str,
    /// Position in the tenant's log.
    pub seq: u64,
    /// Session.
    pub session_id: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Event time, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub timestamp: &'a str,
    /// End user.
    pub user_id: Option<&'a str>,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// The canonical bytes: members in key order, the payload text embedded as is.
pub fn canonical_bytes(f: &CanonicalFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.payload_json.len() + 384);
    out.extend_from_slice(b"{\"agent_id\":");
    push_str(&mut out, f.agent_id);
    out.extend_from_slice(b",\"event_id\":");
    push_str(&mut out, f.event_id);
    out.extend_from_slice(b",\"event_type\":");
    push_str(&mut out, f.event_type);
    out.extend_from_slice(b",\"parent_event_id\":");
    push_opt(&mut out, f.parent_event_id);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(f.payload_json.as_bytes());
    out.extend_from_slice(b",\"schema_version\":");
    push_str(&mut out, f.schema_version);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(f.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"session_id\":");
    push_str(&mut out, f.session_id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_str(&mut out, f.tenant_id);
    out.extend_from_slice(b",\"timestamp\":");
    push_str(&mut out, f.timestamp);
    out.extend_from_slice(b",\"user_id\":");
    push_opt(&mut out, f.user_id);
    out.push(b'}');
    out
}

/// The canonical bytes of an event at position `seq`, given its canonical payload text.
pub fn canonical_event(event: &AuditEvent, payload_json: &str, seq: u64) -> Vec<u8> {
    let timestamp = format_rfc3339(event.timestamp_us);
    canonical_bytes(&CanonicalFields {
        agent_id: &event.agent_id,
        event_id: &event.event_id,
        event_type: event.event_type.as_str(),
        parent_event_id: event.parent_event_id.as_deref(),
        payload_json,
        schema_version: &event.schema_version,
        seq,
        session_id: &event.session_id,
        tenant_id: event.tenant_id.as_str(),
        timestamp: &timestamp,
        user_id: event.user_id.as_deref(),
    })
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
    fn canonical_bytes_equal_sorted_json_of_the_whole_event() {
        let text = include_str!("../../schemas/testdata/event_v1_human_review.json").to_string();
        let event = custody_schemas::decode_event(text.as_bytes()).unwrap();
        let bytes = canonical_event(&event, &canonical_json(&event.payload), 5);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["seq"] = Value::from(5);
        v["timestamp"] = Value::from("2026-03-08T14:47:00.000000Z");
        assert_eq!(String::from_utf8(bytes).unwrap(), canonical_json(&v));
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
