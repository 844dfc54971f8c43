//! Replace personal data and secrets in free-text payload fields with tenant-keyed tokens.
//!
//! # Inputs
//! [`SourcedEvent`]s, pipelined (no exchange): tokenization runs where decoding ran.
//!
//! # Outputs
//! The same events with every string inside the fields the tenant's policy names (by default
//! the event type's text fields, [`custody_schemas::EventType::text_fields`]) tokenized by the
//! built-in recognizers and the tenant's custom rules, and the final payload serialized
//! once as canonical JSON (`payload_json`). There is no error output: tokenization cannot
//! fail.
//!
//! # State
//! Per-tenant HMAC keys, derived on first use and cached (one entry per tenant seen).
//!
//! # Progress
//! Holds no capabilities.
//!
//! # Metrics
//! `custody_operator_events_{received,sent}_total{operator="tokenize_pii"}`,
//! `custody_pii_tokens_total{kind}`.
//!
//! # Failure modes
//! None.

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use crate::hashing::canonical_json;
use crate::metrics::Metrics;
use crate::pii::{KINDS, PiiKind, Tokenizer};
use crate::record::{Epoch, SourcedEvent, VaultItem};

/// Tokenizes PII; see the module docs.
pub trait TokenizePii<'scope> {
    /// Replaces PII in the text fields of each event.
    fn tokenize_pii(
        self,
        tokenizer: Tokenizer,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, SourcedEvent>;
}

impl<'scope> TokenizePii<'scope> for StreamVec<'scope, Epoch, SourcedEvent> {
    fn tokenize_pii(
        self,
        mut tokenizer: Tokenizer,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, SourcedEvent> {
        let op = metrics.operator("tokenize_pii");
        let per_kind: Vec<_> = PiiKind::ALL
            .iter()
            .chain([&PiiKind::Custom])
            .map(|k| metrics.pii_tokens.with_label_values(&[k.label()]))
            .collect();
        self.map(move |mut sourced: SourcedEvent| {
            op.received.inc();
            let mut counts = [0u64; KINDS];
            tokenize_event(&mut tokenizer, &mut sourced, &mut counts);
            for (counter, n) in per_kind.iter().zip(counts) {
                if n > 0 {
                    counter.inc_by(n);
                }
            }
            op.sent.inc();
            sourced
        })
    }
}

/// Tokenizes the text fields of one event in place.
pub fn tokenize_event(
    tokenizer: &mut Tokenizer,
    sourced: &mut SourcedEvent,
    counts: &mut [u64; KINDS],
) {
    let event = &mut sourced.event;
    let tenant = event.tenant_id.as_str().to_string();
    let chosen = tokenizer
        .policy()
        .fields(&tenant, event.event_type)
        .map(<[String]>::to_vec);
    if let Some(payload) = event.payload.as_object_mut() {
        match chosen {
            // Every field of the payload.
            Some(fields) if fields.iter().any(|f| f == "*") => {
                for (_, value) in payload.iter_mut() {
                    tokenizer.tokenize_value(&tenant, value, counts);
                }
            }
            Some(fields) => {
                for field in &fields {
                    if let Some(value) = payload.get_mut(field) {
                        tokenizer.tokenize_value(&tenant, value, counts);
                    }
                }
            }
            None => {
                for field in event.event_type.text_fields() {
                    if let Some(value) = payload.get_mut(*field) {
                        tokenizer.tokenize_value(&tenant, value, counts);
                    }
                }
            }
        }
    }
    if tokenizer.vault_mode().tokens {
        sourced.vault.extend(
            tokenizer
                .take_revealed()
                .into_iter()
                .map(|(token, value)| VaultItem::Token { token, value }),
        );
    }
    if tokenizer.vault_mode().content {
        commit_content(tokenizer, sourced, &tenant);
    }
    // The payload is final: serialize it once, for the chain and for storage.
    sourced.payload_json = Some(canonical_json(&sourced.event.payload));
}

/// Moves the (tokenized) content of the event type's text fields to the vault, leaving in
/// the payload a commitment `<CONTENT:tok_…>`: a tenant-keyed MAC of the content, which the
/// chain covers and which reveals nothing once the content is erased.
fn commit_content(tokenizer: &mut Tokenizer, sourced: &mut SourcedEvent, tenant: &str) {
    let event = &mut sourced.event;
    let fields = event.event_type.content_fields();
    let Some(payload) = event.payload.as_object_mut() else {
        return;
    };
    for field in fields {
        let Some(value) = payload.get_mut(*field) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let json = canonical_json(value);
        let commitment = tokenizer.labeled_token(tenant, "CONTENT", &json);
        *value = serde_json::Value::String(commitment);
        sourced.vault.push(VaultItem::Content {
            field: (*field).to_string(),
            json,
        });
    }
}
