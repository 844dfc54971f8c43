//! Audit event schema v1: the envelope, the taxonomy and the per-type payloads.
//!
//! Decoding is strict: an event is accepted only if its envelope and its payload match the schema
//! of its declared `schema_version` and `event_type`; anything else is a [`SchemaError`] whose
//! `Display` names the offending field, so quarantine rows say precisely why.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

impl EventType {
    /// Every event type, in taxonomy order.
    pub const ALL: [EventType; 14] = [
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
            EventType::AuditLogAccessed => &["path", "query"],
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

    /// Events Custody itself writes about a tenant (erasure, re-identification, API access),
    /// as opposed to events of the tenant's agents.
    pub fn is_custody_action(self) -> bool {
        matches!(
            self,
            EventType::DataErased | EventType::DataReidentified | EventType::AuditLogAccessed
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
/// The payload is kept as JSON (validated against the typed payload of its `event_type`), so that
/// tokenization can rewrite free text without a per-type code path and the canonical encoding
/// covers every field the producer sent.
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
    /// The type-specific payload.
    pub payload: Value,
    /// The emitter-side chain: SHA-256 (hex) of the exact bytes of the previous event the same
    /// agent emitted for this tenant, if the producer keeps one.
    #[serde(default)]
    pub previous_event_hash: Option<String>,
}

/// The envelope as it appears on the wire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    event_id: String,
    schema_version: String,
    tenant_id: String,
    session_id: String,
    agent_id: String,
    #[serde(default)]
    user_id: Option<String>,
    event_type: String,
    timestamp: String,
    parent_event_id: Option<String>,
    payload: Value,
    #[serde(default)]
    previous_event_hash: Option<String>,
}

/// Decodes and validates one event from raw bytes.
pub fn decode_event(bytes: &[u8]) -> Result<AuditEvent, SchemaError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SchemaError::Utf8(e.to_string()))?;
    let value = crate::strict_json::from_str(text).map_err(|e| {
        if e.is_data() {
            SchemaError::DuplicateMember(e.to_string())
        } else {
            SchemaError::Json(e.to_string())
        }
    })?;
    decode_value(value)
}

/// Validates one event already parsed as JSON.
pub fn decode_value(value: Value) -> Result<AuditEvent, SchemaError> {
    let Value::Object(map) = &value else {
        return Err(SchemaError::NotAnObject);
    };
    match map.get("schema_version") {
        None => {
            return Err(SchemaError::Envelope(
                "missing field `schema_version`".into(),
            ));
        }
        Some(Value::String(v)) => check_version(v)?,
        Some(other) => {
            return Err(SchemaError::Envelope(format!(
                "`schema_version` must be a string, got {}",
                json_kind(other)
            )));
        }
    }
    let wire: WireEnvelope = from_value(value).map_err(SchemaError::Envelope)?;
    for (name, v) in [
        ("event_id", &wire.event_id),
        ("tenant_id", &wire.tenant_id),
        ("session_id", &wire.session_id),
        ("agent_id", &wire.agent_id),
    ] {
        check_id(name, v)?;
    }
    if let Some(parent) = &wire.parent_event_id {
        check_id("parent_event_id", parent)?;
    }
    if let Some(h) = &wire.previous_event_hash
        && (h.len() != 64
            || !h
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    {
        return Err(SchemaError::Envelope(
            "`previous_event_hash` must be 64 lowercase hex digits".into(),
        ));
    }
    let event_type = EventType::parse(&wire.event_type)
        .ok_or_else(|| SchemaError::UnknownEventType(wire.event_type.clone()))?;
    let timestamp_us = parse_rfc3339(&wire.timestamp)?;
    validate_payload(event_type, &wire.payload)?;
    Ok(AuditEvent {
        event_id: wire.event_id,
        schema_version: wire.schema_version,
        tenant_id: TenantId::new(wire.tenant_id),
        session_id: wire.session_id,
        agent_id: wire.agent_id,
        user_id: wire.user_id,
        event_type,
        timestamp: wire.timestamp,
        timestamp_us,
        parent_event_id: wire.parent_event_id,
        payload: wire.payload,
        previous_event_hash: wire.previous_event_hash,
    })
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

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("at `{path}`: {}", e.inner())
        }
    })
}

/// Checks a payload against the typed schema of its event type.
pub fn validate_payload(event_type: EventType, payload: &Value) -> Result<(), SchemaError> {
    fn check<T: DeserializeOwned>(t: EventType, v: &Value) -> Result<(), SchemaError> {
        from_value::<T>(v.clone())
            .map(drop)
            .map_err(|reason| SchemaError::Payload {
                event_type: t,
                reason,
            })
    }
    if !payload.is_object() {
        return Err(SchemaError::Payload {
            event_type,
            reason: format!("payload must be an object, got {}", json_kind(payload)),
        });
    }
    use payload::*;
    match event_type {
        EventType::TaskInitiated => check::<TaskInitiated>(event_type, payload),
        EventType::ModelDecision => check::<ModelDecision>(event_type, payload),
        EventType::DecisionPoint => check::<DecisionPoint>(event_type, payload),
        EventType::ToolCalled => check::<ToolCalled>(event_type, payload),
        EventType::ToolResultReceived => check::<ToolResultReceived>(event_type, payload),
        EventType::DataAccessed => check::<DataAccessed>(event_type, payload),
        EventType::HumanEscalationTriggered => {
            check::<HumanEscalationTriggered>(event_type, payload)?;
            let presented = payload["presented_at"].as_str().unwrap_or_default();
            parse_rfc3339(presented).map(drop)
        }
        EventType::HumanReviewDecision => {
            check::<HumanReviewDecision>(event_type, payload)?;
            let decided = payload["decided_at"].as_str().unwrap_or_default();
            parse_rfc3339(decided).map(drop)
        }
        EventType::PolicyDecision => check::<PolicyDecision>(event_type, payload),
        EventType::TaskCompleted => check::<TaskCompleted>(event_type, payload),
        EventType::TaskFailed => check::<TaskFailed>(event_type, payload),
        EventType::DataErased => check::<DataErased>(event_type, payload),
        EventType::DataReidentified => check::<DataReidentified>(event_type, payload),
        EventType::AuditLogAccessed => check::<AuditLogAccessed>(event_type, payload),
    }
}

