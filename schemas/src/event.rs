//! Audit event schema v1: the envelope, the taxonomy and the per-type payloads.
//!
//! Decoding is strict: an event is accepted only if its envelope and its payload match the schema
//! of its declared `schema_version` and `event_type`; anything else is a [`SchemaError`] whose
//! `Display` names the offending field, so quarantine rows say precisely why.

use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::{Json, Text};
use crate::time::{Micros, parse_rfc3339};
use crate::{SchemaError, TenantId};

/// The schema major version this build accepts. Minor versions are additive and accepted.
pub const SCHEMA_MAJOR: u32 = 1;
/// The exact version the generator stamps on events it produces.
pub const SCHEMA_VERSION: &str = "1.0";
/// The JSON Schema (draft 2020-12) for v1 events, as published in `schemas/event-v1.schema.json`.
pub const JSON_SCHEMA_V1: &str = include_str!("../event-v1.schema.json");

/// Maximum length of identifier fields (tenant, session, agent, event ids).
pub const MAX_ID_LEN: usize = 128;

/// The audit event taxonomy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// An agent received a goal or instruction.
    TaskInitiated,
    /// The model produced an output that drives agent behaviour.
    ModelDecision,
    /// The agent evaluated options and chose a path.
    DecisionPoint,
    /// The agent invoked a tool, API or sub-agent.
    ToolCalled,
    /// A tool responded.
    ToolResultReceived,
    /// The agent read from or wrote to a data store.
    DataAccessed,
    /// The agent asked a human to approve before proceeding.
    HumanEscalationTriggered,
    /// A human reviewer decided on an escalation.
    HumanReviewDecision,
    /// A policy engine allowed, denied or gated an action.
    PolicyDecision,
    /// The agent finished its goal.
    TaskCompleted,
    /// The agent hit an unrecoverable error.
    TaskFailed,
    /// Custody destroyed a tenant's (or one data subject's) keys: its vaulted content and
    /// token values are irrecoverable. Written by `custody erase`.
    DataErased,
    /// An authorized caller revealed the value behind a token. Written by `custody reveal`.
    DataReidentified,
    /// A caller read the tenant's audit data over the API. Written by Custody's HTTP server.
    AuditLogAccessed,
    /// Custody removed the tenant's events older than its retention policy (their leaf hashes
    /// stay, so the chain and every checkpoint still verify). Written by `custody retention`.
    RetentionApplied,
    /// A legal hold was placed on the tenant, one of its sessions or agents, or a time range:
    /// what it covers is neither expired nor erased. Written by `custody hold place` and the
    /// admin API.
    LegalHoldPlaced,
    /// A legal hold was released. Written by `custody hold release` and the admin API.
    LegalHoldReleased,
}

impl EventType {
    /// Every event type, in taxonomy order.
    pub const ALL: [EventType; 17] = [
        EventType::TaskInitiated,
        EventType::ModelDecision,
        EventType::DecisionPoint,
        EventType::ToolCalled,
        EventType::ToolResultReceived,
        EventType::DataAccessed,
        EventType::HumanEscalationTriggered,
        EventType::HumanReviewDecision,
        EventType::PolicyDecision,
        EventType::TaskCompleted,
        EventType::TaskFailed,
        EventType::DataErased,
        EventType::DataReidentified,
        EventType::AuditLogAccessed,
        EventType::RetentionApplied,
        EventType::LegalHoldPlaced,
        EventType::LegalHoldReleased,
    ];

