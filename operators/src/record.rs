//! The records that travel between operators.

use custody_schemas::AuditEvent;
use serde::{Deserialize, Serialize};

/// The dataflow timestamp: one epoch per source batch. Every epoch becomes one Iceberg commit.
pub type Epoch = u64;

/// The partition of Custody's own access log (`access-log.ndjson` in the warehouse): records
/// Custody writes itself, trusted without a producer signature. No external source has
/// negative partitions.
pub const ACCESS_LOG_PARTITION: i32 = -1;

/// The partition of Custody's own administrative actions (`custody erase`, `custody reveal`):
/// the only source of `DATA_ERASED` and `DATA_REIDENTIFIED` events.
pub const ADMIN_PARTITION: i32 = -2;

/// Raw input as read from a source, before any parsing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// Source partition (Kafka partition; 0 for files and the generator).
    pub partition: i32,
    /// Position within the partition (Kafka offset, or line number).
    pub offset: i64,
    /// The bytes exactly as received (possibly cut short; see `len`).
    pub bytes: Vec<u8>,
    /// The length of the input as received; more than `bytes.len()` if the source cut it.
    pub len: u64,
    /// Who says they produced it (Kafka headers), checked against the producer registry.
    pub producer: Option<ProducerClaim>,
    /// Set on the marker an operator's forced skip leaves in place of the skipped records:
    /// why, and the first offset skipped (`offset` is the last). Quarantined as
    /// `operator_skip`.
    pub skipped: Option<(i64, String)>,
}

/// A producer's claim of authorship: its id and a MAC over the exact record bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerClaim {
    /// The producer id (`custody-producer` header).
    pub producer_id: String,
    /// HMAC-SHA256 of the record bytes under the producer's key (`custody-signature`, hex).
    pub signature: Vec<u8>,
}

impl RawRecord {
    /// A record holding all of its bytes.
    pub fn new(partition: i32, offset: i64, bytes: Vec<u8>) -> Self {
        let len = bytes.len() as u64;
        RawRecord {
            partition,
            offset,
            bytes,
            len,
            producer: None,
            skipped: None,
        }
    }
}

/// A decoded, validated event that still remembers where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcedEvent {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The event.
    pub event: AuditEvent,
    /// SHA-256 of the raw bytes, for the emitter-side chain.
    pub raw_sha256: [u8; 32],
    /// Plaintext for the vault (token values, field content), sealed by the sink; never
    /// written in clear.
    pub vault: Vec<VaultItem>,
}

/// Plaintext the sink seals into `custody.vault`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaultItem {
    /// The value behind a token, sealed under the token's own key (one subject).
    Token {
        /// The token, e.g. `<EMAIL:tok_…>`.
        token: String,
        /// The value it replaced.
        value: String,
    },
    /// A text field's content (already tokenized), replaced in the event by a commitment and
    /// sealed under the tenant's content key.
    Content {
        /// The payload field.
        field: String,
        /// Its JSON value.
        json: String,
        /// The commitment `<CONTENT:tok_…>` that replaced it in the event (how an auditor
        /// names the content to reveal).
        #[serde(default)]
        commitment: String,
    },
}

/// An event with its place in its tenant's hash chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainedEvent {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The (tokenized) event; its payload is the canonical JSON stored.
    pub event: AuditEvent,
    /// Position in the tenant's chain, starting at 0.
    pub seq: u64,
    /// Hash of the previous event in the chain (zeros for seq 0).
    pub prev_hash: [u8; 32],
    /// This event's chain hash.
    pub hash: [u8; 32],
    /// `SHA-256(0x00 || canonical event)`: the event's Merkle leaf.
    pub leaf_hash: [u8; 32],
    /// Plaintext for the vault.
    pub vault: Vec<VaultItem>,
}

impl ChainedEvent {
    /// `event` outside any chain: no source position, seq 0, zero hashes, no stored payload
    /// text. What the views read of an event rebuilt from the lake, or made up in a test.
    pub fn unchained(event: AuditEvent) -> Self {
        ChainedEvent {
            partition: 0,
            offset: 0,
            event,
            seq: 0,
            prev_hash: [0; 32],
            hash: [0; 32],
            leaf_hash: [0; 32],
            vault: Vec::new(),
        }
    }
}

/// What the commit needs of an event its worker wrote to a data file: its place in its
/// tenant's chain and where it came from (the event itself stays with the writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenEvent {
    /// The tenant.
    pub tenant_id: String,
    /// Position in the tenant's chain.
    pub seq: u64,
    /// The event id.
    pub event_id: String,
    /// The session (the proof store indexes where each session lies in the chain).
    pub session_id: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Hash of the previous event in the chain.
    pub prev_hash: [u8; 32],
    /// This event's chain hash.
    pub hash: [u8; 32],
    /// This event's Merkle leaf.
    pub leaf_hash: [u8; 32],
    /// Events a `RETENTION_APPLIED` event says it removed (0 for any other event).
    pub expired: u64,
}

