//! Assign each event its place in its tenant's append-only hash chain.
//!
//! # Inputs
//! Tokenized [`SourcedEvent`]s at [`Epoch`] timestamps, exchanged by `tenant_id`, so one worker
//! owns each tenant's chain.
//!
//! # Outputs
//! [`ChainedEvent`]s: `seq` (0-based, gap-free per tenant), `prev_hash`, `hash`
//! (see [`crate::hashing`]) and the canonical payload JSON.
//!
//! # State
//! One `(next_seq, head_hash)` per tenant owned by this worker (grows with the tenant count,
//! never compacted: chains are forever), plus the events of epochs not yet complete.
//!
//! # Progress
//! Holds a capability per buffered epoch until the input frontier passes it; within an epoch
//! events are chained in `(partition, offset)` order, so the result is deterministic however
//! the input was batched or exchanged.
//!
//! # Metrics
//! `custody_operator_events_{received,sent}_total{operator="hash_chain"}`, `custody_tenants`.
//!
//! # Failure modes
//! None at run time. Chains resume from the heads committed to the lake
//! ([`ChainState`] passed in at start-up).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::hashing::{canonical_event, canonical_json, chain_hash, leaf_hash};
use crate::metrics::Metrics;
use crate::record::{ChainedEvent, Epoch, SourcedEvent};

/// The head of every tenant's chain: `tenant -> (next seq, hash of the last event)`.
pub type ChainState = HashMap<String, (u64, [u8; 32])>;

/// A stable hash of a tenant id, used to route a tenant to its worker.
pub fn tenant_route(tenant: &str) -> u64 {
    let mut h = DefaultHasher::new();
    tenant.hash(&mut h);
    h.finish()
}

/// Hash-chains events per tenant; see the module docs.
pub trait HashChain<'scope> {
    /// Appends each event to its tenant's chain, starting from `heads`.
    fn hash_chain(
        self,
        heads: Arc<ChainState>,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, ChainedEvent>;
}

impl<'scope> HashChain<'scope> for StreamVec<'scope, Epoch, SourcedEvent> {
    fn hash_chain(
        self,
        heads: Arc<ChainState>,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, ChainedEvent> {
        let op = metrics.operator("hash_chain");
        let tenants_gauge = metrics.tenants.clone();
        let pact = Exchange::new(|e: &SourcedEvent| tenant_route(e.event.tenant_id.as_str()));
        let peers = self.scope().peers() as u64;
        let index = self.scope().index() as u64;
        self.unary_frontier(pact, "HashChain", move |_cap, _info| {
            // Only the chains this worker owns.
            let mut chains: ChainState = heads
                .iter()
                .filter(|(t, _)| tenant_route(t) % peers == index)
                .map(|(t, h)| (t.clone(), *h))
                .collect();
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<SourcedEvent>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let entry = pending
                        .entry(*cap.time())
                        .or_insert_with(|| (cap.clone(), Vec::new()));
                    for batch in data {
                        op.received.inc_by(batch.len() as u64);
                        entry.1.append(batch);
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, mut events) = entry.remove();
                    events.sort_by_key(|e| (e.partition, e.offset));
                    let before = chains.len();
                    let mut session = output.session(&cap);
                    op.sent.inc_by(events.len() as u64);
                    for sourced in events {
                        session.give(append(&mut chains, sourced));
                    }
                    let added = (chains.len() - before) as i64;
                    if added > 0 {
                        tenants_gauge.add(added);
                    }
                }
            }
        })
    }
}

/// Appends one event to its tenant's chain.
pub fn append(chains: &mut ChainState, sourced: SourcedEvent) -> ChainedEvent {
    let SourcedEvent {
        partition,
        offset,
        event,
    } = sourced;
    let (next_seq, head) = chains
        .entry(event.tenant_id.as_str().to_string())
        .or_insert((0, [0u8; 32]));
    let seq = *next_seq;
    let prev_hash = *head;
    let hash = chain_hash(&prev_hash, &leaf_hash(&canonical_event(&event, seq)));
    *next_seq += 1;
    *head = hash;
    ChainedEvent {
        partition,
        offset,
        payload_json: canonical_json(&event.payload),
        event,
        seq,
        prev_hash,
        hash,
    }
}

#[cfg(test)]
mod tests {
    use timely::dataflow::operators::{Capture, ToStream};

    use super::*;
    use crate::test_util::captured;

    fn event(tenant: &str, offset: i64) -> SourcedEvent {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/testdata/event_v1_model_decision.json"
        ))
        .unwrap();
        let mut event = custody_schemas::decode_event(text.as_bytes()).unwrap();
        event.tenant_id = custody_schemas::TenantId::new(tenant);
        event.event_id = format!("e-{tenant}-{offset}");
        SourcedEvent {
            partition: 0,
            offset,
            event,
        }
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
        let out = timely::example(move |scope| {
            input
                .to_stream(scope)
                .hash_chain(Arc::new(ChainState::new()), &metrics)
                .capture()
        });
        let mut out: Vec<ChainedEvent> = captured(out);
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
    }

    #[test]
    fn resumes_from_given_heads() {
        let mut chains = ChainState::new();
        chains.insert("a".into(), (7, [9; 32]));
        let c = append(&mut chains, event("a", 0));
        assert_eq!((c.seq, c.prev_hash), (7, [9; 32]));
        assert_eq!(chains["a"], (8, c.hash));
    }
}