    /// The wire name, e.g. `TOOL_CALLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskInitiated => "TASK_INITIATED",
            EventType::ModelDecision => "MODEL_DECISION",
            EventType::DecisionPoint => "DECISION_POINT",
            EventType::ToolCalled => "TOOL_CALLED",
            EventType::ToolResultReceived => "TOOL_RESULT_RECEIVED",
            EventType::DataAccessed => "DATA_ACCESSED",
            EventType::HumanEscalationTriggered => "HUMAN_ESCALATION_TRIGGERED",
            EventType::HumanReviewDecision => "HUMAN_REVIEW_DECISION",
            EventType::PolicyDecision => "POLICY_DECISION",
            EventType::TaskCompleted => "TASK_COMPLETED",
            EventType::TaskFailed => "TASK_FAILED",
            EventType::DataErased => "DATA_ERASED",
            EventType::DataReidentified => "DATA_REIDENTIFIED",
            EventType::AuditLogAccessed => "AUDIT_LOG_ACCESSED",
            EventType::RetentionApplied => "RETENTION_APPLIED",
            EventType::LegalHoldPlaced => "LEGAL_HOLD_PLACED",
            EventType::LegalHoldReleased => "LEGAL_HOLD_RELEASED",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The payload fields that may carry free text (and so personal data) for this type.
    pub fn text_fields(self) -> &'static [&'static str] {
        match self {
            EventType::TaskInitiated => &["goal", "input"],
            EventType::ModelDecision => &["prompt", "output", "reasoning"],
            EventType::DecisionPoint => &["reasoning_summary", "options", "selected_action"],
            EventType::ToolCalled => &["input"],
            EventType::ToolResultReceived => &["output", "error_message"],
            EventType::DataAccessed => &["purpose", "query"],
            EventType::HumanEscalationTriggered => &["reason", "proposed_action"],
            EventType::HumanReviewDecision => &["rationale", "modification"],
            EventType::PolicyDecision => &["reason"],
            EventType::TaskCompleted => &["output"],
            EventType::TaskFailed => &["reason", "last_state"],
            EventType::DataErased | EventType::DataReidentified => &["reason"],
            // Query strings and paths carry whatever a caller typed (e-mails, card numbers).
            EventType::AuditLogAccessed => &["path", "query", "sql"],
            EventType::RetentionApplied => &[],
            EventType::LegalHoldPlaced | EventType::LegalHoldReleased => &["reason"],
        }
    }

    /// Payload fields naming a person (a reviewer, a requester): tokenized where they hold
    /// personal data (an e-mail address as an id), never replaced by a content commitment
    /// (views group by them). The envelope's `user_id` is scanned likewise.
    pub fn person_fields(self) -> &'static [&'static str] {
        match self {
            EventType::HumanReviewDecision => &["reviewer_id"],
            EventType::DataErased
            | EventType::DataReidentified
            | EventType::RetentionApplied
            | EventType::LegalHoldPlaced
            | EventType::LegalHoldReleased => &["requested_by"],
            _ => &[],
        }
    }

    /// The text fields whose content is replaced by a commitment when content vaulting is on:
    /// [`EventType::text_fields`], except an access record's path and query (tokenized for
    /// personal data, but the record of what was accessed must stay readable).
    pub fn content_fields(self) -> &'static [&'static str] {
        match self {
            EventType::AuditLogAccessed => &[],
            t => t.text_fields(),
        }
    }

    /// Events Custody itself writes about a tenant (erasure, re-identification, API access,
    /// retention), as opposed to events of the tenant's agents.
    pub fn is_custody_action(self) -> bool {
        matches!(
            self,
            EventType::DataErased
                | EventType::DataReidentified
                | EventType::AuditLogAccessed
                | EventType::RetentionApplied
                | EventType::LegalHoldPlaced
                | EventType::LegalHoldReleased
        )
    }

    /// Evidence of the log's own lifecycle (erasures, re-identifications, retention): never
    /// expired by a retention policy, so that what was removed, and why, stays on record.
    pub fn is_lifecycle_record(self) -> bool {
        matches!(
            self,
            EventType::DataErased
                | EventType::DataReidentified
                | EventType::RetentionApplied
                | EventType::LegalHoldPlaced
                | EventType::LegalHoldReleased
        )
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated audit event, as it travels through the dataflow.
///
/// The payload is kept as canonical JSON text (validated against the typed payload of its
/// `event_type`, written once), so that the canonical encoding covers every field the producer
/// sent and storage writes it as is; what the views read of it is in `facts`, typed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Producer-assigned unique id.
    pub event_id: String,
    /// The schema version the producer declared (`1.x`).
    pub schema_version: String,
    /// The tenant this event belongs to.
    pub tenant_id: TenantId,
    /// The agent session.
    pub session_id: String,
    /// The agent that emitted the event.
    pub agent_id: String,
    /// The end user on whose behalf the agent acts, if known.
    pub user_id: Option<String>,
    /// The taxonomy entry.
    pub event_type: EventType,
    /// Event time as sent, RFC 3339.
    pub timestamp: String,
    /// Event time in UTC micros.
    pub timestamp_us: Micros,
    /// The event that caused this one (causal link), if any.
    pub parent_event_id: Option<String>,
    /// The type-specific payload, as canonical JSON ([`crate::json`]): after tokenization,
    /// the text the chain covers and storage keeps.
    #[serde(with = "raw_json")]
    pub payload: String,
    /// What the views read of the payload.
    #[serde(default)]
    pub facts: PayloadFacts,
    /// The emitter-side chain: SHA-256 (hex) of the exact bytes of the previous event the same
    /// agent emitted for this tenant, if the producer keeps one.
    #[serde(default)]
    pub previous_event_hash: Option<String>,
}

/// The payload (de)serialized as the JSON it is, not as a string holding it (off the hot
/// path: records are serialized only for tests and the dead-letter topic).
mod raw_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        serde_json::from_str::<Value>(text)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        // `Value`'s maps are sorted: its text is canonical.
        Ok(Value::deserialize(d)?.to_string())
    }
}