impl WrittenEvent {
    /// The digest of `e`.
    pub fn of(e: &ChainedEvent) -> Self {
        WrittenEvent {
            tenant_id: e.event.tenant_id.as_str().to_string(),
            seq: e.seq,
            event_id: e.event.event_id.clone(),
            session_id: e.event.session_id.clone(),
            partition: e.partition,
            offset: e.offset,
            prev_hash: e.prev_hash,
            hash: e.hash,
            leaf_hash: e.leaf_hash,
            expired: expired_by(&e.event),
        }
    }

    /// The digest of `e`, taking its strings.
    pub fn take(e: ChainedEvent) -> Self {
        let expired = expired_by(&e.event);
        WrittenEvent {
            tenant_id: String::from(e.event.tenant_id),
            seq: e.seq,
            event_id: e.event.event_id,
            session_id: e.event.session_id,
            partition: e.partition,
            offset: e.offset,
            prev_hash: e.prev_hash,
            hash: e.hash,
            leaf_hash: e.leaf_hash,
            expired,
        }
    }
}

/// The events `event` says retention removed, if it is a `RETENTION_APPLIED` event.
fn expired_by(event: &custody_schemas::AuditEvent) -> u64 {
    match event.facts {
        custody_schemas::PayloadFacts::Retention { expired_events } => expired_events,
        _ => 0,
    }
}

/// An event's plaintext for the vault, with the event it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEvent {
    /// The tenant.
    pub tenant_id: String,
    /// The event id.
    pub event_id: String,
    /// What to seal.
    pub items: Vec<VaultItem>,
}

/// Input that was rejected, with the reason. Never dropped: it is written to `custody.quarantine`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Stable short label for the reason (bounded cardinality).
    pub reason_kind: String,
    /// The precise reason.
    pub reason: String,
    /// The tenant the input claimed, if it could be read.
    pub tenant_id: Option<String>,
    /// Length of the raw input in bytes.
    pub raw_len: i64,
    /// SHA-256 of the raw input, hex.
    pub raw_sha256: String,
    /// The raw input as lossy UTF-8, truncated and with PII tokenized.
    pub raw_redacted: String,
    /// The bytes as received (or, for an event rejected after decoding, the decoded event),
    /// for the dead-letter topic; never written to the lake.
    pub raw: Vec<u8>,
}

/// A per-tenant chain head at the close of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The tenant.
    pub tenant_id: String,
    /// Sequence number of the last event.
    pub seq: u64,
    /// Hash of the last event.
    pub head_hash: [u8; 32],
    /// Events appended to this tenant's chain in the epoch.
    pub epoch_events: u64,
    /// The tenant's Merkle compact range after the epoch ([`crate::merkle::CompactRange`]).
    pub merkle_range: String,
}

/// The emitter-side chain of one agent at the close of an epoch: the SHA-256 of the last raw
/// event it sent for its tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitterHead {
    /// The tenant.
    pub tenant_id: String,
    /// The agent.
    pub agent_id: String,
    /// SHA-256 of the agent's last raw event.
    pub last_sha256: [u8; 32],
}

/// One update of a view: `(row, diff)`; rows are view-specific.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ViewUpdate {
    /// `(tenant, event_type) -> count`.
    EventCount {
        /// Tenant.
        tenant_id: String,
        /// Event type.
        event_type: String,
        /// Count.
        count: i64,
        /// +1 or -1.
        diff: i64,
    },
    /// Per-tenant HITL review latency statistics.
    HitlLatency {
        /// Tenant.
        tenant_id: String,
        /// The statistics.
        stats: HitlStats,
        /// +1 or -1.
        diff: i64,
    },
    /// A row of one of the keyed views ([`ViewId`]): `(tenant, key) -> row` with the row as
    /// JSON.
    Row {
        /// The view.
        view: ViewId,
        /// Tenant.
        tenant_id: String,
        /// The row's key within the tenant, unique per view.
        key: String,
        /// The row, JSON.
        row: String,
        /// +1 or -1.
        diff: i64,
    },
    /// A keyed view's row is final and leaves the views' memory: its session was retired
    /// (ended and past its grace). Not a change of the view: the row stays as the lake's
    /// changelog last inserted it, and is served from the warehouse from then on.
    Retired {
        /// The view.
        view: ViewId,
        /// Tenant.
        tenant_id: String,
        /// The row's key.
        key: String,
        /// The final row, JSON.
        row: String,
    },
}

