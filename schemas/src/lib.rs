//! Custody's contract: the audit event taxonomy (schema v1), its validation, and the Arrow
//! schemas (with stable Iceberg field ids) of every table the pipeline writes.
//!
//! This crate is deliberately light (serde, arrow-schema, thiserror): everything else depends on
//! it, and it must never pull in a runtime.
#![deny(missing_docs)]

pub mod event;
pub mod id;
pub mod json;
pub mod tables;
pub mod time;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use event::{
    ActionFacts, AuditEvent, Decoded, EventType, PayloadFacts, SCHEMA_VERSION, decode,
    decode_event, decode_value,
};

/// A tenant identifier. Every record the pipeline emits carries one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps a tenant id.
    pub fn new(id: impl Into<String>) -> Self {
        TenantId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an event does not conform to the schema. `Display` is the quarantine reason.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not UTF-8.
    #[error("invalid utf-8: {0}")]
    Utf8(String),
    /// The text is not JSON.
    #[error("invalid json: {0}")]
    Json(String),
    /// An object has two members with one name (RFC 8259 §4 leaves the meaning open).
    #[error("{0}")]
    DuplicateMember(String),
    /// The JSON is not an object.
    #[error("event must be a json object")]
    NotAnObject,
    /// The declared schema version is not supported by this build.
    #[error("unsupported schema_version {0:?} (supported: 1.x)")]
    UnsupportedVersion(String),
    /// An envelope field is missing, mistyped or unknown.
    #[error("invalid envelope: {0}")]
    Envelope(String),
    /// The event type is not in the taxonomy.
    #[error("unknown event_type {0:?}")]
    UnknownEventType(String),
    /// A timestamp is not RFC 3339.
    #[error("invalid rfc 3339 timestamp {0:?}")]
    Timestamp(String),
    /// The payload does not match the schema of its event type.
    #[error("invalid payload for {event_type}: {reason}")]
    Payload {
        /// The declared event type.
        event_type: EventType,
        /// What is wrong.
        reason: String,
    },
}

impl SchemaError {
    /// A short, stable label for metrics (bounded cardinality).
    pub fn kind(&self) -> &'static str {
        match self {
            SchemaError::Utf8(_) => "invalid_utf8",
            SchemaError::Json(_) => "invalid_json",
            SchemaError::DuplicateMember(_) => "duplicate_member",
            SchemaError::NotAnObject => "not_an_object",
            SchemaError::UnsupportedVersion(_) => "unsupported_version",
            SchemaError::Envelope(_) => "invalid_envelope",
            SchemaError::UnknownEventType(_) => "unknown_event_type",
            SchemaError::Timestamp(_) => "invalid_timestamp",
            SchemaError::Payload { .. } => "invalid_payload",
        }
    }
}
