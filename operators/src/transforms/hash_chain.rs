//! Append each event to its tenant's hash chain and Merkle log; sign a checkpoint per tenant
//! whose log grew, at every epoch close.
//!
//! # Inputs
//! Tokenized [`SourcedEvent`]s at [`Epoch`] timestamps, exchanged by `tenant_id`, so one worker
//! owns each tenant's log.
//!
//! # Outputs
//! [`SinkRecord`]s:
//! - `Event`: the [`ChainedEvent`] with `seq` (0-based, gap-free per tenant), `leaf_hash`,
//!   `prev_hash`, `hash` (see [`crate::hashing`]) and the canonical payload;
//! - `Head`: per tenant touched in the epoch, its last seq, hash and Merkle compact range;
//! - `Checkpoint`: per tenant owned by the worker whose log grew in the epoch, a signed
//!   checkpoint ([`crate::checkpoint`]) of its tree size, Merkle root and chain head at the
//!   epoch close. An idle tenant signs nothing: the epoch's seal restates its latest
//!   checkpoint in the tenant registry ([`crate::seal`]), so an epoch costs what it appended,
//!   not the number of tenants;
//! - `Emitter`: per `(tenant, agent)` touched in the epoch, the SHA-256 of the agent's last
//!   raw event (the emitter chain's head, durable so the check survives restarts);
//! - `Quarantine`: events whose `previous_event_hash` (the emitter-side chain) does not match
//!   the SHA-256 of the previous event the same agent sent for the tenant. They never enter
//!   the tenant's chain; the emitter chain continues from them, so one break is one record.
//!
//! # State
//! One [`TenantLog`] per tenant owned by this worker (head hash and ≤ 64 subtree roots; grows
//! with the tenant count, never compacted), one emitter head per `(tenant, agent)` (grows with
//! the agent count), plus the events of epochs not yet complete.
//!
//! # Progress
//! Holds a capability per buffered epoch until the input frontier passes it, and one at the
//! oldest epoch not yet checkpointed. Within an epoch events are chained in
//! `(partition, offset)` order, so the result is deterministic however the input was batched.
//!
//! # Metrics
//! `custody_operator_events_{received,sent}_total{operator="hash_chain"}`, `custody_tenants`,
//! `custody_checkpoints_signed_total`, `custody_operator_errors_total{operator="hash_chain"}`
//! and `custody_verifier_alerts_total{kind="emitter_chain_break"}` for emitter chain breaks.
//!
//! # Failure modes
//! None at run time. Logs resume from the heads committed to the lake ([`ChainState`]), the
//! emitter chains from `custody.emitter_heads` ([`EmitterState`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use custody_schemas::time::now_us;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::checkpoint::Signer;
use crate::hashing::{chain_hash, event_leaf};
use crate::merkle::CompactRange;
use crate::metrics::Metrics;
use crate::record::{
    ChainHead, ChainedEvent, EmitterHead, Epoch, Quarantined, SinkRecord, SourcedEvent,
};

/// One tenant's log: the chain head and the Merkle compact range (its size is the next seq).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantLog {
    /// Hash of the last event (zeros when empty).
    pub head: [u8; 32],
    /// Merkle compact range over every leaf.
    pub merkle: CompactRange,
    /// Hash of the tenant's last signed checkpoint (zeros before its first).
    pub last_checkpoint: [u8; 32],
}

/// Every tenant's log.
pub type ChainState = HashMap<String, TenantLog>;

/// The emitter-side chains: `(tenant, agent)` → SHA-256 of the agent's last raw event.
pub type EmitterState = HashMap<(String, String), [u8; 32]>;

/// A stable hash of a tenant id, used to route a tenant to its worker.
pub fn tenant_route(tenant: &str) -> u64 {
    let mut h = DefaultHasher::new();
    tenant.hash(&mut h);
    h.finish()
}

/// Hash-chains events per tenant; see the module docs.
pub trait HashChain<'scope> {
    /// Appends each event to its tenant's log, starting from `logs` and the emitter chains
    /// `emitters`; the first epoch is `first_epoch`.
    fn hash_chain(
        self,
        logs: Arc<ChainState>,
        emitters: Arc<EmitterState>,
        signer: Signer,
        first_epoch: Epoch,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, SinkRecord>;
}

