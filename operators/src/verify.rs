//! Independent verification of tenant logs: recompute every leaf from the stored columns,
//! re-walk the hash chain, rebuild the Merkle tree, and check every signed checkpoint.
//!
//! Used by `custody verify` over the warehouse or an export bundle, by the continuous verifier
//! in the sink, and in tests. The format it checks is specified in `docs/chain-format.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use custody_schemas::time::format_rfc3339;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::hashing::{CanonicalFields, canonical_bytes, chain_hash, leaf_hash};
use crate::merkle::{CompactRange, Hash, empty_root};

/// One row of `custody.events`, as exported (`events.ndjson`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// Tenant.
    pub tenant_id: String,
    /// Position in the tenant's log.
    pub seq: i64,
    /// Event id.
    pub event_id: String,
    /// Schema version.
    pub schema_version: String,
    /// Event type.
    pub event_type: String,
    /// Session.
    pub session_id: String,
    /// Agent.
    pub agent_id: String,
    /// End user.
    pub user_id: Option<String>,
    /// Event time, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub event_time: String,
    /// Causal parent.
    pub parent_event_id: Option<String>,
    /// Canonical payload JSON.
    pub payload: String,
    /// Previous chain hash, hex.
    pub prev_hash: String,
    /// Chain hash, hex.
    pub hash: String,
    /// Leaf hash, hex.
    pub leaf_hash: String,
}

impl EventRow {
    /// The row of a chained event.
    pub fn from_chained(e: &crate::record::ChainedEvent) -> Self {
        EventRow {
            tenant_id: e.event.tenant_id.as_str().to_string(),
            seq: e.seq as i64,
            event_id: e.event.event_id.clone(),
            schema_version: e.event.schema_version.clone(),
            event_type: e.event.event_type.as_str().to_string(),
            session_id: e.event.session_id.clone(),
            agent_id: e.event.agent_id.clone(),
            user_id: e.event.user_id.clone(),
            event_time: format_rfc3339(e.event.timestamp_us),
            parent_event_id: e.event.parent_event_id.clone(),
            payload: e.payload_json.clone(),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
            leaf_hash: hex::encode(e.leaf_hash),
        }
    }

    /// Recomputes the leaf hash from the row's content.
    pub fn recompute_leaf(&self) -> Result<Hash, String> {
        let seq = u64::try_from(self.seq).map_err(|_| format!("negative seq {}", self.seq))?;
        Ok(leaf_hash(&canonical_bytes(&CanonicalFields {
            agent_id: &self.agent_id,
            event_id: &self.event_id,
            event_type: &self.event_type,
            parent_event_id: self.parent_event_id.as_deref(),
            payload_json: &self.payload,
            schema_version: &self.schema_version,
            seq,
            session_id: &self.session_id,
            tenant_id: &self.tenant_id,
            timestamp: &self.event_time,
            user_id: self.user_id.as_deref(),
        })))
    }
}

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A sequence number is missing.
    Gap,
    /// Two events claim one sequence number.
    Fork,
    /// An event's content does not hash to its stored leaf/chain hash.
    Modified,
    /// An event's `prev_hash` is not the previous event's hash.
    BrokenLink,
    /// A checkpoint's root or chain head disagrees with the log.
    RootMismatch,
    /// A checkpoint covers more events than the log holds (truncation or rollback).
    Truncated,
    /// Events past the last checkpoint: nothing signed vouches for them.
    Unattested,
    /// A checkpoint signature does not verify.
    BadSignature,
    /// A checkpoint is signed by a key that is not trusted.
    UnknownKey,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The kind.
    pub kind: ProblemKind,
    /// The first sequence number affected, if the problem is in the log itself.
    pub seq: Option<u64>,
    /// Details for humans.
    pub detail: String,
}

/// The result for one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantReport {
    /// Tenant.
    pub tenant_id: String,
    /// Events verified (the longest valid prefix).
    pub verified_events: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The first bad sequence number, if any.
    pub first_bad_seq: Option<u64>,
    /// Everything found.
    pub problems: Vec<Problem>,
}

impl TenantReport {
    /// Whether the tenant's log verified.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, kind: ProblemKind, seq: Option<u64>, detail: String) {
        if let Some(s) = seq {
            self.first_bad_seq = Some(self.first_bad_seq.map_or(s, |f| f.min(s)));
        }
        self.problems.push(Problem { kind, seq, detail });
    }
}

/// Verifies logs against a set of trusted public keys.
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    trusted: HashMap<String, VerifyingKey>,
}

fn parse_hash(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok().map(|()| out)
}

