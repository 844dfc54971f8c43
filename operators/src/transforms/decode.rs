//! Decode raw bytes into validated, tokenized audit events.
//!
//! # Inputs
//! A stream of [`RawRecord`] at [`Epoch`] timestamps, exchanged round-robin by offset so that
//! parsing runs on every worker.
//!
//! # Outputs
//! - oks: [`SourcedEvent`]s that match schema v1, their payload tokenized
//!   ([`super::tokenize_pii`]) and written once as canonical JSON: each input is parsed once,
//!   into a tree borrowing its strings, and validated against the typed payload structs
//!   without copying them;
//! - errs: [`Quarantined`] records with the precise reason, a SHA-256 of the raw bytes and a
//!   truncated, PII-tokenized copy of the input.
//!
//! # State
//! None (PII tokenizers with cached per-tenant keys: one entry per tenant seen).
//!
//! # Progress
//! Holds no capabilities.
//!
//! # Metrics
//! `custody_operator_events_{received,sent}_total{operator="decode"}`,
//! `custody_operator_errors_total{operator="decode"}`, `custody_events_quarantined_total{reason}`,
//! `custody_pii_tokens_total{kind}`.
//!
//! # Failure modes
//! None: every input ends on exactly one of the two outputs.

use custody_schemas::{Decoded, EventType, SchemaError, decode};
use sha2::{Digest, Sha256};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::{Exchange, OkErr};

use crate::identity::ProducerRegistry;
use crate::metrics::Metrics;
use crate::pii::{KINDS, PiiKind, QUARANTINE_SCOPE, Tokenizer};
use crate::record::{Epoch, Quarantined, RawRecord, SourcedEvent};
use crate::transforms::tokenize_pii::tokenize;

/// Limits applied while decoding.
#[derive(Clone, Debug)]
pub struct DecodeConfig {
    /// Inputs longer than this are quarantined unparsed.
    pub max_event_bytes: usize,
    /// How much of a rejected input is kept (redacted) in quarantine.
    pub quarantine_keep_bytes: usize,
    /// If set, every record must be signed by a registered producer bound to the payload's
    /// tenant ([`crate::identity`]).
    pub producers: Option<ProducerRegistry>,
    /// The key authenticating access-log records
    /// ([`crate::sources::access_log::access_mac_key`]); without it none is accepted.
    pub access_log_key: Option<[u8; 32]>,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_event_bytes: 1 << 20,
            quarantine_keep_bytes: 16 << 10,
            producers: None,
            access_log_key: None,
        }
    }
}

/// Decodes raw records; see the module docs.
pub trait Decode<'scope> {
    /// Splits raw records into valid events and quarantined records.
    fn decode(
        self,
        config: DecodeConfig,
        tokenizer: Tokenizer,
        metrics: &Metrics,
    ) -> (
        StreamVec<'scope, Epoch, SourcedEvent>,
        StreamVec<'scope, Epoch, Quarantined>,
    );
}

impl<'scope> Decode<'scope> for StreamVec<'scope, Epoch, RawRecord> {
    // Both outputs carry records by value into their own streams; boxing the error side would
    // only add an allocation per quarantined record.
    #[allow(clippy::result_large_err)]
    fn decode(
        self,
        config: DecodeConfig,
        tokenizer: Tokenizer,
        metrics: &Metrics,
    ) -> (
        StreamVec<'scope, Epoch, SourcedEvent>,
        StreamVec<'scope, Epoch, Quarantined>,
    ) {
        // Quarantined input is tokenized but never vaulted.
        let mut redactor = tokenizer
            .clone()
            .with_vault(crate::pii::VaultMode::default());
        let mut tokenizer = tokenizer;
        let op = metrics.operator("decode");
        let quarantined = metrics.events_quarantined.clone();
        let spoofs = metrics.tenant_spoofs.clone();
        let per_kind: Vec<_> = PiiKind::ALL
            .iter()
            .chain([&PiiKind::Custom])
            .map(|k| metrics.pii_tokens.with_label_values(&[k.label()]))
            .collect();
        self.exchange(|raw: &RawRecord| raw.offset as u64 ^ ((raw.partition as u64) << 48))
            .ok_err(move |raw: RawRecord| {
                op.received.inc();
                let mut counts = [0u64; KINDS];
                let decoded = decode_with(&raw, &config, |decoded| {
                    tokenize(&mut tokenizer, decoded, &mut counts)
                });
                match decoded {
                    Ok((event, vault)) => {
                        op.sent.inc();
                        for (counter, n) in per_kind.iter().zip(counts) {
                            if n > 0 {
                                counter.inc_by(n);
                            }
                        }
                        Ok(SourcedEvent {
                            partition: raw.partition,
                            offset: raw.offset,
                            event,
                            raw_sha256: Sha256::digest(&raw.bytes).into(),
                            vault,
                        })
                    }
                    Err((kind, reason)) => {
                        op.errors.inc();
                        quarantined.with_label_values(&[kind]).inc();
                        if kind == "tenant_mismatch" {
                            spoofs.inc();
                            tracing::debug!(%reason, "spoofed tenant quarantined");
                        }
                        Err(quarantine(raw, kind, reason, &config, &mut redactor))
                    }
                }
            })
    }
}