impl<'scope> HashChain<'scope> for StreamVec<'scope, Epoch, SourcedEvent> {
    fn hash_chain(
        self,
        logs: Arc<ChainState>,
        emitters: Arc<EmitterState>,
        signer: Signer,
        first_epoch: Epoch,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, SinkRecord> {
        let op = metrics.operator("hash_chain");
        let tenants_gauge = metrics.tenants.clone();
        let signed = metrics.checkpoints_signed.clone();
        let metrics_breaks = (
            metrics
                .verifier_alerts
                .with_label_values(&["emitter_chain_break"]),
            metrics
                .events_quarantined
                .with_label_values(&["emitter_chain_break"]),
        );
        let peers = self.scope().peers() as u64;
        let index = self.scope().index() as u64;
        let pact = Exchange::new(|e: &SourcedEvent| tenant_route(e.event.tenant_id.as_str()));
        self.unary_frontier(pact, "HashChain", move |cap, _info| {
            // Only the logs this worker owns.
            let mut chains: ChainState = logs
                .iter()
                .filter(|(t, _)| tenant_route(t) % peers == index)
                .map(|(t, h)| (t.clone(), h.clone()))
                .collect();
            tenants_gauge.add(chains.len() as i64);
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<SourcedEvent>)> =
                BTreeMap::new();
            // The oldest epoch not yet checkpointed.
            let mut checkpoint_cap = Some(cap.delayed(&first_epoch));
            drop(cap);
            let mut last_data_epoch: Option<Epoch> = None;
            // The owned tenants whose logs grew since their last checkpoint.
            let mut dirty: BTreeSet<String> = BTreeSet::new();
            // Last raw-event hash per (tenant, agent): the emitter-side chains, resumed from
            // the lake for the tenants this worker owns.
            let mut emitters: EmitterState = emitters
                .iter()
                .filter(|((t, _), _)| tenant_route(t) % peers == index)
                .map(|(k, h)| (k.clone(), *h))
                .collect();
            let breaks = metrics_breaks.clone();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let time = *cap.time();
                    last_data_epoch = last_data_epoch.max(Some(time));
                    let entry = pending.entry(time).or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        op.received.inc_by(batch.len() as u64);
                        entry.1.append(batch);
                    }
                });
                let done_below = frontier.frontier().first().copied();
                let complete = |epoch: Epoch| match done_below {
                    Some(f) => epoch < f,
                    None => true,
                };
                // Epochs are chained and checkpointed strictly in order: an epoch's
                // checkpoint is signed before the next epoch's events are appended, however
                // many epochs completed at once.
                loop {
                    let next_events = pending.keys().next().copied().filter(|e| complete(*e));
                    let next_checkpoint =
                        checkpoint_cap
                            .as_ref()
                            .map(|c| *c.time())
                            .filter(|e| match done_below {
                                Some(f) => *e < f,
                                None => last_data_epoch.is_some_and(|last| *e <= last),
                            });
                    match (next_events, next_checkpoint) {
                        (Some(ev), cp) if cp.is_none_or(|c| ev <= c) => {
                            let Some((cap, mut events)) = pending.remove(&ev) else {
                                break;
                            };
                            events.sort_by_key(|e| (e.partition, e.offset));
                            crate::failpoint::hit(crate::failpoint::IN_WORKER, ev);
                            let before = chains.len();
                            let mut session = output.session(&cap);
                            let mut heads: BTreeMap<String, ChainHead> = BTreeMap::new();
                            // Per tenant and agent, the last raw hash this epoch (keys are
                            // allocated once per epoch, not per event).
                            let mut touched: BTreeMap<String, BTreeMap<String, [u8; 32]>> =
                                BTreeMap::new();
                            for sourced in events {
                                let (tenant, agent) = (
                                    sourced.event.tenant_id.as_str(),
                                    sourced.event.agent_id.as_str(),
                                );
                                match touched.get_mut(tenant) {
                                    Some(agents) => match agents.get_mut(agent) {
                                        Some(last) => *last = sourced.raw_sha256,
                                        None => {
                                            agents.insert(agent.to_string(), sourced.raw_sha256);
                                        }
                                    },
                                    None => {
                                        touched.insert(
                                            tenant.to_string(),
                                            BTreeMap::from([(
                                                agent.to_string(),
                                                sourced.raw_sha256,
                                            )]),
                                        );
                                    }
                                }
                                if let Some(q) = check_emitter_chain(&mut emitters, &sourced) {
                                    op.errors.inc();
                                    breaks.0.inc();
                                    breaks.1.inc();
                                    session.give(SinkRecord::Quarantine(Box::new(q)));
                                    continue;
                                }
                                op.sent.inc();
                                let chained = append(&mut chains, sourced);
                                let tenant = chained.event.tenant_id.as_str();
                                let head = heads.entry(tenant.to_string()).or_insert(ChainHead {
                                    tenant_id: tenant.to_string(),
                                    seq: 0,
                                    head_hash: [0; 32],
                                    epoch_events: 0,
                                    merkle_range: String::new(),
                                });
                                head.seq = chained.seq;
                                head.head_hash = chained.hash;
                                head.epoch_events += 1;
                                session.give(SinkRecord::Event(Box::new(chained)));
                            }
                            for (tenant, mut head) in heads {
                                head.merkle_range = chains[&tenant].merkle.encode();
                                if !dirty.contains(&tenant) {
                                    dirty.insert(tenant.clone());
                                }
                                session.give(SinkRecord::Head(head));
                            }
                            for (tenant_id, agents) in touched {
                                for (agent_id, last_sha256) in agents {
                                    session.give(SinkRecord::Emitter(Box::new(EmitterHead {
                                        tenant_id: tenant_id.clone(),
                                        agent_id,
                                        last_sha256,
                                    })));
                                }
                            }
                            let added = (chains.len() - before) as i64;
                            if added > 0 {
                                tenants_gauge.add(added);
                            }
                        }
                        (_, Some(epoch)) => {
                            // Sign a checkpoint for every owned tenant whose log grew, at
                            // the epoch's close.
                            let Some(cap) = checkpoint_cap.as_mut() else {
                                break;
                            };
                            let now = now_us();
                            let mut session = output.session(&*cap);
                            for tenant in std::mem::take(&mut dirty) {
                                let Some(log) = chains.get_mut(&tenant) else {
                                    continue;
                                };
                                let cp = signer.checkpoint(
                                    &tenant,
                                    log.merkle.size(),
                                    &log.merkle.root(),
                                    &log.head,
                                    epoch,
                                    now,
                                    &log.last_checkpoint,
                                );
                                log.last_checkpoint = cp.hash();
                                signed.inc();
                                session.give(SinkRecord::Checkpoint(Box::new(cp)));
                            }
                            drop(session);
                            cap.downgrade(&(epoch + 1));
                        }
                        _ => {
                            // Input closed and every epoch with data checkpointed.
                            if done_below.is_none() {
                                checkpoint_cap = None;
                            }
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// Checks an event against its emitter's chain and records it as the emitter's last event.
/// Returns the quarantine record on a break.
pub fn check_emitter_chain(
    emitters: &mut EmitterState,
    sourced: &SourcedEvent,
) -> Option<Quarantined> {
    let event = &sourced.event;
    let key = (event.tenant_id.as_str().to_string(), event.agent_id.clone());
    let previous = emitters.insert(key, sourced.raw_sha256);
    let claimed = event.previous_event_hash.as_deref()?;
    let expected = hex::encode(previous.unwrap_or([0; 32]));
    // With no earlier event of the agent in this process (its first event, or the first after
    // a restart) the claimed predecessor cannot be checked: the chain is checked from here on.
    if claimed == expected || previous.is_none() {
        return None;
    }
    Some(Quarantined {
        partition: sourced.partition,
        offset: sourced.offset,
        reason_kind: "emitter_chain_break".into(),
        reason: format!(
            "previous_event_hash {claimed} does not match the last event of agent {:?} ({expected})",
            event.agent_id
        ),
        tenant_id: Some(event.tenant_id.as_str().to_string()),
        raw_len: 0,
        raw_sha256: hex::encode(sourced.raw_sha256),
        raw_redacted: serde_json::to_string(event).unwrap_or_default(),
        raw: serde_json::to_vec(event).unwrap_or_default(),
    })
}

/// Appends one event to its tenant's log.
pub fn append(chains: &mut ChainState, sourced: SourcedEvent) -> ChainedEvent {
    let SourcedEvent {
        partition,
        offset,
        event,
        vault,
        ..
    } = sourced;
    // One lookup for a known tenant; the key is allocated only for a new one.
    let log = match chains.get_mut(event.tenant_id.as_str()) {
        Some(log) => log,
        None => chains
            .entry(event.tenant_id.as_str().to_string())
            .or_default(),
    };
    let seq = log.merkle.size();
    let prev_hash = log.head;
    let leaf = event_leaf(&event, seq);
    let hash = chain_hash(&prev_hash, &leaf);
    log.merkle.append(leaf);
    log.head = hash;
    ChainedEvent {
        partition,
        offset,
        event,
        seq,
        prev_hash,
        hash,
        leaf_hash: leaf,
        vault,
    }
}

#[cfg(test)]
mod tests {
    use timely::dataflow::operators::{Capture, ToStream};

    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::merkle;
    use crate::test_util::captured;

    fn event(tenant: &str, offset: i64) -> SourcedEvent {
        let text =
            include_str!("../../../schemas/testdata/event_v1_model_decision.json").to_string();
        let mut event = custody_schemas::decode_event(text.as_bytes()).unwrap();
        event.tenant_id = custody_schemas::TenantId::new(tenant);
        event.event_id = format!("e-{tenant}-{offset}");
        SourcedEvent {
            partition: 0,
            offset,
            event,
            raw_sha256: [offset as u8; 32],
            vault: Vec::new(),
        }
    }

    #[test]
    fn emitter_chain_breaks_are_quarantined_once() {
        let mut emitters = HashMap::new();
        let mut e0 = event("a", 0);
        e0.event.previous_event_hash = Some(hex::encode([0u8; 32]));
        assert!(check_emitter_chain(&mut emitters, &e0).is_none());
        let mut e1 = event("a", 1);
        e1.event.previous_event_hash = Some(hex::encode(e0.raw_sha256));
        assert!(check_emitter_chain(&mut emitters, &e1).is_none());
        let mut e2 = event("a", 2);
        e2.event.previous_event_hash = Some(hex::encode([42u8; 32]));
        let q = check_emitter_chain(&mut emitters, &e2).unwrap();
        assert_eq!(q.reason_kind, "emitter_chain_break");
        let mut e3 = event("a", 3);
        e3.event.previous_event_hash = Some(hex::encode(e2.raw_sha256));
        assert!(check_emitter_chain(&mut emitters, &e3).is_none());
        // Another tenant's agent of the same name has its own chain.
        let mut b0 = event("b", 4);
        b0.event.previous_event_hash = Some(hex::encode(e3.raw_sha256));
        assert!(check_emitter_chain(&mut emitters, &b0).is_none());
    }

    #[test]
    fn chains_are_per_tenant_gap_free_and_ordered_by_offset() {
        // Out of order on purpose: the operator orders by offset within an epoch.
        let input = vec![
            event("b", 3),
            event("a", 2),
            event("a", 0),
            event("b", 1),
            event("a", 4),
        ];
        let metrics = Metrics::new();
        let signer = Signer::from_seed(&[1; 32]);
        let public = signer.public_key();
        let out = timely::example(move |scope| {
            input
                .to_stream(scope)
                .hash_chain(
                    Arc::new(ChainState::new()),
                    Arc::new(EmitterState::new()),
                    signer,
                    0,
                    &metrics,
                )
                .capture()
        });
        let records = captured(out);
        let mut out: Vec<ChainedEvent> = Vec::new();
        let mut checkpoints = Vec::new();
        for r in records {
            match r {
                SinkRecord::Event(e) => out.push(*e),
                SinkRecord::Checkpoint(c) => checkpoints.push(*c),
                _ => {}
            }
        }
        out.sort_by_key(|c| (c.event.tenant_id.clone(), c.seq));
        let summary: Vec<(&str, u64, i64)> = out
            .iter()
            .map(|c| (c.event.tenant_id.as_str(), c.seq, c.offset))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", 0, 0),
                ("a", 1, 2),
                ("a", 2, 4),
                ("b", 0, 1),
                ("b", 1, 3)
            ]
        );
        for pair in out.windows(2) {
            if pair[0].event.tenant_id == pair[1].event.tenant_id {
                assert_eq!(pair[1].prev_hash, pair[0].hash);
            }
        }
        assert_eq!(out[0].prev_hash, [0; 32]);
        // One checkpoint per tenant for the one epoch, with the right root and size.
        checkpoints.sort_by(|x, y| x.tenant_id.cmp(&y.tenant_id));
        assert_eq!(checkpoints.len(), 2);
        let a_leaves: Vec<[u8; 32]> = out[..3].iter().map(|c| c.leaf_hash).collect();
        assert_eq!(checkpoints[0].tree_size, 3);
        assert_eq!(checkpoints[0].root, hex::encode(merkle::root(&a_leaves)));
        assert_eq!(checkpoints[0].chain_head, hex::encode(out[2].hash));
        assert!(checkpoints.iter().all(|c| c.verify(&public)));
    }

    /// Several epochs completing at once (many in flight): each epoch's checkpoint covers
    /// exactly the events up to that epoch, never a later epoch's.
    #[test]
    fn epochs_closing_together_are_checkpointed_in_order() {
        use timely::dataflow::operators::Input;
        let metrics = Metrics::new();
        let signer = Signer::from_seed(&[1; 32]);
        let out = timely::example(move |scope| {
            let (mut input, stream) = scope.new_input::<Vec<SourcedEvent>>();
            let rx = stream
                .hash_chain(
                    Arc::new(ChainState::new()),
                    Arc::new(EmitterState::new()),
                    signer,
                    0,
                    &metrics,
                )
                .capture();
            // Three epochs sent before the frontier moves past any of them.
            for epoch in 0..3u64 {
                input.advance_to(epoch);
                for i in 0..=epoch as i64 {
                    input.send(event("a", epoch as i64 * 10 + i));
                }
            }
            rx
        });
        let mut sizes: Vec<(Epoch, u64)> = captured(out)
            .into_iter()
            .filter_map(|r| match r {
                SinkRecord::Checkpoint(c) => Some((c.epoch, c.tree_size)),
                _ => None,
            })
            .collect();
        sizes.sort();
        assert_eq!(sizes, [(0, 1), (1, 3), (2, 6)]);
    }

    /// Only the tenants whose logs grew are checkpointed at an epoch's close: an idle tenant
    /// (here `b` after epoch 0, and `r`, resumed and never touched) signs nothing, and a
    /// tenant's checkpoints still chain across the epochs it skipped.
    #[test]
    fn only_tenants_whose_logs_grew_are_checkpointed() {
        use timely::dataflow::operators::Input;
        let metrics = Metrics::new();
        let signer = Signer::from_seed(&[1; 32]);
        let mut resumed = ChainState::new();
        let mut merkle = CompactRange::new();
        merkle.append([3; 32]);
        resumed.insert(
            "r".into(),
            TenantLog {
                head: [3; 32],
                merkle,
                last_checkpoint: [4; 32],
            },
        );
        let out = timely::example(move |scope| {
            let (mut input, stream) = scope.new_input::<Vec<SourcedEvent>>();
            let rx = stream
                .hash_chain(
                    Arc::new(resumed),
                    Arc::new(EmitterState::new()),
                    signer,
                    0,
                    &metrics,
                )
                .capture();
            let batches: [&[(&str, i64)]; 4] = [
                &[("a", 0), ("b", 1)],
                &[("a", 2)],
                &[],
                &[("a", 3), ("a", 4)],
            ];
            for (epoch, batch) in batches.iter().enumerate() {
                input.advance_to(epoch as u64);
                for (tenant, offset) in batch.iter() {
                    input.send(event(tenant, *offset));
                }
            }
            rx
        });
        let mut cps: Vec<Checkpoint> = captured(out)
            .into_iter()
            .filter_map(|r| match r {
                SinkRecord::Checkpoint(c) => Some(*c),
                _ => None,
            })
            .collect();
        cps.sort_by_key(|c| (c.epoch, c.tenant_id.clone()));
        let got: Vec<(Epoch, &str, u64)> = cps
            .iter()
            .map(|c| (c.epoch, c.tenant_id.as_str(), c.tree_size))
            .collect();
        assert_eq!(got, [(0, "a", 1), (0, "b", 1), (1, "a", 2), (3, "a", 4)]);
        assert_eq!(cps[3].prev_checkpoint, hex::encode(cps[2].hash()));
    }

    #[test]
    fn resumes_from_given_logs() {
        let mut chains = ChainState::new();
        let mut merkle = CompactRange::new();
        for i in 0..7u8 {
            merkle.append([i; 32]);
        }
        chains.insert(
            "a".into(),
            TenantLog {
                head: [9; 32],
                merkle,
                last_checkpoint: [0; 32],
            },
        );
        let c = append(&mut chains, event("a", 0));
        assert_eq!((c.seq, c.prev_hash), (7, [9; 32]));
        assert_eq!(chains["a"].merkle.size(), 8);
        assert_eq!(chains["a"].head, c.hash);
    }
}
