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
use crate::hashing::{CanonicalFields, canonical_leaf, chain_hash};
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
            payload: e.event.payload.clone(),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
            leaf_hash: hex::encode(e.leaf_hash),
        }
    }

    /// Recomputes the leaf hash from the row's content.
    pub fn recompute_leaf(&self) -> Result<Hash, String> {
        let seq = u64::try_from(self.seq).map_err(|_| format!("negative seq {}", self.seq))?;
        Ok(canonical_leaf(&CanonicalFields {
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
        }))
    }
}

/// One row of `custody.expired`, as exported (`expired.ndjson`): the leaf hash of an event
/// removed by retention, which is all the chain and the checkpoints need of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredLeaf {
    /// Tenant.
    pub tenant_id: String,
    /// Position in the tenant's log.
    pub seq: i64,
    /// Leaf hash, hex.
    pub leaf_hash: String,
}

/// Sets the `prev_hash` of each row of `rows` (sorted by tenant and seq, linked by
/// [`crate::sinks::iceberg::link_rows`]) whose predecessor was removed by retention: the chain
/// hash re-walked through the expired leaves from the nearest stored row before it.
pub fn link_through_expired(rows: &mut [EventRow], expired: &[ExpiredLeaf]) {
    let mut leaves: HashMap<(&str, i64), Hash> = HashMap::new();
    for e in expired {
        if let Some(leaf) = parse_hash(&e.leaf_hash) {
            leaves.insert((e.tenant_id.as_str(), e.seq), leaf);
        }
    }
    if leaves.is_empty() {
        return;
    }
    for i in 0..rows.len() {
        if !rows[i].prev_hash.is_empty() || rows[i].seq <= 0 {
            continue;
        }
        let tenant = rows[i].tenant_id.as_str();
        // The nearest stored row before, or the chain's start.
        let (mut prev, mut seq): (Hash, i64) = i
            .checked_sub(1)
            .map(|j| &rows[j])
            .filter(|r| r.tenant_id == tenant && r.seq < rows[i].seq)
            .and_then(|r| Some((parse_hash(&r.hash)?, r.seq + 1)))
            .unwrap_or_default();
        let mut linked = true;
        while seq < rows[i].seq {
            match leaves.get(&(tenant, seq)) {
                Some(leaf) => prev = chain_hash(&prev, leaf),
                None => {
                    linked = false;
                    break;
                }
            }
            seq += 1;
        }
        if linked {
            rows[i].prev_hash = hex::encode(prev);
        }
    }
}

