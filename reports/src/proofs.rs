//! The proof API's state: every tenant's latest signed checkpoint in memory (one per tenant),
//! and its tree and event index on disk ([`ProofStore`]), read on demand, kept in step with
//! committed epochs.

use std::collections::HashMap;
use std::ops::Range;

use custody_operators::checkpoint::Checkpoint;
use custody_operators::merkle::Hash;
use custody_operators::proof_store::{ChainHashes, ProofStore, StoredEvent};
use custody_operators::record::{Epoch, WrittenEvent};
use serde::Serialize;

/// Every tenant's latest checkpoint, and the proof store.
#[derive(Debug, Default)]
pub struct LiveLogs {
    latest: HashMap<String, Checkpoint>,
    store: Option<ProofStore>,
}

/// Where an event is in its tenant's log ([`LiveLogs::locate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    /// At this position.
    At(u64),
    /// Somewhere among these positions (the index does not cover them).
    Within(Range<u64>),
    /// Not in the log (as of its latest checkpoint).
    Nowhere,
}

/// Why a proof cannot be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// No such tenant or event.
    #[error("not found")]
    NotFound,
    /// The request is not answerable (sizes out of range, event not yet checkpointed).
    #[error("{0}")]
    Invalid(String),
}

/// An inclusion proof against a signed checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct InclusionProof {
    /// Tenant.
    pub tenant_id: String,
    /// Event.
    pub event_id: String,
    /// Its position (leaf index).
    pub seq: u64,
    /// Its leaf hash, hex.
    pub leaf_hash: String,
    /// The tree size the proof is for (the checkpoint's).
    pub tree_size: u64,
    /// The audit path, hex, leaf to root (RFC 6962).
    pub proof: Vec<String>,
    /// The signed checkpoint whose root the proof leads to.
    pub checkpoint: Checkpoint,
}

/// A consistency proof between two tree sizes.
#[derive(Clone, Debug, Serialize)]
pub struct ConsistencyProof {
    /// Tenant.
    pub tenant_id: String,
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// Root at `from`, hex.
    pub from_root: String,
    /// Root at `to`, hex.
    pub to_root: String,
    /// The proof, hex (RFC 6962).
    pub proof: Vec<String>,
}

fn hexes(hashes: Vec<Hash>) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn io(e: std::io::Error) -> ProofError {
    ProofError::Invalid(format!("proof store: {e}"))
}

