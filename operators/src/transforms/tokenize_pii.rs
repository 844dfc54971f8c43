//! Replace personal data and secrets in free-text payload fields with tenant-keyed tokens.
//!
//! Not an operator of its own: [`decode`](super::decode) calls [`tokenize`] on each event it
//! accepts, while the payload is still the tree parsed from the input, so the payload is
//! written out once, already tokenized, as the canonical JSON the chain covers and storage
//! keeps.
//!
//! Every string inside the fields the tenant's policy names (by default the event type's text
//! fields, [`custody_schemas::EventType::text_fields`]) is tokenized by the built-in
//! recognizers and the tenant's custom rules. With the vault on, the values behind the tokens
//! and (content vaulting) the text fields' content go to the vault, the content replaced by a
//! commitment. Tokenization cannot fail.

use std::borrow::Cow;
#[cfg(test)]
use std::sync::Arc;

use custody_schemas::json::Json;
use custody_schemas::{AuditEvent, Decoded};

use crate::pii::{KINDS, Tokenizer};
use crate::record::VaultItem;

/// Tokenizes the text fields of one decoded event and finishes it (canonical payload, facts);
/// returns the event and what the vault must seal. `counts` gains the tokens made per kind.
pub fn tokenize(
    tokenizer: &mut Tokenizer,
    decoded: Decoded<'_>,
    counts: &mut [u64; KINDS],
) -> (AuditEvent, Vec<VaultItem>) {
    let Decoded {
        mut event,
        mut payload,
    } = decoded;
    // Ids naming people (`jane@example.com` as a user or reviewer id) are tokenized like text,
    // so a person's events still group under one (tenant-keyed) id.
    if let Some(user) = &event.user_id
        && let Some(new) = tokenizer.tokenize_str(event.tenant_id.as_str(), user, counts)
    {
        event.user_id = Some(new);
    }
    let tenant = event.tenant_id.as_str();
    let policy = tokenizer.policy_handle();
    let mut scan = |tokenizer: &mut Tokenizer, value: &mut Json<'_>| {
        value.for_each_str_mut(&mut |s: &mut Cow<'_, str>| {
            if let Some(new) = tokenizer.tokenize_str(tenant, s, counts) {
                *s = Cow::Owned(new);
            }
        });
    };
    match policy.fields(tenant, event.event_type) {
        // Every field of the payload.
        Some(fields) if fields.iter().any(|f| f == "*") => {
            if let Json::Obj(members) = &mut payload {
                for (_, value) in members {
                    scan(tokenizer, value);
                }
            }
        }
        Some(fields) => {
            for field in fields {
                if let Some(value) = payload.get_mut(field) {
                    scan(tokenizer, value);
                }
            }
        }
        None => {
            for field in event.event_type.text_fields() {
                if let Some(value) = payload.get_mut(field) {
                    scan(tokenizer, value);
                }
            }
        }
    }
    let scanned = |field: &str| match policy.fields(tenant, event.event_type) {
        Some(fields) => fields.iter().any(|f| f == "*" || f == field),
        None => event.event_type.text_fields().contains(&field),
    };
    for field in event.event_type.person_fields() {
        if !scanned(field)
            && let Some(value) = payload.get_mut(field)
        {
            scan(tokenizer, value);
        }
    }
    let mut vault = Vec::new();
    if tokenizer.vault_mode().tokens {
        vault.extend(
            tokenizer
                .take_revealed()
                .into_iter()
                .map(|(token, value)| VaultItem::Token { token, value }),
        );
    }
    if tokenizer.vault_mode().content {
        commit_content(tokenizer, &event, &mut payload, &mut vault);
    }
    (Decoded { event, payload }.finish(), vault)
}