/// The positions `RETENTION_APPLIED` events among `events` declare expired, as `[first,
/// last]` ranges.
fn declared_expired(events: &[EventRow]) -> Vec<[u64; 2]> {
    let mut out = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == "RETENTION_APPLIED")
    {
        let Ok(payload) = serde_json::from_str::<serde_json::Value>(&e.payload) else {
            continue;
        };
        let ranges = payload.get("expired_ranges").and_then(|r| r.as_array());
        for range in ranges.into_iter().flatten() {
            let bound = |i: usize| range.get(i).and_then(serde_json::Value::as_u64);
            if let (Some(first), Some(last)) = (bound(0), bound(1)) {
                out.push([first, last]);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Checks every valid checkpoint of the log's current size against the tree and the chain
/// head after position `seq` (else **root mismatch**).
fn check_at_size(
    by_size: &BTreeMap<u64, Vec<&Checkpoint>>,
    merkle: &CompactRange,
    head: &Hash,
    seq: u64,
    report: &mut TenantReport,
) {
    for cp in by_size.get(&merkle.size()).into_iter().flatten() {
        if parse_hash(&cp.root) != Some(merkle.root()) || parse_hash(&cp.chain_head) != Some(*head)
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
    /// A tenant's checkpoints do not chain: one is missing, replaced or out of order.
    CheckpointChain,
    /// An epoch's seal is missing, invalid, does not cover its row, or breaks the seal chain.
    BadSeal,
    /// A table holds data no seal covers, lacks data a seal covers, or a sealed file changed.
    TableModified,
    /// A tenant the signed registry (or a witness) lists has no log or checkpoints left.
    TenantMissing,
    /// The latest checkpoint carries no valid cosignature of the required witness.
    Unwitnessed,
    /// A bundle row is not in the strict canonical form (left out of its log).
    Malformed,
    /// An event was removed (only its leaf is left) outside every range a
    /// `RETENTION_APPLIED` event of the tenant declares.
    UnrecordedExpiry,
    /// A row of `custody.config_log` does not hold the configuration its digest names, does
    /// not follow the row before it, or was committed with no sealed epoch.
    ConfigLog,
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
    /// Events verified through their leaf alone: removed by retention.
    #[serde(default)]
    pub expired_events: u64,
    /// Their positions, as `[first, last]` ranges.
    #[serde(default)]
    pub expired_ranges: Vec<[u64; 2]>,
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

/// Whether `s` is `hash` in its one spelling, 64 lowercase hex digits (encoding the hash and
/// comparing is cheaper than decoding and validating the text).
fn hex_is(s: &str, hash: &Hash) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let s = s.as_bytes();
    s.len() == 64
        && hash.iter().zip(s.chunks_exact(2)).all(|(b, pair)| {
            pair[0] == DIGITS[(b >> 4) as usize] && pair[1] == DIGITS[(b & 15) as usize]
        })
}

/// A hash in the one canonical spelling: 64 lowercase hex digits.
fn parse_hash(s: &str) -> Option<Hash> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
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

    /// The tenants' latest checkpoint hashes an export's sealed registry pins, or what is
    /// wrong with it ([`crate::seal::SealedRegistry::check`] under the trusted keys).
    pub fn pins(
        &self,
        sealed: &crate::seal::SealedRegistry,
    ) -> Result<BTreeMap<String, Hash>, String> {
        sealed.check(&self.trusted)
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
        self.verify_tenant_at(tenant, events, &[], checkpoints, held, None)
    }

    /// [`Verifier::verify_tenant`], where `expired` are the leaves of the tenant's events
    /// removed by retention (each standing in for its event, inside a range a
    /// `RETENTION_APPLIED` event declares), and `latest` is the epoch of the tenant's latest
    /// checkpoint in the signed registry ([`WarehouseFindings::latest_registered`]): a tenant
    /// whose checkpoints stop before it lost its tail.
    pub fn verify_tenant_at(
        &self,
        tenant: &str,
        events: &mut [EventRow],
        expired: &[ExpiredLeaf],
        checkpoints: &[Checkpoint],
        held: &[Checkpoint],
        latest: Option<crate::record::Epoch>,
    ) -> TenantReport {
        let mut report = TenantReport {
            tenant_id: tenant.to_string(),
            ..TenantReport::default()
        };
        // Every signature first; only signed statements are compared with the log.
        let mut by_size: BTreeMap<u64, Vec<&Checkpoint>> = BTreeMap::new();
        let mut chain: Vec<&Checkpoint> = Vec::new();
        for (i, cp) in checkpoints.iter().chain(held).enumerate() {
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
                if i < checkpoints.len() {
                    chain.push(cp);
                }
            }
        }
        // The stored checkpoints chain by hash, epoch after epoch, from the tenant's first.
        chain.sort_by_key(|c| c.epoch);
        let zeros = hex::encode([0u8; 32]);
        let mut prev: Option<&Checkpoint> = None;
        for cp in chain {
            let expected = prev.map_or(zeros.clone(), |p| hex::encode(p.hash()));
            if prev.is_some_and(|p| p.epoch == cp.epoch) {
                report.problem(
                    ProblemKind::CheckpointChain,
                    None,
                    format!("two checkpoints of epoch {}", cp.epoch),
                );
            } else if cp.prev_checkpoint != expected {
                report.problem(
                    ProblemKind::CheckpointChain,
                    None,
                    match prev {
                        None => format!(
                            "the first checkpoint (epoch {}) follows one that is missing",
                            cp.epoch
                        ),
                        Some(p) => format!(
                            "the checkpoint of epoch {} does not follow the one of epoch {}: \
                             a checkpoint between them is missing or replaced",
                            cp.epoch, p.epoch
                        ),
                    },
                );
            } else if let Some(p) = prev
                && p.tree_size > cp.tree_size
            {
                report.problem(
                    ProblemKind::CheckpointChain,
                    None,
                    format!(
                        "the checkpoint of epoch {} shrinks the log from {} to {} events",
                        cp.epoch, p.tree_size, cp.tree_size
                    ),
                );
            }
            prev = Some(cp);
        }
        if let (Some(latest), Some(newest)) = (latest, prev)
            && newest.epoch < latest
        {
            report.problem(
                ProblemKind::Truncated,
                None,
                format!(
                    "the tenant's checkpoints stop at epoch {} but the signed registry lists \
                     its checkpoint of epoch {latest}: its later checkpoints were removed",
                    newest.epoch
                ),
            );
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
        // The leaves of removed events, by position; a leaf that is not a hash, or that
        // stands where the event itself is still stored, is a finding.
        let mut leaves: BTreeMap<u64, Hash> = BTreeMap::new();
        for e in expired.iter().filter(|e| e.tenant_id == tenant) {
            match (u64::try_from(e.seq), parse_hash(&e.leaf_hash)) {
                (Ok(seq), Some(leaf)) => {
                    if leaves.insert(seq, leaf).is_some() {
                        report.problem(
                            ProblemKind::Fork,
                            Some(seq),
                            format!("two expired leaves at seq {seq}"),
                        );
                    }
                }
                _ => report.problem(
                    ProblemKind::Modified,
                    u64::try_from(e.seq).ok(),
                    format!("expired leaf at seq {} is not a hash", e.seq),
                ),
            }
        }
        let mut merkle = CompactRange::new();
        let mut prev: Hash = [0; 32];
        let mut broken = false;
        let mut last_seq: Option<i64> = None;
        let mut through_leaf: Vec<u64> = Vec::new();
        // Walks the expired leaves that stand before position `upto` (all of them for
        // `u64::MAX`): each extends the chain and the tree like its event did.
        let mut walk_leaves = |upto: u64,
                               merkle: &mut CompactRange,
                               prev: &mut Hash,
                               report: &mut TenantReport,
                               through_leaf: &mut Vec<u64>| {
            while merkle.size() < upto
                && let Some(leaf) = leaves.remove(&merkle.size())
            {
                let seq = merkle.size();
                through_leaf.push(seq);
                merkle.append(leaf);
                *prev = chain_hash(prev, &leaf);
                check_at_size(&by_size, merkle, prev, seq, report);
            }
        };
        for row in events.iter() {
            if !broken && row.seq >= 0 {
                walk_leaves(
                    row.seq as u64,
                    &mut merkle,
                    &mut prev,
                    &mut report,
                    &mut through_leaf,
                );
            }
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
            if !hex_is(&row.prev_hash, &prev) {
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
            if !hex_is(&row.leaf_hash, &leaf) || !hex_is(&row.hash, &hash) {
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
            check_at_size(&by_size, &merkle, &prev, seq, &mut report);
        }
        if !broken {
            walk_leaves(
                u64::MAX,
                &mut merkle,
                &mut prev,
                &mut report,
                &mut through_leaf,
            );
        }
        if let Some((&seq, _)) = leaves.iter().next() {
            report.problem(
                ProblemKind::Fork,
                Some(seq),
                format!(
                    "{} expired leaves stand where the log holds its events or past its end \
                     (first: seq {seq})",
                    leaves.len()
                ),
            );
        }
        report.expired_events = through_leaf.len() as u64;
        report.expired_ranges = crate::retention::ranges(&mut through_leaf);
        // Only a recorded retention removes events.
        let declared = declared_expired(events);
        let covered = |seq: u64| {
            let i = declared.partition_point(|r| r[1] < seq);
            declared.get(i).is_some_and(|r| r[0] <= seq)
        };
        if let Some(&seq) = through_leaf.iter().find(|s| !covered(**s)) {
            let n = through_leaf.iter().filter(|s| !covered(**s)).count();
            report.problem(
                ProblemKind::UnrecordedExpiry,
                Some(seq),
                format!(
                    "{n} events are removed (only their leaves are left) that no \
                     RETENTION_APPLIED event of the tenant declares expired (first: seq {seq})"
                ),
            );
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
        group_by_tenant(events, Vec::new(), checkpoints, held)
            .into_iter()
            .map(|(tenant, mut input)| {
                self.verify_tenant(&tenant, &mut input.events, &input.checkpoints, &input.held)
            })
            .collect()
    }
}

/// The name of the report on the warehouse's own log (its sealed epochs and table files).
pub const WAREHOUSE_REPORT: &str = "(warehouse)";

/// What a warehouse holds besides the tenant logs.
#[derive(Clone, Debug, Default)]
pub struct WarehouseState {
    /// Every row of `custody.epochs`.
    pub records: Vec<crate::sinks::iceberg::EpochRecord>,
    /// Table → its current data files → SHA-256 of their bytes (every table but `epochs`).
    pub files: BTreeMap<String, BTreeMap<String, String>>,
    /// Every row of `custody.config_log`, in epoch order.
    pub config_log: Vec<crate::config_log::ConfigEntry>,
}

/// The path and row count of a data file in Iceberg's JSON form.
fn data_file_path_rows(json: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some((
        v.get("file_path")?.as_str()?.to_string(),
        v.get("record_count")?.as_u64()?,
    ))
}

/// What [`Verifier::verify_warehouse`] found.
#[derive(Debug, Default)]
pub struct WarehouseFindings {
    /// The report on the warehouse's own log.
    pub report: TenantReport,
    /// Problems attributed to tenants.
    pub tenant_problems: Vec<(String, Problem)>,
    /// Per tenant, the epoch of its latest checkpoint in the signed registry: its stored
    /// checkpoints must reach it ([`Verifier::verify_tenant_at`]).
    pub latest_registered: HashMap<String, crate::record::Epoch>,
}

impl Verifier {
    /// Verifies the warehouse's own log: every epoch's seal (signature, the row it covers, the
    /// chain of seals, the signed tenant registry against the stored checkpoints) and every
    /// table's data files against the files and digests the seals list. Returns the report on
    /// the warehouse and problems attributed to tenants (a checkpoint outside the registry, a
    /// registered tenant without checkpoints).
    pub fn verify_warehouse(
        &self,
        state: &WarehouseState,
        checkpoints: &[Checkpoint],
        tenants_with_events: &std::collections::HashSet<&str>,
    ) -> WarehouseFindings {
        let mut report = TenantReport {
            tenant_id: WAREHOUSE_REPORT.to_string(),
            ..TenantReport::default()
        };
        let mut tenant_problems = Vec::new();
        let mut stored: HashMap<(crate::record::Epoch, &str), Hash> = HashMap::new();
        for cp in checkpoints {
            stored.insert((cp.epoch, cp.tenant_id.as_str()), cp.hash());
        }
        let mut tenants_ever: std::collections::HashSet<&str> =
            checkpoints.iter().map(|c| c.tenant_id.as_str()).collect();
        tenants_ever.extend(tenants_with_events.iter().copied());
        let mut sealed_files: HashMap<String, (String, String)> = HashMap::new();
        let mut sealed_rows: HashMap<String, u64> = HashMap::new();
        let mut registered: std::collections::HashSet<(crate::record::Epoch, String)> =
            std::collections::HashSet::new();
        let mut full = crate::seal::Registry::default();
        let mut latest_registered: HashMap<String, crate::record::Epoch> = HashMap::new();
        let mut prev: Option<Hash> = None;
        let mut last_epoch = None;
        let bad = |report: &mut TenantReport, detail: String| {
            report.problem(ProblemKind::BadSeal, None, detail);
        };
        for record in &state.records {
            let epoch = record.epoch;
            report.checkpoints += 1;
            if last_epoch == Some(epoch) {
                bad(&mut report, format!("two rows for epoch {epoch}"));
                continue;
            }
            last_epoch = Some(epoch);
            let Some(seal) = record.seal() else {
                bad(&mut report, format!("epoch {epoch} has no seal"));
                prev = None;
                continue;
            };
            match self.trusted.get(&seal.key_id) {
                None => {
                    report.problem(
                        ProblemKind::UnknownKey,
                        None,
                        format!("epoch {epoch} is sealed by untrusted key {:?}", seal.key_id),
                    );
                    prev = Some(seal.hash());
                    continue;
                }
                Some(key) if !seal.verify(key) => {
                    bad(
                        &mut report,
                        format!("the seal of epoch {epoch} has a bad signature"),
                    );
                    prev = Some(seal.hash());
                    continue;
                }
                Some(_) => {}
            }
            if seal.epoch != epoch
                || seal.row != hex::encode(crate::seal::row_digest(&record.fields()))
            {
                bad(
                    &mut report,
                    format!("the row of epoch {epoch} is not the row its seal signed"),
                );
            }
            let expected = prev.unwrap_or([0; 32]);
            if seal.prev_seal != hex::encode(expected) {
                bad(
                    &mut report,
                    format!(
                        "the seal of epoch {epoch} does not follow the previous epoch's: an \
                         epoch before it is missing or replaced"
                    ),
                );
            }
            prev = Some(seal.hash());
            // The row holds the registry's change (the checkpoints the epoch signed); the
            // seal signs the whole registry, every tenant's latest checkpoint.
            let change = crate::seal::parse_registry(&record.registry).unwrap_or_default();
            full.apply(&change);
            if seal.tenants_root != hex::encode(full.root()) || seal.tenants != full.len() as u64 {
                bad(
                    &mut report,
                    format!("the tenant registry of epoch {epoch} is not the one sealed"),
                );
            }
            for (tenant, hash) in &change {
                registered.insert((epoch, tenant.clone()));
                latest_registered.insert(tenant.clone(), epoch);
                match stored.get(&(epoch, tenant.as_str())) {
                    Some(h) if h == hash => {}
                    Some(_) => tenant_problems.push((
                        tenant.clone(),
                        Problem {
                            kind: ProblemKind::CheckpointChain,
                            seq: None,
                            detail: format!(
                                "the checkpoint of epoch {epoch} is not the one its seal lists"
                            ),
                        },
                    )),
                    None => tenant_problems.push((
                        tenant.clone(),
                        Problem {
                            kind: if tenants_ever.contains(tenant.as_str()) {
                                ProblemKind::CheckpointChain
                            } else {
                                ProblemKind::TenantMissing
                            },
                            seq: None,
                            detail: format!(
                                "the seal of epoch {epoch} lists this tenant's checkpoint, \
                                 which is gone"
                            ),
                        },
                    )),
                }
            }
            match record.manifest() {
                Some(manifest) => {
                    for (table, files) in &manifest.tables {
                        for json in files {
                            let Some((path, rows)) = data_file_path_rows(json) else {
                                bad(
                                    &mut report,
                                    format!("epoch {epoch}: unreadable manifest entry"),
                                );
                                continue;
                            };
                            let digest = manifest.sha256.get(&path).cloned().unwrap_or_default();
                            sealed_rows.insert(path.clone(), rows);
                            sealed_files.insert(path, (table.clone(), digest));
                        }
                    }
                    // Merges replace sealed files by files under this seal, row for row (less
                    // the rows retention removed); a rebuilt derived table replaces every
                    // file it held by the epoch's own.
                    for (table, merges) in &manifest.compacted {
                        for merge in merges {
                            let mut replaced = 0u64;
                            for input in &merge.inputs {
                                match sealed_files.remove(input) {
                                    Some((t, _)) if t == *table => {
                                        replaced += sealed_rows.remove(input).unwrap_or(0);
                                    }
                                    _ => bad(
                                        &mut report,
                                        format!(
                                            "epoch {epoch} compacts custody.{table} file {input}, which no earlier \
                                             epoch sealed"
                                        ),
                                    ),
                                }
                            }
                            let mut merged = 0u64;
                            for json in &merge.outputs {
                                let Some((path, rows)) = data_file_path_rows(json) else {
                                    bad(
                                        &mut report,
                                        format!("epoch {epoch}: unreadable compaction entry"),
                                    );
                                    continue;
                                };
                                merged += rows;
                                let digest =
                                    manifest.sha256.get(&path).cloned().unwrap_or_default();
                                sealed_rows.insert(path.clone(), rows);
                                sealed_files.insert(path, (table.clone(), digest));
                            }
                            let consistent = if merge.rebuild {
                                merged == 0
                            } else {
                                replaced == merge.rows + merge.expired && merged == merge.rows
                            };
                            if !consistent {
                                bad(
                                    &mut report,
                                    format!(
                                        "epoch {epoch} compacts {replaced} rows of custody.{table} into \
                                         {merged} (recorded: {}, {} expired)",
                                        merge.rows, merge.expired
                                    ),
                                );
                            }
                        }
                    }
                }
                None => bad(&mut report, format!("epoch {epoch}: unreadable manifest")),
            }
        }
        for cp in checkpoints {
            if !registered.contains(&(cp.epoch, cp.tenant_id.clone())) {
                tenant_problems.push((
                    cp.tenant_id.clone(),
                    Problem {
                        kind: ProblemKind::CheckpointChain,
                        seq: None,
                        detail: format!(
                            "the checkpoint of epoch {} is under no epoch seal",
                            cp.epoch
                        ),
                    },
                ));
            }
        }
        // Every table holds exactly the sealed files, byte for byte.
        let mut unsealed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut modified: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (table, files) in &state.files {
            for (path, digest) in files {
                match sealed_files.remove(path) {
                    Some((sealed_table, sealed)) if sealed_table == *table && sealed == *digest => {
                    }
                    Some((sealed_table, _)) if sealed_table == *table => {
                        modified.entry(table).or_default().push(path)
                    }
                    _ => unsealed.entry(table).or_default().push(path),
                }
            }
        }
        let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, (table, _)) in sealed_files {
            missing.entry(table).or_default().push(path);
        }
        let mut table_problem = |table: &str, what: &str, files: &[&str]| {
            let mut first: Vec<&str> = files.to_vec();
            first.sort();
            report.problem(
                ProblemKind::TableModified,
                None,
                format!(
                    "custody.{table}: {} data file(s) {what} (first: {})",
                    files.len(),
                    first[0]
                ),
            );
        };
        for (table, files) in &unsealed {
            table_problem(
                table,
                "under no epoch seal (rows added or rewritten)",
                files,
            );
        }
        for (table, files) in &modified {
            table_problem(table, "changed since sealed", files);
        }
        for (table, files) in &missing {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            table_problem(table, "sealed but missing (rows removed)", &files);
        }
        // The configuration log: a chain of digests, each row in a sealed epoch.
        let sealed_epochs: std::collections::HashSet<crate::record::Epoch> =
            state.records.iter().map(|r| r.epoch).collect();
        let mut config_problems = crate::config_log::check(&state.config_log);
        config_problems.extend(
            state
                .config_log
                .iter()
                .filter(|e| !sealed_epochs.contains(&e.epoch))
                .map(|e| {
                    format!(
                        "the configuration recorded at epoch {} is in no sealed epoch",
                        e.epoch
                    )
                }),
        );
        report
            .problems
            .extend(config_problems.into_iter().map(|detail| Problem {
                kind: ProblemKind::ConfigLog,
                seq: None,
                detail,
            }));
        WarehouseFindings {
            report,
            tenant_problems,
            latest_registered,
        }
    }
}

/// One tenant's share of what is to be verified.
#[derive(Clone, Debug, Default)]
pub struct TenantInput {
    /// Its events.
    pub events: Vec<EventRow>,
    /// The leaves of its events removed by retention.
    pub expired: Vec<ExpiredLeaf>,
    /// Its stored checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Its checkpoints held elsewhere.
    pub held: Vec<Checkpoint>,
}

/// Splits rows by tenant, in tenant order.
pub fn group_by_tenant(
    events: Vec<EventRow>,
    expired: Vec<ExpiredLeaf>,
    checkpoints: Vec<Checkpoint>,
    held: Vec<Checkpoint>,
) -> BTreeMap<String, TenantInput> {
    let mut by_tenant: BTreeMap<String, TenantInput> = BTreeMap::new();
    for e in expired {
        by_tenant
            .entry(e.tenant_id.clone())
            .or_default()
            .expired
            .push(e);
    }
    for e in events {
        by_tenant
            .entry(e.tenant_id.clone())
            .or_default()
            .events
            .push(e);
    }
    for c in checkpoints {
        by_tenant
            .entry(c.tenant_id.clone())
            .or_default()
            .checkpoints
            .push(c);
    }
    for c in held {
        by_tenant
            .entry(c.tenant_id.clone())
            .or_default()
            .held
            .push(c);
    }
    by_tenant
}

/// Watches every committed epoch for gaps, forks, broken links and bad checkpoints: the
/// pipeline's own integrity alarm (a bug or a second writer would trip it).
#[derive(Clone, Debug)]
pub struct ContinuousVerifier {
    key: VerifyingKey,
    heads: HashMap<String, (u64, Hash)>,
}

impl ContinuousVerifier {
    /// Starts from the committed logs, trusting `key` for checkpoints.
    pub fn new(key: VerifyingKey, logs: &crate::transforms::hash_chain::ChainState) -> Self {
        ContinuousVerifier {
            key,
            heads: logs
                .iter()
                .map(|(t, l)| (t.clone(), (l.merkle.size(), l.head)))
                .collect(),
        }
    }

    /// Checks one epoch's events (sorted by tenant, seq) and checkpoints; returns problems
    /// with the tenant they concern.
    pub fn observe(
        &mut self,
        events: &[crate::record::WrittenEvent],
        checkpoints: &[Checkpoint],
    ) -> Vec<(String, Problem)> {
        let mut out = Vec::new();
        for e in events {
            let tenant = e.tenant_id.as_str();
            let (next, head) = match self.heads.get_mut(tenant) {
                Some(h) => h,
                None => self.heads.entry(tenant.to_string()).or_insert((0, [0; 32])),
            };
            let problem = if e.seq < *next {
                Some((ProblemKind::Fork, format!("seq {} written again", e.seq)))
            } else if e.seq > *next {
                Some((
                    ProblemKind::Gap,
                    format!("seq {next} missing (got {})", e.seq),
                ))
            } else if e.prev_hash != *head {
                Some((
                    ProblemKind::BrokenLink,
                    format!("prev_hash of seq {} does not link", e.seq),
                ))
            } else if chain_hash(&e.prev_hash, &e.leaf_hash) != e.hash {
                Some((
                    ProblemKind::Modified,
                    format!("hash of seq {} is wrong", e.seq),
                ))
            } else {
                None
            };
            if let Some((kind, detail)) = problem {
                out.push((
                    tenant.to_string(),
                    Problem {
                        kind,
                        seq: Some(e.seq),
                        detail,
                    },
                ));
            }
            if e.seq >= *next {
                *next = e.seq + 1;
                *head = e.hash;
            }
        }
        for cp in checkpoints {
            let bad_signature = !cp.verify(&self.key);
            let mismatch = self.heads.get(&cp.tenant_id).is_some_and(|(size, head)| {
                cp.tree_size != *size || parse_hash(&cp.chain_head) != Some(*head)
            });
            if bad_signature || mismatch {
                out.push((
                    cp.tenant_id.clone(),
                    Problem {
                        kind: if bad_signature {
                            ProblemKind::BadSignature
                        } else {
                            ProblemKind::RootMismatch
                        },
                        seq: None,
                        detail: format!("checkpoint of epoch {} does not check out", cp.epoch),
                    },
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::Signer;
    use crate::record::SourcedEvent;
    use crate::transforms::hash_chain::{ChainState, append};

    fn events(n: i64) -> Vec<crate::record::ChainedEvent> {
        events_with(n, |_, _| {})
    }

    /// `n` events of one tenant, each changed by `f` before it is chained.
    fn events_with(
        n: i64,
        f: impl Fn(i64, &mut custody_schemas::event::AuditEvent),
    ) -> Vec<crate::record::ChainedEvent> {
        let text = include_str!("../../schemas/testdata/event_v1_model_decision.json").to_string();
        let mut chains = ChainState::new();
        (0..n)
            .map(|i| {
                let mut event = custody_schemas::decode_event(text.as_bytes()).unwrap();
                event.event_id = format!("e{i}");
                f(i, &mut event);
                append(
                    &mut chains,
                    SourcedEvent {
                        partition: 0,
                        offset: i,
                        event,
                        raw_sha256: [0; 32],
                        vault: Vec::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn expired_events_verify_through_their_leaves_only_where_retention_declares_them() {
        // The last event records the retention of positions 0..=3.
        let evs = events_with(10, |i, event| {
            if i == 9 {
                event.event_type = custody_schemas::event::EventType::RetentionApplied;
                event.payload = r#"{"cutoff":"2026-01-01T00:00:00.000000Z","expired_events":4,"expired_quarantine":0,"expired_ranges":[[0,3]],"expired_vault":0,"requested_by":"test","retention_days":180}"#.into();
            }
        });
        let signer = Signer::from_seed(&[3; 32]);
        let leaves: Vec<Hash> = evs.iter().map(|e| e.leaf_hash).collect();
        let cps: Vec<Checkpoint> = [2usize, 10]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                signer.checkpoint(
                    "acme",
                    n as u64,
                    &crate::merkle::root(&leaves[..n]),
                    &evs[n - 1].hash,
                    i as u64,
                    0,
                    &[0; 32],
                )
            })
            .collect();
        let rows: Vec<EventRow> = evs.iter().map(EventRow::from_chained).collect();
        let leaf = |seq: usize| ExpiredLeaf {
            tenant_id: "acme".into(),
            seq: seq as i64,
            leaf_hash: hex::encode(leaves[seq]),
        };
        let verifier = Verifier::new([signer.public_key()]);
        let check = |kept: &[EventRow], expired: &[ExpiredLeaf]| {
            let mut kept = kept.to_vec();
            verifier.verify_tenant_at("acme", &mut kept, expired, &cps, &[], None)
        };
        // Positions 0..=3 removed, their leaves kept: every checkpoint (the one at size 2
        // among them) still verifies.
        let expired: Vec<ExpiredLeaf> = (0..4).map(leaf).collect();
        let mut kept = rows[4..].to_vec();
        // Chained checkpoints are not what this test is about.
        let report = check(&kept, &expired);
        let problems: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.kind != ProblemKind::CheckpointChain)
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(report.verified_events, 10);
        assert_eq!(report.expired_events, 4);
        assert_eq!(report.expired_ranges, vec![[0, 3]]);
        // A position removed outside the declared ranges.
        let mut more = expired.clone();
        more.push(leaf(5));
        kept.retain(|r| r.seq != 5);
        let report = check(&kept, &more);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.kind == ProblemKind::UnrecordedExpiry && p.seq == Some(5)),
            "{report:?}"
        );
        // A removed event whose leaf was forged.
        let mut forged = expired.clone();
        forged[1].leaf_hash = hex::encode([7u8; 32]);
        let report = check(&rows[4..], &forged);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.kind == ProblemKind::RootMismatch),
            "{report:?}"
        );
        // A removed event with no leaf left is a gap.
        let report = check(&rows[4..], &expired[1..]);
        assert!(
            report.problems.iter().any(|p| p.kind == ProblemKind::Gap),
            "{report:?}"
        );
    }

    #[test]
    fn hashes_have_one_spelling() {
        let h: Hash = std::array::from_fn(|i| (i * 37) as u8);
        let text = hex::encode(h);
        assert!(hex_is(&text, &h));
        assert!(!hex_is(&text.to_uppercase(), &h));
        assert!(!hex_is(&text[..62], &h));
        assert_eq!(parse_hash(&text), Some(h));
        assert_eq!(parse_hash(&text.to_uppercase()), None);
    }

    #[test]
    fn rows_round_trip_through_the_offline_verifier() {
        let evs = events(9);
        let signer = Signer::from_seed(&[3; 32]);
        let leaves: Vec<Hash> = evs.iter().map(|e| e.leaf_hash).collect();
        let cp = signer.checkpoint(
            "acme",
            9,
            &crate::merkle::root(&leaves),
            &evs[8].hash,
            0,
            0,
            &[0; 32],
        );
        let mut rows: Vec<EventRow> = evs.iter().map(EventRow::from_chained).collect();
        let verifier = Verifier::new([signer.public_key()]);
        let report = verifier.verify_tenant("acme", &mut rows, std::slice::from_ref(&cp), &[]);
        assert!(report.ok(), "{report:?}");
        rows[4].payload.push(' ');
        let report = verifier.verify_tenant("acme", &mut rows, &[cp], &[]);
        assert_eq!(report.first_bad_seq, Some(4));
    }

    #[test]
    fn continuous_verifier_flags_gaps_forks_and_bad_checkpoints() {
        let evs: Vec<_> = events(6)
            .iter()
            .map(crate::record::WrittenEvent::of)
            .collect();
        let signer = Signer::from_seed(&[3; 32]);
        let mut v = ContinuousVerifier::new(signer.public_key(), &Arc::new(ChainState::new()));
        assert!(v.observe(&evs[..3], &[]).is_empty());
        let problems = v.observe(&evs[4..], &[]);
        assert_eq!(problems[0].1.kind, ProblemKind::Gap);
        let problems = v.observe(&evs[5..6], &[]);
        assert_eq!(problems[0].1.kind, ProblemKind::Fork);
        let mut cp = signer.checkpoint("acme", 6, &[0; 32], &evs[5].hash, 1, 0, &[0; 32]);
        assert!(v.observe(&[], &[cp.clone()]).is_empty());
        cp.tree_size = 5;
        assert_eq!(v.observe(&[], &[cp])[0].1.kind, ProblemKind::BadSignature);
    }
}
