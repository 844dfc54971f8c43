//! The proof API's state: every tenant's latest signed checkpoint in memory (one per tenant),
//! and its tree and event index on disk ([`ProofStore`]), read on demand, kept in step with
//! committed epochs.

use std::collections::HashMap;

use custody_operators::checkpoint::Checkpoint;
use custody_operators::merkle::Hash;
use custody_operators::proof_store::ProofStore;
use custody_operators::record::{Epoch, WrittenEvent};
use serde::Serialize;

/// Every tenant's latest checkpoint, and the proof store.
#[derive(Debug, Default)]
pub struct LiveLogs {
    latest: HashMap<String, Checkpoint>,
    store: Option<ProofStore>,
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
                events.iter().map(|e| {
                    (
                        e.tenant_id.as_str(),
                        e.seq,
                        e.event_id.as_str(),
                        e.leaf_hash,
                        e.hash,
                    )
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
                leaves
                    .iter()
                    .enumerate()
                    .map(|(i, l)| ("t", i as u64, ids[i].as_str(), *l, *l)),
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
}