impl ViewUpdate {
    /// +1 for an insertion, -1 for a retraction, 0 for a retirement.
    pub fn diff(&self) -> i64 {
        match self {
            ViewUpdate::EventCount { diff, .. }
            | ViewUpdate::HitlLatency { diff, .. }
            | ViewUpdate::Row { diff, .. } => *diff,
            ViewUpdate::Retired { .. } => 0,
        }
    }

    fn set_diff(&mut self, to: i64) {
        match self {
            ViewUpdate::EventCount { diff, .. }
            | ViewUpdate::HitlLatency { diff, .. }
            | ViewUpdate::Row { diff, .. } => *diff = to,
            ViewUpdate::Retired { .. } => {}
        }
    }
}

/// The net change of `updates`: the diffs of equal rows summed, rows that sum to nothing left
/// out, retirements dropped (they change no view; the changelog keeps a retired row as last
/// inserted). In the order rows first appear.
pub fn consolidate(updates: impl IntoIterator<Item = ViewUpdate>) -> Vec<ViewUpdate> {
    use std::collections::hash_map::Entry;
    let mut sums: std::collections::HashMap<ViewUpdate, i64> = std::collections::HashMap::new();
    let mut order = Vec::new();
    for mut update in updates {
        if matches!(update, ViewUpdate::Retired { .. }) {
            continue;
        }
        let diff = update.diff();
        update.set_diff(0);
        match sums.entry(update) {
            Entry::Occupied(mut e) => *e.get_mut() += diff,
            Entry::Vacant(e) => {
                order.push(e.key().clone());
                e.insert(diff);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|mut update| {
            let diff = sums.get(&update).copied().unwrap_or(0);
            (diff != 0).then(|| {
                update.set_diff(diff);
                update
            })
        })
        .collect()
}

/// The keyed views; their rows share one changelog table `custody.view_changes`, keyed by view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewId {
    /// One row per agent session.
    Sessions,
    /// One row per tool call: the decisions that led to it.
    CausalChains,
    /// HITL statistics per (agent, risk tier).
    HitlGroups,
    /// HITL statistics per reviewer, with their rubber stamps.
    Reviewers,
    /// Escalations still undecided past their SLA.
    SlaBreaches,
    /// Policy rule violations.
    PolicyViolations,
    /// Drift and anomaly alerts.
    Alerts,
    /// Use per model version.
    ModelVersions,
}

impl ViewId {
    /// Every keyed view.
    pub const ALL: [ViewId; 8] = [
        ViewId::Sessions,
        ViewId::CausalChains,
        ViewId::HitlGroups,
        ViewId::Reviewers,
        ViewId::SlaBreaches,
        ViewId::PolicyViolations,
        ViewId::Alerts,
        ViewId::ModelVersions,
    ];

    /// The view's name, e.g. `sla_breaches`.
    pub fn name(self) -> &'static str {
        match self {
            ViewId::Sessions => "sessions",
            ViewId::CausalChains => "causal_chains",
            ViewId::HitlGroups => "hitl_groups",
            ViewId::Reviewers => "reviewers",
            ViewId::SlaBreaches => "sla_breaches",
            ViewId::PolicyViolations => "policy_violations",
            ViewId::Alerts => "alerts",
            ViewId::ModelVersions => "model_versions",
        }
    }
}

/// Review latency statistics for one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HitlStats {
    /// Completed reviews.
    pub reviews: i64,
    /// Median presented→decided latency, ms.
    pub p50_ms: i64,
    /// 95th percentile latency, ms.
    pub p95_ms: i64,
    /// Maximum latency, ms.
    pub max_ms: i64,
    /// Approvals faster than the rubber-stamp threshold.
    pub rubber_stamps: i64,
    /// Decisions that came after the escalation's SLA.
    pub over_sla: i64,
}

/// Everything the sink writes, funnelled into one stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SinkRecord {
    /// An accepted event.
    Event(Box<ChainedEvent>),
    /// A rejected input.
    Quarantine(Box<Quarantined>),
    /// A chain head.
    Head(ChainHead),
    /// A signed checkpoint.
    Checkpoint(Box<crate::checkpoint::Checkpoint>),
    /// A view update.
    View(ViewUpdate),
    /// An agent's emitter-side chain at an epoch's close.
    Emitter(Box<EmitterHead>),
    /// Parts of the views' state at a snapshot epoch (JSON lines, newline-terminated, that the
    /// views read back on restart); appended as they come to
    /// `snapshots/epoch-<epoch>.v<format>.ndjson`, sealed with the epoch.
    ViewState(Vec<u8>),
}
