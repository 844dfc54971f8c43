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
use custody_schemas::json;
use custody_schemas::time::rfc3339;
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

/// Where canonical bytes go: a buffer, or straight into a hash (no copy of the event).
trait Out {
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Out for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// A JSON string, escaped as `serde_json` does (§2): most ids need no escape and go out as
/// one slice.
fn put_str(out: &mut impl Out, s: &str) {
    if !json::needs_escape(s) {
        out.put(b"\"");
        out.put(s.as_bytes());
        out.put(b"\"");
        return;
    }
    let mut escaped = Vec::with_capacity(s.len() + 8);
    json::write_str(&mut escaped, s);
    out.put(&escaped);
}

fn put_opt(out: &mut impl Out, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put(b"null"),
    }
}

fn put_u64(out: &mut impl Out, v: u64) {
    out.put(json::u64_digits(v, &mut [0; 20]));
}

fn put_canonical(out: &mut impl Out, f: &CanonicalFields<'_>) {
    out.put(b"{\"agent_id\":");
    put_str(out, f.agent_id);
    out.put(b",\"event_id\":");
    put_str(out, f.event_id);
    out.put(b",\"event_type\":");
    put_str(out, f.event_type);
    out.put(b",\"parent_event_id\":");
    put_opt(out, f.parent_event_id);
    out.put(b",\"payload\":");
    out.put(f.payload_json.as_bytes());
    out.put(b",\"schema_version\":");
    put_str(out, f.schema_version);
    out.put(b",\"seq\":");
    put_u64(out, f.seq);
    out.put(b",\"session_id\":");
    put_str(out, f.session_id);
    out.put(b",\"tenant_id\":");
    put_str(out, f.tenant_id);
    out.put(b",\"timestamp\":");
    put_str(out, f.timestamp);
    out.put(b",\"user_id\":");
    put_opt(out, f.user_id);
    out.put(b"}");
}

/// The canonical bytes: members in key order, the payload text embedded as is.
pub fn canonical_bytes(f: &CanonicalFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(f.payload_json.len() + 384);
    put_canonical(&mut out, f);
    out
}

/// The leaf hash of the canonical bytes, computed as they are encoded (no buffer).
pub fn canonical_leaf(f: &CanonicalFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    put_canonical(&mut h, f);
    h.finalize().into()
}

/// The fields of `event` at position `seq`; `timestamp` is the event time's §2 text
/// ([`custody_schemas::time::rfc3339`]).
fn event_fields<'a>(event: &'a AuditEvent, seq: u64, timestamp: &'a str) -> CanonicalFields<'a> {
    CanonicalFields {
        agent_id: &event.agent_id,
        event_id: &event.event_id,
        event_type: event.event_type.as_str(),
        parent_event_id: event.parent_event_id.as_deref(),
        payload_json: &event.payload,
        schema_version: &event.schema_version,
        seq,
        session_id: &event.session_id,
        tenant_id: event.tenant_id.as_str(),
        timestamp,
        user_id: event.user_id.as_deref(),
    }
}

/// The canonical bytes of an event at position `seq`.
pub fn canonical_event(event: &AuditEvent, seq: u64) -> Vec<u8> {
    let timestamp = rfc3339(event.timestamp_us);
    canonical_bytes(&event_fields(event, seq, timestamp.as_str()))
}

/// The leaf hash of an event at position `seq` ([`canonical_event`] hashed as it is encoded).
pub fn event_leaf(event: &AuditEvent, seq: u64) -> [u8; 32] {
    // A wire timestamp already in the §2 form (it parsed, so its fields are in range; a leap
    // second `:60` normalizes to the next minute, so not that) is the canonical text of its
    // instant: no need to format it again.
    let wire = event.timestamp.as_bytes();
    if wire.len() == 27
        && wire[19] == b'.'
        && wire[26] == b'Z'
        && wire[10] == b'T'
        && &wire[17..19] != b"60"
    {
        return canonical_leaf(&event_fields(event, seq, &event.timestamp));
    }
    let timestamp = rfc3339(event.timestamp_us);
    canonical_leaf(&event_fields(event, seq, timestamp.as_str()))
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
        let bytes = canonical_event(&event, 5);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["seq"] = Value::from(5);
        v["timestamp"] = Value::from("2026-03-08T14:47:00.000000Z");
        assert_eq!(String::from_utf8(bytes).unwrap(), canonical_json(&v));
    }

    #[test]
    fn streamed_leaves_equal_hashed_bytes() {
        let text = include_str!("../../schemas/testdata/event_v1_human_review.json").to_string();
        let mut event = custody_schemas::decode_event(text.as_bytes()).unwrap();
        for (i, agent) in ["plain", "quo\"te", "back\\slash", "ctl\u{1}", "é✓"]
            .iter()
            .enumerate()
        {
            event.agent_id = agent.to_string();
            assert_eq!(
                event_leaf(&event, i as u64 * 1000),
                leaf_hash(&canonical_event(&event, i as u64 * 1000))
            );
        }
    }

    #[test]
    fn wire_timestamps_in_canonical_form_hash_as_formatted() {
        let text = include_str!("../../schemas/testdata/event_v1_human_review.json").to_string();
        let mut event = custody_schemas::decode_event(text.as_bytes()).unwrap();
        for wire in [
            "2026-03-08T14:47:00.123456Z",
            "2024-02-29T23:59:59.999999Z",
            "2026-12-31T23:59:60.000000Z",
            "2026-03-08T14:47:00.5Z",
            "2026-03-08T16:47:00.123456+02:00",
            "2026-03-08t14:47:00.123456z",
        ] {
            event.timestamp = wire.to_string();
            event.timestamp_us = custody_schemas::time::parse_rfc3339(wire).unwrap();
            assert_eq!(
                event_leaf(&event, 3),
                leaf_hash(&canonical_event(&event, 3)),
                "{wire}"
            );
        }
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