/// Decodes and authenticates one raw record: the event (untokenized), or the quarantine
/// reason's kind and text. Never panics, whatever the bytes (fuzzed by `custody fuzz`).
pub fn decode_one(
    raw: &RawRecord,
    config: &DecodeConfig,
) -> Result<custody_schemas::AuditEvent, (&'static str, String)> {
    decode_with(raw, config, |decoded| decoded.finish())
}

/// Decodes and authenticates one raw record, then hands the accepted event, its payload still
/// a tree borrowing from the input, to `finish`.
pub fn decode_with<T>(
    raw: &RawRecord,
    config: &DecodeConfig,
    finish: impl FnOnce(Decoded<'_>) -> T,
) -> Result<T, (&'static str, String)> {
    if let Some((from, why)) = &raw.skipped {
        return Err((
            "operator_skip",
            format!(
                "gap: an operator skipped offsets {from}..={} of partition {}: {why}",
                raw.offset, raw.partition
            ),
        ));
    }
    if raw.len > config.max_event_bytes as u64 || raw.bytes.len() > config.max_event_bytes {
        return Err((
            "too_large",
            format!(
                "event of {} bytes exceeds the {} byte limit",
                raw.len, config.max_event_bytes
            ),
        ));
    }
    if raw.partition < 0 {
        // Custody's own sources: only their own event types, no producer signature; an
        // access-log record only with the server's MAC.
        let opened;
        let bytes = if raw.partition == crate::record::ACCESS_LOG_PARTITION {
            let key = config.access_log_key.as_ref().ok_or_else(|| {
                (
                    "unauthenticated",
                    "no access-log key: access records cannot be authenticated".to_string(),
                )
            })?;
            opened = crate::sources::access_log::AccessLine::open(&raw.bytes, key)
                .map_err(|why| ("unauthenticated", format!("access record refused: {why}")))?;
            &opened[..]
        } else {
            &raw.bytes[..]
        };
        let decoded = decode(bytes).map_err(|e| schema_error(bytes, e))?;
        let event = &decoded.event;
        let allowed = match raw.partition {
            // The API writes access records and the legal holds an administrator places.
            crate::record::ACCESS_LOG_PARTITION => matches!(
                event.event_type,
                EventType::AuditLogAccessed
                    | EventType::LegalHoldPlaced
                    | EventType::LegalHoldReleased
            ),
            crate::record::ADMIN_PARTITION => matches!(
                event.event_type,
                EventType::DataErased
                    | EventType::DataReidentified
                    | EventType::RetentionApplied
                    | EventType::LegalHoldPlaced
                    | EventType::LegalHoldReleased
            ),
            _ => false,
        };
        if !allowed {
            return Err((
                "unauthenticated",
                format!(
                    "{} is not accepted from Custody's source {}",
                    event.event_type, raw.partition
                ),
            ));
        }
        return Ok(finish(decoded));
    }
    let bound = match &config.producers {
        Some(registry) => Some(
            registry
                .authenticate(raw.producer.as_ref(), &raw.bytes)
                .map_err(|e| (e.kind(), e.to_string()))?,
        ),
        None => None,
    };
    let reserved = |t: EventType| {
        (
            "reserved_event_type",
            format!("{t} is written by Custody itself, never accepted from a producer"),
        )
    };
    let decoded = decode(&raw.bytes).map_err(|e| match e {
        SchemaError::Payload { event_type, .. } if event_type.is_custody_action() => {
            reserved(event_type)
        }
        e => unmappable(&raw.bytes).unwrap_or_else(|| schema_error(&raw.bytes, e)),
    })?;
    let event = &decoded.event;
    if event.event_type.is_custody_action() {
        return Err(reserved(event.event_type));
    }
    if let (Some(registry), Some(bound), Some(claim)) =
        (&config.producers, bound, raw.producer.as_ref())
    {
        registry
            .check_tenant(claim, bound, event.tenant_id.as_str())
            .map_err(|e| (e.kind(), e.to_string()))?;
    }
    Ok(finish(decoded))
}

/// The top-level member with which a gateway (`custody otlp`) hands over what it could not map
/// to a schema v1 event, and why: such a record is quarantined as `unmappable`, with that
/// reason, under the producer's (authenticated) tenant.
pub const UNMAPPABLE_REASON: &str = "unmappable_reason";

/// The quarantine kind and reason of a record a gateway marked unmappable (read only once a
/// record failed to decode, so never on the hot path).
fn unmappable(bytes: &[u8]) -> Option<(&'static str, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let reason = custody_schemas::json::top_level_strings(text, UNMAPPABLE_REASON)
        .into_iter()
        .next()?;
    Some(("unmappable", reason))
}

/// The quarantine kind and reason of a schema error; a duplicated member names every tenant the
/// record claims.
fn schema_error(bytes: &[u8], e: SchemaError) -> (&'static str, String) {
    let mut reason = e.to_string();
    if matches!(e, SchemaError::DuplicateMember(_)) {
        let claims = claimed_tenants(bytes);
        if claims.len() > 1 {
            reason.push_str(&format!("; the record claims tenants {claims:?}"));
        }
    }
    (e.kind(), reason)
}

/// Builds the quarantine record for a rejected input.
pub fn quarantine(
    raw: RawRecord,
    kind: &str,
    reason: String,
    config: &DecodeConfig,
    tokenizer: &mut Tokenizer,
) -> Quarantined {
    let raw_sha256 = hex::encode(Sha256::digest(&raw.bytes));
    let keep = &raw.bytes[..raw.bytes.len().min(config.quarantine_keep_bytes)];
    let text = String::from_utf8_lossy(keep);
    let mut counts = [0; crate::pii::KINDS];
    let raw_redacted = tokenizer
        .tokenize_str(QUARANTINE_SCOPE, &text, &mut counts)
        .unwrap_or_else(|| text.into_owned());
    // With producer identity on, a row belongs to the authenticated tenant, never the claimed.
    let tenant_id = match &config.producers {
        Some(registry) => registry
            .authenticate(raw.producer.as_ref(), &raw.bytes)
            .ok()
            .map(str::to_string),
        None => claimed_tenant(&raw.bytes),
    };
    Quarantined {
        partition: raw.partition,
        offset: raw.offset,
        reason_kind: kind.to_string(),
        reason,
        tenant_id,
        raw_len: raw.len as i64,
        raw_sha256,
        raw_redacted,
        raw: raw.bytes,
    }
}

/// Every `tenant_id` an input claims (more than one if the member is duplicated), as long as it
/// is JSON text.
fn claimed_tenants(bytes: &[u8]) -> Vec<String> {
    if bytes.len() > 1 << 20 {
        return Vec::new();
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    let mut claims = custody_schemas::json::top_level_strings(text, "tenant_id");
    claims.retain(|t| !t.is_empty() && t.len() <= custody_schemas::event::MAX_ID_LEN);
    claims
}

/// The `tenant_id` an input claims first, if it is a JSON object with a string `tenant_id`.
fn claimed_tenant(bytes: &[u8]) -> Option<String> {
    claimed_tenants(bytes).into_iter().next()
}

#[cfg(test)]
mod tests {
    use timely::dataflow::operators::{Capture, ToStream};

    use super::*;
    use crate::test_util::captured;

    #[test]
    fn every_record_lands_on_exactly_one_output() {
        let good =
            include_bytes!("../../../schemas/testdata/event_v1_model_decision.json").to_vec();
        let good: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let good = serde_json::to_vec(&good).unwrap();
        let inputs: Vec<RawRecord> = [
            good.clone(),
            b"{bad".to_vec(),
            vec![0xff, 0xfe],
            vec![b' '; 2 << 20],
            b"{\"tenant_id\":\"acme\",\"note\":\"mail jane@example.com\"}".to_vec(),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| RawRecord::new(0, i as i64, bytes))
        .collect();
        let metrics = Metrics::new();
        let (oks, errs) = timely::example(move |scope| {
            let (oks, errs) = inputs.to_stream(scope).decode(
                DecodeConfig::default(),
                Tokenizer::new(b"k"),
                &metrics,
            );
            (oks.capture(), errs.capture())
        });
        let oks: Vec<SourcedEvent> = captured(oks);
        let mut errs: Vec<Quarantined> = captured(errs);
        errs.sort_by_key(|q| q.offset);
        assert_eq!(oks.len(), 1);
        assert_eq!(oks[0].event.tenant_id.as_str(), "acme");
        let kinds: Vec<&str> = errs.iter().map(|q| q.reason_kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "invalid_json",
                "invalid_utf8",
                "too_large",
                "invalid_envelope"
            ]
        );
        assert_eq!(errs[3].tenant_id.as_deref(), Some("acme"));
        assert!(!errs[3].raw_redacted.contains("jane@example.com"));
        assert!(errs[3].raw_redacted.contains("<EMAIL:tok_"));
        assert_eq!(errs[2].raw_redacted.len(), 16 << 10);
    }
}

#[cfg(test)]
mod strictness {
    use super::*;

    fn event(extra: &str, event_type: &str, payload: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"e1","schema_version":"1.0","tenant_id":"acme","session_id":"s",
            "agent_id":"a","user_id":null,"event_type":"{event_type}",
            "timestamp":"2026-01-01T00:00:00Z","parent_event_id":null,"payload":{payload}{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn duplicate_members_are_quarantined_with_every_claimed_tenant() {
        let config = DecodeConfig::default();
        let payload = r#"{"data_store":"crm","operation":"read","record_ids":[],"purpose":"p"}"#;
        let ok = event("", "DATA_ACCESSED", payload);
        assert!(decode_one(&RawRecord::new(0, 0, ok), &config).is_ok());
        let dup = event(r#","tenant_id":"globex""#, "DATA_ACCESSED", payload);
        let (kind, reason) = decode_one(&RawRecord::new(0, 1, dup.clone()), &config).unwrap_err();
        assert_eq!(kind, "duplicate_member");
        assert!(
            reason.contains("\"acme\"") && reason.contains("\"globex\""),
            "{reason}"
        );
        let q = quarantine(
            RawRecord::new(0, 1, dup),
            kind,
            reason,
            &config,
            &mut Tokenizer::new(b"k"),
        );
        assert_eq!(q.tenant_id.as_deref(), Some("acme"));
        // Inside the payload too.
        let nested = event(
            "",
            "DATA_ACCESSED",
            &payload.replace("}", r#","purpose":"q"}"#),
        );
        let (kind, _) = decode_one(&RawRecord::new(0, 2, nested), &config).unwrap_err();
        assert_eq!(kind, "duplicate_member");
    }

    #[test]
    fn custody_event_types_come_only_from_custody_sources() {
        let key = [5; 32];
        let config = DecodeConfig {
            access_log_key: Some(key),
            ..DecodeConfig::default()
        };
        let cases = [
            (
                EventType::DataErased,
                r#"{"scope":"tenant","keys_destroyed":1,"requested_by":"x","reason":"r"}"#,
            ),
            (
                EventType::DataReidentified,
                r#"{"token":"t","requested_by":"x","reason":"r"}"#,
            ),
            (
                EventType::AuditLogAccessed,
                r#"{"principal":"p","role":"admin","method":"GET","path":"/","status":200}"#,
            ),
        ];
        for (t, payload) in cases {
            let bytes = event("", t.as_str(), payload);
            let producer = decode_one(&RawRecord::new(3, 0, bytes.clone()), &config);
            assert_eq!(
                producer.unwrap_err().0,
                "reserved_event_type",
                "{t} from a producer"
            );
            let own = if t == EventType::AuditLogAccessed {
                crate::record::ACCESS_LOG_PARTITION
            } else {
                crate::record::ADMIN_PARTITION
            };
            let other = if own == crate::record::ADMIN_PARTITION {
                crate::record::ACCESS_LOG_PARTITION
            } else {
                crate::record::ADMIN_PARTITION
            };
            let framed = if own == crate::record::ACCESS_LOG_PARTITION {
                let line = crate::sources::access_log::AccessLine::new(
                    &key,
                    String::from_utf8(bytes.clone()).unwrap(),
                );
                serde_json::to_vec(&line).unwrap()
            } else {
                bytes.clone()
            };
            let ours = decode_one(&RawRecord::new(own, 0, framed.clone()), &config);
            assert!(ours.is_ok(), "{t}: {ours:?}");
            if own == crate::record::ACCESS_LOG_PARTITION {
                // Another key's MAC, or none: refused.
                let other_key = DecodeConfig {
                    access_log_key: Some([6; 32]),
                    ..DecodeConfig::default()
                };
                let forged = decode_one(&RawRecord::new(own, 0, framed), &other_key);
                assert_eq!(forged.unwrap_err().0, "unauthenticated");
                let bare = decode_one(&RawRecord::new(own, 0, bytes.clone()), &config);
                assert_eq!(bare.unwrap_err().0, "unauthenticated");
            }
            // An invalid payload of a reserved type from a producer is still refused as such.
            let bad = event("", t.as_str(), "{}");
            let producer = decode_one(&RawRecord::new(0, 0, bad), &config);
            assert_eq!(producer.unwrap_err().0, "reserved_event_type");
            let wrong = decode_one(&RawRecord::new(other, 0, bytes), &config);
            assert_eq!(wrong.unwrap_err().0, "unauthenticated", "{t} from {other}");
        }
    }
}
