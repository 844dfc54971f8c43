//! Live per-tenant logs for the proof API: every leaf hash, the event id index, and the latest
//! signed checkpoint, kept in step with committed epochs.

use std::collections::HashMap;

use custody_operators::checkpoint::Checkpoint;
use custody_operators::merkle::{self, Hash};
use custody_operators::record::ChainedEvent;
use serde::Serialize;

#[derive(Clone, Debug, Default)]
struct TenantLog {
    leaves: Vec<Hash>,
    ids: HashMap<String, u64>,
    latest: Option<Checkpoint>,
}

/// Every tenant's leaves and latest checkpoint.
#[derive(Clone, Debug, Default)]
pub struct LiveLogs {
    tenants: HashMap<String, TenantLog>,
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

impl LiveLogs {
    /// Loads committed state: `(tenant, seq, event_id, leaf)` rows and checkpoints.
    pub fn load(
        rows: impl IntoIterator<Item = (String, u64, String, Hash)>,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
    ) -> Self {
        let mut by_tenant: HashMap<String, Vec<(u64, String, Hash)>> = HashMap::new();
        for (tenant, seq, id, leaf) in rows {
            by_tenant.entry(tenant).or_default().push((seq, id, leaf));
        }
        let mut logs = LiveLogs::default();
        for (tenant, mut rows) in by_tenant {
            rows.sort_by_key(|r| r.0);
            let log = logs.tenants.entry(tenant).or_default();
            for (seq, id, leaf) in rows {
                log.ids.insert(id, seq);
                log.leaves.push(leaf);
            }
        }
        for cp in checkpoints {
            logs.note_checkpoint(cp);
        }
        logs
    }

    fn note_checkpoint(&mut self, cp: Checkpoint) {
        let log = self.tenants.entry(cp.tenant_id.clone()).or_default();
        if log.latest.as_ref().is_none_or(|l| cp.epoch >= l.epoch) {
            log.latest = Some(cp);
        }
    }

    /// Applies one committed epoch (events sorted by tenant and seq).
    pub fn apply(&mut self, events: &[ChainedEvent], checkpoints: &[Checkpoint]) {
        for e in events {
            let log = self
                .tenants
                .entry(e.event.tenant_id.as_str().to_string())
                .or_default();
            if e.seq == log.leaves.len() as u64 {
                log.ids.insert(e.event.event_id.clone(), e.seq);
                log.leaves.push(e.leaf_hash);
            }
        }
        for cp in checkpoints {
            self.note_checkpoint(cp.clone());
        }
    }

    /// The latest signed checkpoint of `tenant`.
    pub fn latest_checkpoint(&self, tenant: &str) -> Option<&Checkpoint> {
        self.tenants.get(tenant)?.latest.as_ref()
    }

    /// Every tenant's latest signed checkpoint, in tenant order (what a witness cosigns).
    pub fn latest_checkpoints(&self) -> Vec<Checkpoint> {
        let mut out: Vec<Checkpoint> = self
            .tenants
            .values()
            .filter_map(|l| l.latest.clone())
            .collect();
        out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        out
    }

    /// Proves that `event_id` is in `tenant`'s log at its latest checkpoint.
    pub fn inclusion(&self, tenant: &str, event_id: &str) -> Result<InclusionProof, ProofError> {
        let log = self.tenants.get(tenant).ok_or(ProofError::NotFound)?;
        let seq = *log.ids.get(event_id).ok_or(ProofError::NotFound)?;
        let checkpoint = log.latest.clone().ok_or(ProofError::NotFound)?;
        let size = checkpoint.tree_size as usize;
        if seq as usize >= size || size > log.leaves.len() {
            return Err(ProofError::Invalid(
                "event not covered by a checkpoint yet".into(),
            ));
        }
        let proof = merkle::inclusion_proof(&log.leaves[..size], seq as usize)
            .ok_or_else(|| ProofError::Invalid("no proof".into()))?;
        Ok(InclusionProof {
            tenant_id: tenant.to_string(),
            event_id: event_id.to_string(),
            seq,
            leaf_hash: hex::encode(log.leaves[seq as usize]),
            tree_size: size as u64,
            proof: hexes(proof),
            checkpoint,
        })
    }

    /// Proves that `tenant`'s log at size `to` extends its log at size `from`.
    pub fn consistency(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, ProofError> {
        let log = self.tenants.get(tenant).ok_or(ProofError::NotFound)?;
        let n = log.leaves.len() as u64;
        if from == 0 || from > to || to > n {
            return Err(ProofError::Invalid(format!(
                "need 0 < from <= to <= {n}, got from={from} to={to}"
            )));
        }
        let leaves = &log.leaves[..to as usize];
        let proof = merkle::consistency_proof(leaves, from as usize)
            .ok_or_else(|| ProofError::Invalid("no proof".into()))?;
        Ok(ConsistencyProof {
            tenant_id: tenant.to_string(),
            from,
            to,
            from_root: hex::encode(merkle::root(&leaves[..from as usize])),
            to_root: hex::encode(merkle::root(leaves)),
            proof: hexes(proof),
        })
    }
}

#[cfg(test)]
mod tests {
    use custody_operators::checkpoint::Signer;

    use super::*;

    #[test]
    fn proofs_verify_against_the_signed_checkpoint() {
        let leaves: Vec<Hash> = (0..13u8).map(|i| [i; 32]).collect();
        let signer = Signer::from_seed(&[5; 32]);
        let cp = signer.checkpoint("t", 13, &merkle::root(&leaves), &[0; 32], 4, 0, &[0; 32]);
        let logs = LiveLogs::load(
            leaves
                .iter()
                .enumerate()
                .map(|(i, l)| ("t".to_string(), i as u64, format!("e{i}"), *l)),
            [cp],
        );
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