/// Typed payloads of schema v1, one per event type. Unknown payload fields are rejected.
pub mod payload {
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    /// `TASK_INITIATED`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskInitiated {
        /// The goal or instruction given to the agent.
        pub goal: String,
        /// The (sanitized) input payload.
        pub input: String,
        /// The agent build that took the task.
        pub agent_version: String,
        /// Channel the task came from (api, chat, schedule, …).
        #[serde(default)]
        pub channel: Option<String>,
    }

    /// `MODEL_DECISION`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ModelDecision {
        /// Model identifier.
        pub model_id: String,
        /// Model version or checkpoint.
        pub model_version: String,
        /// Full prompt context sent to the model.
        pub prompt: String,
        /// Raw model output.
        pub output: String,
        /// Reasoning trace, where the model exposes one.
        #[serde(default)]
        pub reasoning: Option<String>,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DecisionPoint {
        /// Why the agent chose as it did.
        pub reasoning_summary: String,
        /// Options considered.
        pub options: Vec<String>,
        /// The option taken.
        pub selected_action: String,
    }

    /// `TOOL_CALLED`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ToolCalled {
        /// Tool name.
        pub tool_name: String,
        /// Tool version.
        #[serde(default)]
        pub tool_version: Option<String>,
        /// Input parameters as sent to the tool.
        pub input: Value,
        /// Whether the call needed elevated permissions.
        pub elevated: bool,
    }

    /// `TOOL_RESULT_RECEIVED`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ToolResultReceived {
        /// Tool name.
        pub tool_name: String,
        /// `success` or `error`.
        pub status: ToolStatus,
        /// Result summary or raw output.
        pub output: String,
        /// Execution duration in milliseconds.
        pub latency_ms: u64,
        /// Error code, on failure.
        #[serde(default)]
        pub error_code: Option<String>,
        /// Error message, on failure.
        #[serde(default)]
        pub error_message: Option<String>,
        /// External system identifiers touched (transaction ids, record ids).
        #[serde(default)]
        pub external_ids: Vec<String>,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DataAccessed {
        /// The data store.
        pub data_store: String,
        /// `read` or `write`.
        pub operation: DataOperation,
        /// Records touched.
        pub record_ids: Vec<String>,
        /// Stated purpose.
        #[serde(default)]
        pub purpose: Option<String>,
        /// Query text, if any.
        #[serde(default)]
        pub query: Option<String>,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HumanEscalationTriggered {
        /// Why a human is needed.
        pub reason: String,
        /// The action presented for review.
        pub proposed_action: String,
        /// `low`, `medium`, `high` or `critical`.
        pub risk_tier: RiskTier,
        /// When the action was presented to a reviewer (RFC 3339).
        pub presented_at: String,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HumanReviewDecision {
        /// The `HUMAN_ESCALATION_TRIGGERED` event this decides.
        pub escalation_event_id: String,
        /// Reviewer identity.
        pub reviewer_id: String,
        /// Reviewer role.
        pub reviewer_role: String,
        /// The decision.
        pub decision: ReviewOutcome,
        /// When the decision was made (RFC 3339).
        pub decided_at: String,
        /// Stated rationale.
        #[serde(default)]
        pub rationale: Option<String>,
        /// The modified action, for `modify`.
        #[serde(default)]
        pub modification: Option<String>,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PolicyDecision {
        /// Policy identifier.
        pub policy_id: String,
        /// `allow`, `deny` or `require_approval`.
        pub outcome: PolicyOutcome,
        /// Why.
        pub reason: String,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskCompleted {
        /// Final output.
        pub output: String,
        /// Total duration in milliseconds.
        pub duration_ms: u64,
        /// Total tokens consumed.
        pub total_tokens: u64,
    }

    /// `TASK_FAILED`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TaskFailed {
        /// Failure reason.
        pub reason: String,
        /// Last known state.
        pub last_state: String,
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
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DataErased {
        /// Tenant or subject.
        pub scope: ErasureScope,
        /// The token erased, for a subject erasure.
        #[serde(default)]
        pub subject: Option<String>,
        /// Data keys destroyed.
        pub keys_destroyed: u64,
        /// Who asked.
        pub requested_by: String,
        /// Why (e.g. the GDPR Art. 17 request reference).
        pub reason: String,
    }

    /// `DATA_REIDENTIFIED`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DataReidentified {
        /// The token revealed.
        pub token: String,
        /// Who asked.
        pub requested_by: String,
        /// Why.
        pub reason: String,
    }

    /// `AUDIT_LOG_ACCESSED`.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AuditLogAccessed {
        /// The API token's name (`anonymous` on an open development API).
        pub principal: String,
        /// Its role.
        pub role: String,
        /// HTTP method.
        pub method: String,
        /// Request path.
        pub path: String,
        /// Query string, if any.
        #[serde(default)]
        pub query: Option<String>,
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