impl Verifier {
    /// A verifier trusting `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Verifier {
            trusted: keys
                .into_iter()
                .map(|k| (crate::checkpoint::key_id(&k), k))
                .collect(),
        }
    }

    fn check_signature(&self, cp: &Checkpoint, report: &mut TenantReport) -> bool {
        match self.trusted.get(&cp.key_id) {
            None => {
                report.problem(
                    ProblemKind::UnknownKey,
                    None,
                    format!(
                        "checkpoint of epoch {} signed by untrusted key {:?}",
                        cp.epoch, cp.key_id
                    ),
                );
                false
            }
            Some(key) if !cp.verify(key) => {
                report.problem(
                    ProblemKind::BadSignature,
                    None,
                    format!(
                        "checkpoint of epoch {} (size {}) has a bad signature",
                        cp.epoch, cp.tree_size
                    ),
                );
                false
            }
            Some(_) => true,
        }
    }

    /// Verifies one tenant: its events (any order), the checkpoints stored with them, and
    /// `held` checkpoints kept elsewhere (which the log must still be consistent with).
    pub fn verify_tenant(
        &self,
        tenant: &str,
        events: &mut [EventRow],
        checkpoints: &[Checkpoint],
        held: &[Checkpoint],
    ) -> TenantReport {
        let mut report = TenantReport {
            tenant_id: tenant.to_string(),
            ..TenantReport::default()
        };
        // Every signature first; only signed statements are compared with the log.
        let mut by_size: BTreeMap<u64, Vec<&Checkpoint>> = BTreeMap::new();
        for cp in checkpoints.iter().chain(held) {
            report.checkpoints += 1;
            if cp.tenant_id != tenant {
                report.problem(
                    ProblemKind::RootMismatch,
                    None,
                    format!(
                        "checkpoint for tenant {:?} filed under {tenant:?}",
                        cp.tenant_id
                    ),
                );
                continue;
            }
            if self.check_signature(cp, &mut report) {
                by_size.entry(cp.tree_size).or_default().push(cp);
            }
        }
        for cp in by_size.get(&0).into_iter().flatten() {
            if parse_hash(&cp.root) != Some(empty_root()) {
                report.problem(
                    ProblemKind::RootMismatch,
                    Some(0),
                    format!(
                        "empty checkpoint of epoch {} has a non-empty root",
                        cp.epoch
                    ),
                );
            }
        }

        events.sort_by_key(|e| e.seq);
        let mut merkle = CompactRange::new();
        let mut prev: Hash = [0; 32];
        let mut broken = false;
        let mut last_seq: Option<i64> = None;
        for row in events.iter() {
            let expected = merkle.size();
            if last_seq == Some(row.seq) {
                report.problem(
                    ProblemKind::Fork,
                    Some(row.seq as u64),
                    format!("two events at seq {}", row.seq),
                );
                continue;
            }
            last_seq = Some(row.seq);
            if broken {
                continue;
            }
            if row.seq < 0 || row.seq as u64 != expected {
                report.problem(
                    ProblemKind::Gap,
                    Some(expected),
                    format!("seq {expected} missing (next is {})", row.seq),
                );
                broken = true;
                continue;
            }
            let seq = expected;
            let leaf = match row.recompute_leaf() {
                Ok(leaf) => leaf,
                Err(e) => {
                    report.problem(ProblemKind::Modified, Some(seq), e);
                    broken = true;
                    continue;
                }
            };
            if parse_hash(&row.prev_hash) != Some(prev) {
                report.problem(
                    ProblemKind::BrokenLink,
                    Some(seq),
                    format!(
                        "prev_hash at seq {seq} is not the hash of seq {}",
                        seq.wrapping_sub(1)
                    ),
                );
                broken = true;
                continue;
            }
            let hash = chain_hash(&prev, &leaf);
            if parse_hash(&row.leaf_hash) != Some(leaf) || parse_hash(&row.hash) != Some(hash) {
                report.problem(
                    ProblemKind::Modified,
                    Some(seq),
                    format!("content of seq {seq} does not match its hashes"),
                );
                broken = true;
                continue;
            }
            merkle.append(leaf);
            prev = hash;
            for cp in by_size.get(&merkle.size()).into_iter().flatten() {
                if parse_hash(&cp.root) != Some(merkle.root())
                    || parse_hash(&cp.chain_head) != Some(prev)
                {
                    report.problem(
                        ProblemKind::RootMismatch,
                        Some(seq),
                        format!(
                            "checkpoint of epoch {} disagrees with the log at size {}",
                            cp.epoch, cp.tree_size
                        ),
                    );
                }
            }
        }
        report.verified_events = merkle.size();
        if !broken {
            let size = merkle.size();
            if let Some((&max, cps)) = by_size.iter().next_back() {
                if max > size {
                    report.problem(
                        ProblemKind::Truncated,
                        Some(size),
                        format!(
                            "checkpoint of epoch {} covers {max} events, the log has {size}",
                            cps[0].epoch
                        ),
                    );
                } else if max < size {
                    report.problem(
                        ProblemKind::Unattested,
                        Some(max),
                        format!("events {max}..{size} are not covered by any signed checkpoint"),
                    );
                }
            } else if size > 0 {
                report.problem(
                    ProblemKind::Unattested,
                    Some(0),
                    format!("{size} events and no signed checkpoint"),
                );
            }
        }
        report
    }

    /// Verifies every tenant present in `events`, `checkpoints` or `held`.
    pub fn verify_all(
        &self,
        events: Vec<EventRow>,
        checkpoints: Vec<Checkpoint>,
        held: Vec<Checkpoint>,
    ) -> Vec<TenantReport> {
        let mut by_tenant: BTreeMap<String, (Vec<EventRow>, Vec<Checkpoint>, Vec<Checkpoint>)> =
            BTreeMap::new();
        for e in events {
            by_tenant.entry(e.tenant_id.clone()).or_default().0.push(e);
        }
        for c in checkpoints {
            by_tenant.entry(c.tenant_id.clone()).or_default().1.push(c);
        }
        for c in held {
            by_tenant.entry(c.tenant_id.clone()).or_default().2.push(c);
        }
        by_tenant
            .into_iter()
            .map(|(tenant, (mut events, cps, held))| {
                self.verify_tenant(&tenant, &mut events, &cps, &held)
            })
            .collect()
    }
}