impl LiveLogs {
    /// The logs over `store`, with the latest committed checkpoints.
    pub fn new(store: ProofStore, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Self {
        let mut logs = LiveLogs {
            latest: HashMap::new(),
            store: Some(store),
        };
        for cp in checkpoints {
            logs.note_checkpoint(cp);
        }
        logs
    }

    fn note_checkpoint(&mut self, cp: Checkpoint) {
        match self.latest.get(&cp.tenant_id) {
            Some(l) if cp.epoch < l.epoch => {}
            _ => {
                self.latest.insert(cp.tenant_id.clone(), cp);
            }
        }
    }

    /// Applies one committed epoch: its events go to the store, its checkpoints replace the
    /// tenants' latest.
    pub fn apply(
        &mut self,
        epoch: Epoch,
        events: &[WrittenEvent],
        checkpoints: &[Checkpoint],
    ) -> std::io::Result<()> {
        if let Some(store) = &mut self.store {
            store.append(
                epoch,
                events.iter().map(|e| StoredEvent {
                    tenant: &e.tenant_id,
                    seq: e.seq,
                    event_id: &e.event_id,
                    session_id: &e.session_id,
                    leaf: e.leaf_hash,
                    hash: e.hash,
                }),
            )?;
        }
        for cp in checkpoints {
            self.note_checkpoint(cp.clone());
        }
        Ok(())
    }

    /// The latest signed checkpoint of `tenant`.
    pub fn latest_checkpoint(&self, tenant: &str) -> Option<&Checkpoint> {
        self.latest.get(tenant)
    }

    /// Every tenant's latest signed checkpoint, in tenant order (what a witness cosigns).
    pub fn latest_checkpoints(&self) -> Vec<Checkpoint> {
        let mut out: Vec<Checkpoint> = self.latest.values().cloned().collect();
        out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        out
    }

    /// The position of `event_id` in `tenant`'s log, from the event index (no lake scan);
    /// `None` if it is not indexed (yet).
    pub fn seq_of(&self, tenant: &str, event_id: &str) -> Option<u64> {
        self.store.as_ref()?.lookup(tenant, event_id).ok().flatten()
    }

    /// The positions of `tenant`'s log that hold `session_id`'s events, as of the tenant's
    /// latest checkpoint (what the API serves): from the event index, which covers every
    /// checkpointed position (epochs are stored before their checkpoints are noted, both
    /// under the caller's one borrow), and the positions it does not cover should it lag.
    /// Empty for a tenant with no checkpoint; `0..size` without a store.
    pub fn session_positions(&self, tenant: &str, session_id: &str) -> Vec<Range<u64>> {
        let Some(end) = self.latest.get(tenant).map(|cp| cp.tree_size) else {
            return Vec::new();
        };
        let Some(span) = self
            .store
            .as_ref()
            .and_then(|s| s.session_span(tenant, session_id).ok())
        else {
            return std::iter::once(0..end).collect();
        };
        let indexed = span.indexed.min(end);
        let mut out = Vec::new();
        if let Some((first, last)) = span.stored {
            let stop = (last + 1).min(indexed);
            if first < stop {
                out.push(first..stop);
            }
        }
        if indexed < end {
            match out.last_mut() {
                Some(r) if r.end == indexed => r.end = end,
                _ => out.push(indexed..end),
            }
        }
        out
    }

    /// Where `event_id` is in `tenant`'s log, as of its latest checkpoint: at a position of
    /// the event index, among the positions the index does not cover (should it lag), or
    /// nowhere.
    pub fn locate(&self, tenant: &str, event_id: &str) -> Located {
        let Some(end) = self.latest.get(tenant).map(|cp| cp.tree_size) else {
            return Located::Nowhere;
        };
        let Some(store) = self.store.as_ref() else {
            return Located::Within(0..end);
        };
        if let Ok(Some(seq)) = store.lookup(tenant, event_id) {
            return if seq < end {
                Located::At(seq)
            } else {
                Located::Nowhere
            };
        }
        match ChainHashes::at(store.dir()).len(tenant) {
            Ok(indexed) if indexed >= end => Located::Nowhere,
            Ok(indexed) => Located::Within(indexed..end),
            Err(_) => Located::Within(0..end),
        }
    }

    /// Proves that `event_id` is in `tenant`'s log at its latest checkpoint.
    pub fn inclusion(
        &mut self,
        tenant: &str,
        event_id: &str,
    ) -> Result<InclusionProof, ProofError> {
        let checkpoint = self
            .latest
            .get(tenant)
            .cloned()
            .ok_or(ProofError::NotFound)?;
        let store = self.store.as_mut().ok_or(ProofError::NotFound)?;
        let seq = store
            .lookup(tenant, event_id)
            .map_err(io)?
            .ok_or(ProofError::NotFound)?;
        let size = checkpoint.tree_size;
        if seq >= size {
            return Err(ProofError::Invalid(
                "event not covered by a checkpoint yet".into(),
            ));
        }
        let tree = store
            .reader(tenant, size)
            .map_err(io)?
            .ok_or_else(|| ProofError::Invalid("event not covered by a checkpoint yet".into()))?;
        Ok(InclusionProof {
            tenant_id: tenant.to_string(),
            event_id: event_id.to_string(),
            seq,
            leaf_hash: hex::encode(tree.leaf(seq).map_err(io)?),
            tree_size: size,
            proof: hexes(tree.inclusion_proof(seq).map_err(io)?),
            checkpoint,
        })
    }

    /// Proves that `tenant`'s log at size `to` extends its log at size `from`.
    pub fn consistency(
        &mut self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, ProofError> {
        if !self.latest.contains_key(tenant) {
            return Err(ProofError::NotFound);
        }
        let store = self.store.as_mut().ok_or(ProofError::NotFound)?;
        let n = store.size(tenant).map_err(io)?;
        if from == 0 || from > to || to > n {
            return Err(ProofError::Invalid(format!(
                "need 0 < from <= to <= {n}, got from={from} to={to}"
            )));
        }
        let tree = store
            .reader(tenant, to)
            .map_err(io)?
            .ok_or(ProofError::NotFound)?;
        Ok(ConsistencyProof {
            tenant_id: tenant.to_string(),
            from,
            to,
            from_root: hex::encode(tree.root(from).map_err(io)?),
            to_root: hex::encode(tree.root(to).map_err(io)?),
            proof: hexes(tree.consistency_proof(from).map_err(io)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use custody_operators::checkpoint::Signer;
    use custody_operators::merkle;

    use super::*;

    #[test]
    fn proofs_verify_against_the_signed_checkpoint() {
        let leaves: Vec<Hash> = (0..13u8).map(|i| [i; 32]).collect();
        let signer = Signer::from_seed(&[5; 32]);
        let cp = signer.checkpoint("t", 13, &merkle::root(&leaves), &[0; 32], 4, 0, &[0; 32]);
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProofStore::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..13).map(|i| format!("e{i}")).collect();
        store
            .append(
                4,
                leaves.iter().enumerate().map(|(i, l)| StoredEvent {
                    tenant: "t",
                    seq: i as u64,
                    event_id: ids[i].as_str(),
                    session_id: "s",
                    leaf: *l,
                    hash: *l,
                }),
            )
            .unwrap();
        let mut logs = LiveLogs::new(store, [cp]);
        let p = logs.inclusion("t", "e6").unwrap();
        let proof: Vec<Hash> = p
            .proof
            .iter()
            .map(|h| hex::decode(h).unwrap().try_into().unwrap())
            .collect();
        let root: Hash = hex::decode(&p.checkpoint.root).unwrap().try_into().unwrap();
        assert!(p.checkpoint.verify(&signer.public_key()));
        assert!(merkle::verify_inclusion(&leaves[6], 6, 13, &proof, &root));
        assert_eq!(
            logs.inclusion("t", "nope").unwrap_err(),
            ProofError::NotFound
        );
        assert_eq!(logs.inclusion("u", "e6").unwrap_err(), ProofError::NotFound);

        let c = logs.consistency("t", 5, 13).unwrap();
        let proof: Vec<Hash> = c
            .proof
            .iter()
            .map(|h| hex::decode(h).unwrap().try_into().unwrap())
            .collect();
        assert!(merkle::verify_consistency(
            5,
            13,
            &merkle::root(&leaves[..5]),
            &root,
            &proof
        ));
        assert!(logs.consistency("t", 0, 13).is_err());
        assert!(logs.consistency("t", 5, 14).is_err());
    }

    /// Sessions and events are located as of the latest checkpoint: by the index where it
    /// covers them, among the positions it does not cover where it lags, never past the
    /// checkpoint.
    #[test]
    // Lists of position ranges, one range long.
    #[allow(clippy::single_range_in_vec_init)]
    fn sessions_and_events_are_located_as_of_the_checkpoint() {
        let signer = Signer::from_seed(&[5; 32]);
        let leaves: Vec<Hash> = (0..20u8).map(|i| [i; 32]).collect();
        let cp = |size: usize| {
            let root = merkle::root(&leaves[..size]);
            signer.checkpoint("t", size as u64, &root, &[0; 32], 1, 0, &[0; 32])
        };
        // Session "a" at 2, 5, 9; "b" everywhere else; 0..10 stored.
        let session = |i: usize| if [2, 5, 9].contains(&i) { "a" } else { "b" };
        let ids: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
        let store_of = |dir: &std::path::Path, n: usize| {
            let mut store = ProofStore::open(dir).unwrap();
            store
                .append(
                    1,
                    (0..n).map(|i| StoredEvent {
                        tenant: "t",
                        seq: i as u64,
                        event_id: ids[i].as_str(),
                        session_id: session(i),
                        leaf: leaves[i],
                        hash: leaves[i],
                    }),
                )
                .unwrap();
            store
        };
        let dir = tempfile::tempdir().unwrap();
        // The index ahead of the checkpoint: nothing past the checkpoint is served.
        let logs = LiveLogs::new(store_of(dir.path(), 10), [cp(6)]);
        assert_eq!(logs.session_positions("t", "a"), [2..6]);
        assert_eq!(logs.session_positions("t", "b"), [0..6]);
        assert_eq!(logs.session_positions("t", "c"), Vec::<Range<u64>>::new());
        assert_eq!(logs.session_positions("u", "a"), Vec::<Range<u64>>::new());
        assert_eq!(logs.locate("t", "e5"), Located::At(5));
        assert_eq!(logs.locate("t", "e9"), Located::Nowhere);
        assert_eq!(logs.locate("t", "e19"), Located::Nowhere);
        assert_eq!(logs.locate("u", "e5"), Located::Nowhere);
        // The index behind it: what it does not cover is read too.
        let logs = LiveLogs::new(ProofStore::open(dir.path()).unwrap(), [cp(20)]);
        assert_eq!(logs.session_positions("t", "a"), [2..20]);
        assert_eq!(logs.session_positions("t", "c"), [10..20]);
        assert_eq!(logs.locate("t", "e9"), Located::At(9));
        assert_eq!(logs.locate("t", "e15"), Located::Within(10..20));
        // Without a store, everything up to the checkpoint.
        let logs = LiveLogs {
            latest: HashMap::from([("t".to_string(), cp(8))]),
            store: None,
        };
        assert_eq!(logs.session_positions("t", "a"), [0..8]);
        assert_eq!(logs.locate("t", "e1"), Located::Within(0..8));
    }
}