/// What the views read of a payload, typed: taken once from the final (tokenized) payload
/// when the event is decoded, and from the stored payload when the views are rebuilt from
/// the lake, so both read the same.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum PayloadFacts {
    /// The event type's payload holds nothing the views read.
    #[default]
    None,
    /// `MODEL_DECISION`.
    Model {
        /// `model_id`.
        model_id: String,
        /// `model_version`.
        model_version: String,
    },
    /// `TOOL_CALLED`.
    ToolCall {
        /// `tool_name`.
        tool_name: String,
        /// `elevated`.
        elevated: bool,
        /// The numbers among the members of `input` (policy rules compare amounts).
        amounts: Vec<(String, f64)>,
        /// The strings among the members of `input` (an approval binds them).
        args: Vec<(String, String)>,
    },
    /// `TOOL_RESULT_RECEIVED`.
    ToolResult {
        /// `status` is `error`.
        error: bool,
    },
    /// `HUMAN_ESCALATION_TRIGGERED`.
    Escalation {
        /// `presented_at` in UTC micros (none if it no longer reads as a time, e.g. tokenized).
        presented_us: Option<Micros>,
        /// `sla_seconds`.
        sla_seconds: Option<i64>,
        /// `risk_tier`.
        risk_tier: String,
        /// `proposed_action`, when it is a tool call (not free text).
        action: Option<ActionFacts>,
    },
    /// `HUMAN_REVIEW_DECISION`.
    Review {
        /// `escalation_event_id`.
        escalation_event_id: String,
        /// `decided_at` in UTC micros (none if it no longer reads as a time).
        decided_us: Option<Micros>,
        /// `decision`.
        decision: String,
        /// `reviewer_id`.
        reviewer_id: String,
        /// `modification`, when it is a tool call.
        modification: Option<ActionFacts>,
    },
    /// `RETENTION_APPLIED`.
    Retention {
        /// `expired_events`: the events it removed (their leaves stay in the log).
        expired_events: u64,
    },
}

/// A tool call put to a human (an escalation's `proposed_action`, a decision's
/// `modification`): what an approval binds.
#[derive(Clone, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct ActionFacts {
    /// The tool.
    pub tool_name: String,
    /// The numbers among the members of its input.
    pub amounts: Vec<(String, f64)>,
    /// The strings among the members of its input.
    pub args: Vec<(String, String)>,
}

impl ActionFacts {
    /// The action in `v` (`{"tool_name": …, "input": {…}}`), if it is one.
    pub fn of(v: Option<&Json<'_>>) -> Option<ActionFacts> {
        let v = v?;
        let tool_name = v.get("tool_name")?.as_str()?.to_string();
        let input = v.get("input");
        Some(ActionFacts {
            tool_name,
            amounts: numbers(input),
            args: strings(input),
        })
    }
}

/// The numeric members of an object.
fn numbers(v: Option<&Json<'_>>) -> Vec<(String, f64)> {
    match v {
        Some(Json::Obj(members)) => members
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.as_f64()?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The string members of an object.
fn strings(v: Option<&Json<'_>>) -> Vec<(String, String)> {
    match v {
        Some(Json::Obj(members)) => members
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.to_string())))
            .collect(),
        _ => Vec::new(),
    }
}

impl PayloadFacts {
    /// The facts of a payload of `event_type`.
    pub fn of(event_type: EventType, payload: &Json<'_>) -> PayloadFacts {
        let text = |name: &str| {
            payload
                .get(name)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let time = |name: &str| {
            payload
                .get(name)
                .and_then(Json::as_str)
                .and_then(|t| parse_rfc3339(t).ok())
        };
        match event_type {
            EventType::ModelDecision => PayloadFacts::Model {
                model_id: text("model_id"),
                model_version: text("model_version"),
            },
            EventType::ToolCalled => PayloadFacts::ToolCall {
                tool_name: text("tool_name"),
                elevated: payload
                    .get("elevated")
                    .and_then(Json::as_bool)
                    .unwrap_or(false),
                amounts: numbers(payload.get("input")),
                args: strings(payload.get("input")),
            },
            EventType::ToolResultReceived => PayloadFacts::ToolResult {
                error: payload.get("status").and_then(Json::as_str) == Some("error"),
            },
            EventType::HumanEscalationTriggered => PayloadFacts::Escalation {
                presented_us: time("presented_at"),
                sla_seconds: payload
                    .get("sla_seconds")
                    .and_then(Json::as_u64)
                    .and_then(|s| i64::try_from(s).ok()),
                risk_tier: text("risk_tier"),
                action: ActionFacts::of(payload.get("proposed_action")),
            },
            EventType::HumanReviewDecision => PayloadFacts::Review {
                escalation_event_id: text("escalation_event_id"),
                decided_us: time("decided_at"),
                decision: text("decision"),
                reviewer_id: text("reviewer_id"),
                modification: ActionFacts::of(payload.get("modification")),
            },
            EventType::RetentionApplied => PayloadFacts::Retention {
                expired_events: payload
                    .get("expired_events")
                    .and_then(Json::as_u64)
                    .unwrap_or(0),
            },
            _ => PayloadFacts::None,
        }
    }

    /// Whether payloads of `event_type` hold facts.
    pub fn has_facts(event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::ModelDecision
                | EventType::ToolCalled
                | EventType::ToolResultReceived
                | EventType::HumanEscalationTriggered
                | EventType::HumanReviewDecision
                | EventType::RetentionApplied
        )
    }