/// Moves the (tokenized) content of the event type's text fields to the vault, leaving in
/// the payload a commitment `<CONTENT:tok_…>`: a tenant-keyed MAC of the content, which the
/// chain covers and which reveals nothing once the content is erased.
fn commit_content(
    tokenizer: &mut Tokenizer,
    event: &AuditEvent,
    payload: &mut Json<'_>,
    vault: &mut Vec<VaultItem>,
) {
    let tenant = event.tenant_id.as_str();
    for field in event.event_type.content_fields() {
        let Some(value) = payload.get_mut(field) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let json = value.to_canonical();
        let commitment = tokenizer.labeled_token(tenant, "CONTENT", &json);
        *value = Json::Str(Cow::Owned(commitment.clone()));
        vault.push(VaultItem::Content {
            field: (*field).to_string(),
            json,
            commitment,
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::pii::{PiiPolicy, VaultMode};

    /// The reference: the payload as a `serde_json::Value`, every string of the chosen fields
    /// tokenized, written by `serde_json` (sorted maps).
    fn reference(tokenizer: &mut Tokenizer, text: &str) -> String {
        let event = custody_schemas::decode_event(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut v: Value = serde_json::from_str(text).unwrap();
        let payload = v.get_mut("payload").unwrap();
        let tenant = event.tenant_id.as_str();
        fn walk(t: &mut Tokenizer, tenant: &str, v: &mut Value) {
            match v {
                Value::String(s) => {
                    if let Some(new) = t.tokenize_str(tenant, s, &mut [0; KINDS]) {
                        *s = new;
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(|i| walk(t, tenant, i)),
                Value::Object(m) => m.values_mut().for_each(|i| walk(t, tenant, i)),
                _ => {}
            }
        }
        let policy = tokenizer.policy_handle();
        let fields: Vec<String> = match policy.fields(tenant, event.event_type) {
            Some(f) if f.iter().any(|f| f == "*") => {
                payload.as_object().unwrap().keys().cloned().collect()
            }
            Some(f) => f.to_vec(),
            None => event
                .event_type
                .text_fields()
                .iter()
                .map(|f| f.to_string())
                .collect(),
        };
        for f in &fields {
            if let Some(value) = payload.get_mut(f) {
                walk(tokenizer, tenant, value);
            }
        }
        for f in event.event_type.person_fields() {
            if !fields.iter().any(|g| g == f)
                && let Some(value) = payload.get_mut(*f)
            {
                walk(tokenizer, tenant, value);
            }
        }
        if tokenizer.vault_mode().content {
            for f in event.event_type.content_fields() {
                if let Some(value) = payload.get_mut(*f).filter(|v| !v.is_null()) {
                    let json = serde_json::to_string(value).unwrap();
                    *value = Value::String(tokenizer.labeled_token(tenant, "CONTENT", &json));
                }
            }
        }
        serde_json::to_string(payload).unwrap()
    }

    fn event(tenant: &str, payload: &str, ty: &str) -> String {
        format!(
            r#"{{"event_id":"e1","schema_version":"1.0","tenant_id":"{tenant}","session_id":"s","agent_id":"a","event_type":"{ty}","timestamp":"2026-03-08T14:47:00Z","parent_event_id":null,"payload":{payload}}}"#
        )
    }

    /// Over texts with every kind of personal data (escaped and not, non-ASCII), the payload
    /// tokenized on the tree equals the reference, with the default fields, a tenant's own
    /// fields, every field, and content vaulting.
    #[test]
    fn tree_tokenization_equals_the_value_reference() {
        let samples = crate::pii_corpus::corpus(300, 200, 0x70C3);
        let policy = Arc::new(
            PiiPolicy::new(
                Vec::new(),
                [
                    ("t-star".to_string(), vec!["TOOL_CALLED.*".to_string()]),
                    (
                        "t-own".to_string(),
                        vec![
                            "MODEL_DECISION.model_id".to_string(),
                            "MODEL_DECISION.prompt".to_string(),
                        ],
                    ),
                ],
            )
            .unwrap(),
        );
        for content in [false, true] {
            let vault = VaultMode {
                tokens: content,
                content,
            };
            let mut ours = Tokenizer::new(b"k")
                .with_policy(Arc::clone(&policy))
                .with_vault(vault);
            let mut theirs = ours.clone();
            for (i, s) in samples.iter().enumerate() {
                let text = serde_json::to_string(&s.text).unwrap();
                // Escaped as \uXXXX too, which the tree decodes.
                let escaped = text.replace('@', "\\u0040").replace('é', "\\u00e9");
                let tenant = ["t-default", "t-star", "t-own"][i % 3];
                for (payload, ty) in [
                    (
                        format!(
                            r#"{{"model_id":{text},"model_version":"v1","prompt":{escaped},"output":{escaped},"reasoning":null,"prompt_tokens":1,"completion_tokens":2,"latency_ms":3,"confidence":0.5}}"#
                        ),
                        "MODEL_DECISION",
                    ),
                    (
                        format!(
                            r#"{{"tool_name":"pay","input":{{"to":{text},"amount":12.5,"list":[{escaped},1,{{"z":{text}}}]}},"elevated":true}}"#
                        ),
                        "TOOL_CALLED",
                    ),
                ] {
                    let raw = event(tenant, &payload, ty);
                    let want = reference(&mut theirs, &raw);
                    let decoded = custody_schemas::decode(raw.as_bytes()).unwrap();
                    let (got, _) = tokenize(&mut ours, decoded, &mut [0; KINDS]);
                    assert_eq!(got.payload, want, "{raw}");
                }
            }
        }
    }

    /// Ids naming people are tokenized where they hold personal data: the envelope's
    /// `user_id` and a review's `reviewer_id` (not content-vaulted: views group by them).
    #[test]
    fn user_and_reviewer_ids_holding_personal_data_are_tokenized() {
        let mut tokenizer = Tokenizer::new(b"k").with_vault(VaultMode {
            tokens: true,
            content: true,
        });
        let raw = r#"{"event_id":"e1","schema_version":"1.0","tenant_id":"acme","session_id":"s","agent_id":"a","user_id":"jane.doe@example.com","event_type":"HUMAN_REVIEW_DECISION","timestamp":"2026-03-08T14:47:00Z","parent_event_id":null,"payload":{"escalation_event_id":"e0","decided_at":"2026-03-08T14:48:00Z","decision":"approve","reviewer_id":"reviewer ops.lead@example.com","reviewer_role":"ops","rationale":"ok","modification":null}}"#;
        let decoded = custody_schemas::decode(raw.as_bytes()).unwrap();
        let mut counts = [0; KINDS];
        let (event, vault) = tokenize(&mut tokenizer, decoded, &mut counts);
        let email = tokenizer.token("acme", crate::pii::PiiKind::Email, "jane.doe@example.com");
        assert_eq!(event.user_id.as_deref(), Some(email.as_str()));
        let reviewer = tokenizer.token("acme", crate::pii::PiiKind::Email, "ops.lead@example.com");
        assert!(
            event
                .payload
                .contains(&format!("\"reviewer_id\":\"reviewer {reviewer}\"")),
            "{}",
            event.payload
        );
        assert!(!event.payload.contains("example.com"));
        assert_eq!(counts[crate::pii::PiiKind::Email as usize], 2);
        assert!(vault.iter().any(
            |v| matches!(v, VaultItem::Token { value, .. } if value == "jane.doe@example.com")
        ));
        // A plain id is left as it is.
        let raw = raw.replace("jane.doe@example.com", "user-00042");
        let decoded = custody_schemas::decode(raw.as_bytes()).unwrap();
        let (event, _) = tokenize(&mut tokenizer, decoded, &mut [0; KINDS]);
        assert_eq!(event.user_id.as_deref(), Some("user-00042"));
    }
}
