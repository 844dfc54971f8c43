//! Witness cosignatures, in the spirit of C2SP tlog-witness: a witness holds its own key, keeps
//! the last checkpoint it cosigned per tenant, and cosigns a new checkpoint only if it is
//! consistent with that one (same or larger tree, RFC 9162 consistency proof between them). A
//! verifier that trusts the witness key then knows the log it checks has not been truncated,
//! rolled back or forked behind the witness's back, without holding a checkpoint itself.
//!
//! The signed message is `custody-cosignature/v1\n` followed by the canonical JSON of
//! `{checkpoint, cosigned_at, key_id, tenant_id, tree_size}`, where `checkpoint` is the
//! cosigned checkpoint's hash ([`Checkpoint::hash`]) and `key_id` the witness key's id.

use custody_schemas::time::format_rfc3339;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::{Checkpoint, Signer, verify_signed};
use crate::hashing::canonical_json;

/// Domain separation prefix of the signed message.
pub const COSIGNATURE_DOMAIN: &str = "custody-cosignature/v1\n";

/// A witness's signature on one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// Tenant.
    pub tenant_id: String,
    /// Hash of the cosigned checkpoint, hex.
    pub checkpoint: String,
    /// Its tree size.
    pub tree_size: u64,
    /// When the witness cosigned.
    pub cosigned_at: String,
    /// Id of the witness key.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

impl Cosignature {
    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        let mut map = Map::new();
        map.insert("checkpoint".into(), Value::from(self.checkpoint.as_str()));
        map.insert("cosigned_at".into(), Value::from(self.cosigned_at.as_str()));
        map.insert("key_id".into(), Value::from(self.key_id.as_str()));
        map.insert("tenant_id".into(), Value::from(self.tenant_id.as_str()));
        map.insert("tree_size".into(), Value::from(self.tree_size));
        let mut out = COSIGNATURE_DOMAIN.as_bytes().to_vec();
        out.extend(canonical_json(&Value::Object(map)).into_bytes());
        out
    }

    /// Whether this is a valid cosignature of `cp` under the witness key `key`.
    pub fn verify(&self, cp: &Checkpoint, key: &VerifyingKey) -> bool {
        self.tenant_id == cp.tenant_id
            && self.tree_size == cp.tree_size
            && self.checkpoint == hex::encode(cp.hash())
            && verify_signed(key, &self.key_id, &self.message(), &self.signature)
    }
}

impl Signer {
    /// Cosigns `cp` as a witness, now.
    pub fn cosign(&self, cp: &Checkpoint, now_us: i64) -> Cosignature {
        let mut c = Cosignature {
            tenant_id: cp.tenant_id.clone(),
            checkpoint: hex::encode(cp.hash()),
            tree_size: cp.tree_size,
            cosigned_at: format_rfc3339(now_us),
            key_id: self.key_id().to_string(),
            signature: String::new(),
        };
        c.signature = self.sign_bytes(&c.message());
        c
    }
}

/// A checkpoint with the witness's cosignature: what a witness publishes per tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessed {
    /// The log's checkpoint.
    pub checkpoint: Checkpoint,
    /// The witness's cosignature of it.
    pub cosignature: Cosignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosignatures_bind_the_checkpoint_and_the_witness() {
        let log = Signer::from_seed(&[1; 32]);
        let witness = Signer::from_seed(&[2; 32]);
        let cp = log.checkpoint("acme", 5, &[3; 32], &[4; 32], 7, 0, &[0; 32]);
        let co = witness.cosign(&cp, 0);
        assert!(co.verify(&cp, &witness.public_key()));
        assert!(!co.verify(&cp, &log.public_key()));
        let other = log.checkpoint("acme", 6, &[3; 32], &[4; 32], 8, 0, &[0; 32]);
        assert!(!co.verify(&other, &witness.public_key()));
        let mut bad = co.clone();
        bad.tree_size = 4;
        assert!(!bad.verify(&cp, &witness.public_key()));
    }
}