    /// The facts of a stored (canonical) payload of `event_type`; none if it is not JSON.
    pub fn of_text(event_type: EventType, payload: &str) -> PayloadFacts {
        if !PayloadFacts::has_facts(event_type) {
            return PayloadFacts::None;
        }
        match crate::json::parse(payload) {
            Ok(tree) => PayloadFacts::of(event_type, &tree),
            Err(_) => PayloadFacts::None,
        }
    }
}

/// An event decoded and validated, its payload still a tree borrowing from the input: what
/// is done to the payload (tokenization) happens here, before it is written out once by
/// [`Decoded::finish`].
#[derive(Debug)]
pub struct Decoded<'a> {
    /// The event, without its payload and facts (set by [`Decoded::finish`]).
    pub event: AuditEvent,
    /// The payload (an object).
    pub payload: Json<'a>,
}

impl Decoded<'_> {
    /// The event with its payload written as canonical JSON and its facts taken.
    pub fn finish(self) -> AuditEvent {
        let Decoded { mut event, payload } = self;
        event.facts = PayloadFacts::of(event.event_type, &payload);
        event.payload = payload.to_canonical();
        event
    }
}

/// The envelope as it appears on the wire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope<'a> {
    #[serde(borrow)]
    event_id: Text<'a>,
    #[serde(borrow)]
    schema_version: Text<'a>,
    #[serde(borrow)]
    tenant_id: Text<'a>,
    #[serde(borrow)]
    session_id: Text<'a>,
    #[serde(borrow)]
    agent_id: Text<'a>,
    #[serde(default, borrow)]
    user_id: Option<Text<'a>>,
    #[serde(borrow)]
    event_type: Text<'a>,
    #[serde(borrow)]
    timestamp: Text<'a>,
    #[serde(borrow)]
    parent_event_id: Option<Text<'a>>,
    #[allow(dead_code)]
    payload: IgnoredAny,
    #[serde(default, borrow)]
    previous_event_hash: Option<Text<'a>>,
}

/// Decodes and validates one event from raw bytes.
pub fn decode_event(bytes: &[u8]) -> Result<AuditEvent, SchemaError> {
    decode(bytes).map(Decoded::finish)
}

/// Decodes and validates one event from raw bytes, leaving its payload a tree: the input is
/// parsed once, and no string without an escape is copied until the event is finished.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, SchemaError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SchemaError::Utf8(e.to_string()))?;
    let tree = crate::json::parse(text).map_err(|e| {
        if e.is_data() {
            SchemaError::DuplicateMember(e.to_string())
        } else {
            SchemaError::Json(e.to_string())
        }
    })?;
    decode_tree(tree)
}

/// Validates one event already parsed as JSON.
pub fn decode_value(value: Value) -> Result<AuditEvent, SchemaError> {
    let text = value.to_string();
    decode_event(text.as_bytes())
}

fn decode_tree(mut tree: Json<'_>) -> Result<Decoded<'_>, SchemaError> {
    let Json::Obj(_) = &tree else {
        return Err(SchemaError::NotAnObject);
    };
    match tree.get("schema_version") {
        None => {
            return Err(SchemaError::Envelope(
                "missing field `schema_version`".into(),
            ));
        }
        Some(Json::Str(v)) => check_version(v)?,
        Some(other) => {
            return Err(SchemaError::Envelope(format!(
                "`schema_version` must be a string, got {}",
                other.kind()
            )));
        }
    }
    let event = {
        let wire: WireEnvelope<'_> = from_tree(&tree).map_err(SchemaError::Envelope)?;
        for (name, v) in [
            ("event_id", &wire.event_id),
            ("tenant_id", &wire.tenant_id),
            ("session_id", &wire.session_id),
            ("agent_id", &wire.agent_id),
        ] {
            check_id(name, v.as_str())?;
        }
        if let Some(parent) = &wire.parent_event_id {
            check_id("parent_event_id", parent.as_str())?;
        }
        if let Some(h) = &wire.previous_event_hash
            && (h.as_str().len() != 64
                || !h
                    .as_str()
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
        {
            return Err(SchemaError::Envelope(
                "`previous_event_hash` must be 64 lowercase hex digits".into(),
            ));
        }
        let event_type = EventType::parse(wire.event_type.as_str())
            .ok_or_else(|| SchemaError::UnknownEventType(wire.event_type.as_str().to_string()))?;
        let timestamp_us = parse_rfc3339(wire.timestamp.as_str())?;
        let owned = |t: Text<'_>| t.0.into_owned();
        AuditEvent {
            event_id: owned(wire.event_id),
            schema_version: owned(wire.schema_version),
            tenant_id: TenantId::new(owned(wire.tenant_id)),
            session_id: owned(wire.session_id),
            agent_id: owned(wire.agent_id),
            user_id: wire.user_id.map(owned),
            event_type,
            timestamp: owned(wire.timestamp),
            timestamp_us,
            parent_event_id: wire.parent_event_id.map(owned),
            payload: String::new(),
            facts: PayloadFacts::None,
            previous_event_hash: wire.previous_event_hash.map(owned),
        }
    };
    let payload = match tree.get_mut("payload") {
        Some(p) => std::mem::replace(p, Json::Null),
        // Panic-free alternative: the envelope requires it.
        None => return Err(SchemaError::Envelope("missing field `payload`".into())),
    };
    validate_payload(event.event_type, &payload)?;
    Ok(Decoded { event, payload })
}

fn check_version(v: &str) -> Result<(), SchemaError> {
    let major = v.split('.').next().and_then(|m| m.parse::<u32>().ok());
    let well_formed = v.split('.').count() <= 3
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    if major == Some(SCHEMA_MAJOR) && well_formed {
        Ok(())
    } else {
        Err(SchemaError::UnsupportedVersion(v.to_string()))
    }
}

fn check_id(name: &'static str, v: &str) -> Result<(), SchemaError> {
    if v.is_empty() {
        return Err(SchemaError::Envelope(format!("`{name}` must not be empty")));
    }
    if v.len() > MAX_ID_LEN {
        return Err(SchemaError::Envelope(format!(
            "`{name}` longer than {MAX_ID_LEN} bytes"
        )));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(SchemaError::Envelope(format!(
            "`{name}` contains control characters"
        )));
    }
    Ok(())
}

/// `T` read from the tree, the error naming where.
fn from_tree<'de, T: Deserialize<'de>>(tree: &'de Json<'de>) -> Result<T, String> {
    // Read again to say where only when it fails: tracking the path costs as much as reading.
    if let Ok(t) = T::deserialize(tree) {
        return Ok(t);
    }
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("at `{path}`: {}", e.inner())
        }
    })
}

/// Checks a payload against the typed schema of its event type.
pub fn validate_payload(event_type: EventType, payload: &Json<'_>) -> Result<(), SchemaError> {
    fn check<'de, T: Deserialize<'de>>(t: EventType, v: &'de Json<'de>) -> Result<T, SchemaError> {
        from_tree::<T>(v).map_err(|reason| SchemaError::Payload {
            event_type: t,
            reason,
        })
    }
    if !matches!(payload, Json::Obj(_)) {
        return Err(SchemaError::Payload {
            event_type,
            reason: format!("payload must be an object, got {}", payload.kind()),
        });
    }
    use payload::*;
    match event_type {
        EventType::TaskInitiated => check::<TaskInitiated>(event_type, payload).map(drop),
        EventType::ModelDecision => check::<ModelDecision>(event_type, payload).map(drop),
        EventType::DecisionPoint => check::<DecisionPoint>(event_type, payload).map(drop),
        EventType::ToolCalled => check::<ToolCalled>(event_type, payload).map(drop),
        EventType::ToolResultReceived => check::<ToolResultReceived>(event_type, payload).map(drop),
        EventType::DataAccessed => check::<DataAccessed>(event_type, payload).map(drop),
        EventType::HumanEscalationTriggered => {
            let p = check::<HumanEscalationTriggered>(event_type, payload)?;
            parse_rfc3339(p.presented_at.as_str()).map(drop)
        }
        EventType::HumanReviewDecision => {
            let p = check::<HumanReviewDecision>(event_type, payload)?;
            parse_rfc3339(p.decided_at.as_str()).map(drop)
        }
        EventType::PolicyDecision => check::<PolicyDecision>(event_type, payload).map(drop),
        EventType::TaskCompleted => check::<TaskCompleted>(event_type, payload).map(drop),
        EventType::TaskFailed => check::<TaskFailed>(event_type, payload).map(drop),
        EventType::DataErased => check::<DataErased>(event_type, payload).map(drop),
        EventType::DataReidentified => check::<DataReidentified>(event_type, payload).map(drop),
        EventType::AuditLogAccessed => check::<AuditLogAccessed>(event_type, payload).map(drop),
        EventType::RetentionApplied => {
            let p = check::<RetentionApplied>(event_type, payload)?;
            parse_rfc3339(p.cutoff.as_str())?;
            if p.expired_ranges.iter().any(|[first, last]| first > last) {
                return Err(SchemaError::Payload {
                    event_type,
                    reason: "an expired range ends before it starts".into(),
                });
            }
            Ok(())
        }
        EventType::LegalHoldPlaced => {
            let p = check::<LegalHoldPlaced>(event_type, payload)?;
            let bad = |reason: &str| {
                Err(SchemaError::Payload {
                    event_type,
                    reason: reason.to_string(),
                })
            };
            let (from, to) = (p.from.as_ref(), p.to.as_ref());
            match p.scope {
                HoldScope::Tenant
                    if p.session_id.is_some()
                        || p.agent_id.is_some()
                        || from.is_some()
                        || to.is_some() =>
                {
                    bad("a tenant-wide hold names no session, agent or range")
                }
                HoldScope::Session if p.session_id.is_none() => {
                    bad("a session hold names its session_id")
                }
                HoldScope::Agent if p.agent_id.is_none() => bad("an agent hold names its agent_id"),
                HoldScope::Range if from.is_none() && to.is_none() => {
                    bad("a range hold names its from or to (or both)")
                }
                _ => {
                    for t in [from, to].into_iter().flatten() {
                        parse_rfc3339(t.as_str())?;
                    }
                    Ok(())
                }
            }
        }
        EventType::LegalHoldReleased => check::<LegalHoldReleased>(event_type, payload).map(drop),
    }
}

/// Typed payloads of schema v1, one per event type. Unknown payload fields are rejected.
pub mod payload {
    use serde::de::IgnoredAny;
    use serde::{Deserialize, Serialize};

    use crate::json::Text;

    /// `TASK_INITIATED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskInitiated<'a> {
        /// The goal or instruction given to the agent.
        #[serde(borrow)]
        pub goal: Text<'a>,
        /// The (sanitized) input payload.
        #[serde(borrow)]
        pub input: Text<'a>,
        /// The agent build that took the task.
        #[serde(borrow)]
        pub agent_version: Text<'a>,
        /// Channel the task came from (api, chat, schedule, …).
        #[serde(default, borrow)]
        pub channel: Option<Text<'a>>,
    }

    /// `MODEL_DECISION`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ModelDecision<'a> {
        /// Model identifier.
        #[serde(borrow)]
        pub model_id: Text<'a>,
        /// Model version or checkpoint.
        #[serde(borrow)]
        pub model_version: Text<'a>,
        /// Full prompt context sent to the model.
        #[serde(borrow)]
        pub prompt: Text<'a>,
        /// Raw model output.
        #[serde(borrow)]
        pub output: Text<'a>,
        /// Reasoning trace, where the model exposes one.
        #[serde(default, borrow)]
        pub reasoning: Option<Text<'a>>,
        /// Prompt tokens.
        pub prompt_tokens: u64,
        /// Completion tokens.
        pub completion_tokens: u64,
        /// Inference latency in milliseconds.
        pub latency_ms: u64,
        /// Confidence signal in [0, 1], where available.
        #[serde(default)]
        pub confidence: Option<f64>,
    }

    /// `DECISION_POINT`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DecisionPoint<'a> {
        /// Why the agent chose as it did.
        #[serde(borrow)]
        pub reasoning_summary: Text<'a>,
        /// Options considered.
        pub options: Vec<Text<'a>>,
        /// The option taken.
        #[serde(borrow)]
        pub selected_action: Text<'a>,
    }

    /// `TOOL_CALLED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ToolCalled<'a> {
        /// Tool name.
        #[serde(borrow)]
        pub tool_name: Text<'a>,
        /// Tool version.
        #[serde(default, borrow)]
        pub tool_version: Option<Text<'a>>,
        /// Input parameters as sent to the tool.
        pub input: IgnoredAny,
        /// Whether the call needed elevated permissions.
        pub elevated: bool,
    }

    /// `TOOL_RESULT_RECEIVED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ToolResultReceived<'a> {
        /// Tool name.
        #[serde(borrow)]
        pub tool_name: Text<'a>,
        /// `success` or `error`.
        pub status: ToolStatus,
        /// Result summary or raw output.
        #[serde(borrow)]
        pub output: Text<'a>,
        /// Execution duration in milliseconds.
        pub latency_ms: u64,
        /// Error code, on failure.
        #[serde(default, borrow)]
        pub error_code: Option<Text<'a>>,
        /// Error message, on failure.
        #[serde(default, borrow)]
        pub error_message: Option<Text<'a>>,
        /// External system identifiers touched (transaction ids, record ids).
        #[serde(default, borrow)]
        pub external_ids: Vec<Text<'a>>,
    }

    /// Tool outcome.
    #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum ToolStatus {
        /// The tool succeeded.
        Success,
        /// The tool failed.
        Error,
    }

    /// `DATA_ACCESSED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DataAccessed<'a> {
        /// The data store.
        #[serde(borrow)]
        pub data_store: Text<'a>,
        /// `read` or `write`.
        pub operation: DataOperation,
        /// Records touched.
        pub record_ids: Vec<Text<'a>>,
        /// Stated purpose.
        #[serde(default, borrow)]
        pub purpose: Option<Text<'a>>,
        /// Query text, if any.
        #[serde(default, borrow)]
        pub query: Option<Text<'a>>,
    }

    /// Data access kind.
    #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DataOperation {
        /// A read.
        Read,
        /// A write.
        Write,
    }

    /// `HUMAN_ESCALATION_TRIGGERED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HumanEscalationTriggered<'a> {
        /// Why a human is needed.
        #[serde(borrow)]
        pub reason: Text<'a>,
        /// The action presented for review.
        #[serde(borrow)]
        pub proposed_action: Action<'a>,
        /// `low`, `medium`, `high` or `critical`.
        pub risk_tier: RiskTier,
        /// When the action was presented to a reviewer (RFC 3339).
        #[serde(borrow)]
        pub presented_at: Text<'a>,
        /// Review SLA in seconds.
        pub sla_seconds: u64,
    }

    /// Risk tiers for escalations.
    #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum RiskTier {
        /// Low.
        Low,
        /// Medium.
        Medium,
        /// High.
        High,
        /// Critical.
        Critical,
    }

    /// `HUMAN_REVIEW_DECISION`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HumanReviewDecision<'a> {
        /// The `HUMAN_ESCALATION_TRIGGERED` event this decides.
        #[serde(borrow)]
        pub escalation_event_id: Text<'a>,
        /// Reviewer identity.
        #[serde(borrow)]
        pub reviewer_id: Text<'a>,
        /// Reviewer role.
        #[serde(borrow)]
        pub reviewer_role: Text<'a>,
        /// The decision.
        pub decision: ReviewOutcome,
        /// When the decision was made (RFC 3339).
        #[serde(borrow)]
        pub decided_at: Text<'a>,
        /// Stated rationale.
        #[serde(default, borrow)]
        pub rationale: Option<Text<'a>>,
        /// The modified action, for `modify`.
        #[serde(default, borrow)]
        pub modification: Option<Action<'a>>,
    }

    /// An action put to a human: free text, or the tool call itself, which binds an approval
    /// to that tool and its arguments.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Action<'a> {
        /// Described in words.
        #[serde(borrow)]
        Described(Text<'a>),
        /// The tool call.
        #[serde(borrow)]
        Tool(ToolAction<'a>),
    }

    /// A tool call put to a human.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ToolAction<'a> {
        /// Tool name.
        #[serde(borrow)]
        pub tool_name: Text<'a>,
        /// Its input parameters.
        #[serde(default)]
        pub input: Option<serde_json::Map<String, serde_json::Value>>,
    }

    /// Review outcomes.
    #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum ReviewOutcome {
        /// Approved as proposed.
        Approve,
        /// Rejected.
        Reject,
        /// Approved with modifications.
        Modify,
        /// Escalated further.
        Escalate,
    }

    /// `POLICY_DECISION`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PolicyDecision<'a> {
        /// Policy identifier.
        #[serde(borrow)]
        pub policy_id: Text<'a>,
        /// `allow`, `deny` or `require_approval`.
        pub outcome: PolicyOutcome,
        /// Why.
        #[serde(borrow)]
        pub reason: Text<'a>,
    }

    /// Policy outcomes.
    #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PolicyOutcome {
        /// Allowed.
        Allow,
        /// Denied.
        Deny,
        /// Needs human approval.
        RequireApproval,
    }

    /// `TASK_COMPLETED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskCompleted<'a> {
        /// Final output.
        #[serde(borrow)]
        pub output: Text<'a>,
        /// Total duration in milliseconds.
        pub duration_ms: u64,
        /// Total tokens consumed.
        pub total_tokens: u64,
    }

    /// `TASK_FAILED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskFailed<'a> {
        /// Failure reason.
        #[serde(borrow)]
        pub reason: Text<'a>,
        /// Last known state.
        #[serde(borrow)]
        pub last_state: Text<'a>,
    }

    /// What an erasure covered.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ErasureScope {
        /// Every key of the tenant.
        Tenant,
        /// One data subject (one token's key).
        Subject,
    }

    /// `DATA_ERASED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DataErased<'a> {
        /// Tenant or subject.
        pub scope: ErasureScope,
        /// The token erased, for a subject erasure.
        #[serde(default, borrow)]
        pub subject: Option<Text<'a>>,
        /// Data keys destroyed.
        pub keys_destroyed: u64,
        /// Who asked.
        #[serde(borrow)]
        pub requested_by: Text<'a>,
        /// Why (e.g. the GDPR Art. 17 request reference).
        #[serde(borrow)]
        pub reason: Text<'a>,
        /// Legal holds the erasure overrode (it is refused under a hold otherwise).
        #[serde(default, borrow)]
        pub overridden_holds: Vec<Text<'a>>,
        /// Why they were overridden.
        #[serde(default, borrow)]
        pub override_reason: Option<Text<'a>>,
    }

    /// `DATA_REIDENTIFIED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DataReidentified<'a> {
        /// The token revealed.
        #[serde(borrow)]
        pub token: Text<'a>,
        /// Who asked.
        #[serde(borrow)]
        pub requested_by: Text<'a>,
        /// Why.
        #[serde(borrow)]
        pub reason: Text<'a>,
    }

    /// `RETENTION_APPLIED`: what one application of the tenant's retention policy removed.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RetentionApplied<'a> {
        /// The tenant's policy: days its events are kept.
        pub retention_days: u64,
        /// Event types kept for another number of days (`{"MODEL_DECISION": 90}`).
        #[serde(default)]
        pub event_type_days: std::collections::BTreeMap<String, u64>,
        /// Events older than this (the start of a UTC day) were expired.
        #[serde(borrow)]
        pub cutoff: Text<'a>,
        /// Events removed.
        pub expired_events: u64,
        /// Their positions in the log, as `[first, last]` ranges (inclusive), ascending.
        pub expired_ranges: Vec<[u64; 2]>,
        /// Quarantined records of the tenant removed.
        pub expired_quarantine: u64,
        /// Sealed vault entries of the removed events and records removed.
        pub expired_vault: u64,
        /// Events past the cutoff kept because a legal hold covers them.
        #[serde(default)]
        pub held_events: u64,
        /// Who or what applied it (`retention-job`, an operator).
        #[serde(borrow)]
        pub requested_by: Text<'a>,
    }

    /// What a legal hold covers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum HoldScope {
        /// Everything of the tenant.
        Tenant,
        /// One session (`session_id`).
        Session,
        /// One agent (`agent_id`).
        Agent,
        /// Events from `from` (inclusive) to `to` (exclusive); either may be open.
        Range,
    }

    /// `LEGAL_HOLD_PLACED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LegalHoldPlaced<'a> {
        /// The hold's id (unique within the tenant), named again when it is released.
        #[serde(borrow)]
        pub hold_id: Text<'a>,
        /// What it covers.
        pub scope: HoldScope,
        /// The session, for a session hold.
        #[serde(default, borrow)]
        pub session_id: Option<Text<'a>>,
        /// The agent, for an agent hold.
        #[serde(default, borrow)]
        pub agent_id: Option<Text<'a>>,
        /// Start of a range hold (RFC 3339), if bounded.
        #[serde(default, borrow)]
        pub from: Option<Text<'a>>,
        /// End of a range hold (RFC 3339, exclusive), if bounded.
        #[serde(default, borrow)]
        pub to: Option<Text<'a>>,
        /// Why (a case or matter reference).
        #[serde(borrow)]
        pub reason: Text<'a>,
        /// Who placed it.
        #[serde(borrow)]
        pub requested_by: Text<'a>,
    }

    /// `LEGAL_HOLD_RELEASED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LegalHoldReleased<'a> {
        /// The hold released.
        #[serde(borrow)]
        pub hold_id: Text<'a>,
        /// Why.
        #[serde(borrow)]
        pub reason: Text<'a>,
        /// Who released it.
        #[serde(borrow)]
        pub requested_by: Text<'a>,
    }

    /// `AUDIT_LOG_ACCESSED`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AuditLogAccessed<'a> {
        /// The API token's name (`anonymous` on an open development API).
        #[serde(borrow)]
        pub principal: Text<'a>,
        /// Its role.
        #[serde(borrow)]
        pub role: Text<'a>,
        /// HTTP method.
        #[serde(borrow)]
        pub method: Text<'a>,
        /// Request path.
        #[serde(borrow)]
        pub path: Text<'a>,
        /// Query string, if any.
        #[serde(default, borrow)]
        pub query: Option<Text<'a>>,
        /// The SQL text of a query request (`POST …/sql`), if any.
        #[serde(default, borrow)]
        pub sql: Option<Text<'a>>,
        /// Response status.
        pub status: u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["1", "1.0", "1.7", "1.0.3"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["2.0", "0.9", "1.x", "", "v1", "1..0", "1.0.0.0"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn taxonomy_round_trips() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }

    #[test]
    fn json_schema_lists_every_type() {
        let schema: Value = serde_json::from_str(JSON_SCHEMA_V1).unwrap();
        let listed = schema["properties"]["event_type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        let ours = EventType::ALL
            .iter()
            .map(|t| t.as_str().to_string())
            .collect::<Vec<_>>();
        assert_eq!(listed, ours);
        for t in EventType::ALL {
            assert!(
                schema["$defs"].get(t.as_str()).is_some(),
                "no $defs entry for {t}"
            );
        }
    }
}
