//! Signed per-tenant checkpoints: `(tenant, tree size, Merkle root, chain head, epoch, time)`
//! signed with Ed25519. One checkpoint per tenant per epoch, not per event.
//!
//! The signed message is `custody-checkpoint/v2\n` followed by the canonical JSON (sorted keys,
//! no whitespace) of `{chain_head, epoch, key_id, prev_checkpoint, root, signed_at, tenant_id,
//! tree_size}` with hashes in lowercase hex and `signed_at` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
//! `prev_checkpoint` is the [`Checkpoint::hash`] of the tenant's previous checkpoint (zeros for
//! its first), so a tenant's checkpoints form a chain in which a missing or replaced one shows.
//! The key id is the first 16 hex digits of SHA-256 of the 32-byte public key. See
//! `docs/chain-format.md`.

use custody_schemas::time::format_rfc3339;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::hashing::canonical_json;
use crate::merkle::Hash;
use crate::record::Epoch;

/// Domain separation prefix of the signed message.
pub const CHECKPOINT_DOMAIN: &str = "custody-checkpoint/v2\n";

/// A signed statement of one tenant's log at the close of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Tenant.
    pub tenant_id: String,
    /// Events in the log.
    pub tree_size: u64,
    /// Merkle root over the leaf hashes, hex.
    pub root: String,
    /// Chain hash of the last event (zeros for an empty log), hex.
    pub chain_head: String,
    /// The epoch that closed.
    pub epoch: Epoch,
    /// Signing time, RFC 3339 UTC with microseconds.
    pub signed_at: String,
    /// [`Checkpoint::hash`] of the tenant's previous checkpoint (zeros for its first), hex.
    pub prev_checkpoint: String,
    /// Id of the signing key.
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        let mut map = Map::new();
        map.insert("chain_head".into(), Value::from(self.chain_head.as_str()));
        map.insert("epoch".into(), Value::from(self.epoch));
        map.insert("key_id".into(), Value::from(self.key_id.as_str()));
        map.insert(
            "prev_checkpoint".into(),
            Value::from(self.prev_checkpoint.as_str()),
        );
        map.insert("root".into(), Value::from(self.root.as_str()));
        map.insert("signed_at".into(), Value::from(self.signed_at.as_str()));
        map.insert("tenant_id".into(), Value::from(self.tenant_id.as_str()));
        map.insert("tree_size".into(), Value::from(self.tree_size));
        let mut out = CHECKPOINT_DOMAIN.as_bytes().to_vec();
        out.extend(canonical_json(&Value::Object(map)).into_bytes());
        out
    }

    /// The checkpoint's identity: SHA-256 of its signed message (what the next checkpoint's
    /// `prev_checkpoint` and the epoch's tenant registry refer to).
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.message()).into()
    }

    /// Whether the signature is valid under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify_signed(key, &self.key_id, &self.message(), &self.signature)
    }
}

/// Whether `signature` (hex) is `key`'s signature of `message`, `key_id` naming `key`: the
/// check of every signed statement (checkpoints, epoch seals, cosignatures).
pub fn verify_signed(
    key: &VerifyingKey,
    key_id_hex: &str,
    message: &[u8],
    signature: &str,
) -> bool {
    let mut sig = [0u8; 64];
    if hex::decode_to_slice(signature, &mut sig).is_err() {
        return false;
    }
    key_id(key) == key_id_hex && key.verify(message, &Signature::from_bytes(&sig)).is_ok()
}

/// The id of a public key: the first 16 hex digits of SHA-256 of its bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Parses a hex-encoded 32-byte public key.
pub fn parse_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Signs checkpoints.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id }
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs arbitrary bytes (domain-separated by the caller); the signature, hex.
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// Signs a checkpoint of `tenant` at `epoch`, now, following the tenant's checkpoint
    /// whose hash is `prev` (zeros for its first).
    #[allow(clippy::too_many_arguments)]
    pub fn checkpoint(
        &self,
        tenant: &str,
        tree_size: u64,
        root: &Hash,
        chain_head: &Hash,
        epoch: Epoch,
        now_us: i64,
        prev: &Hash,
    ) -> Checkpoint {
        let mut cp = Checkpoint {
            tenant_id: tenant.to_string(),
            tree_size,
            root: hex::encode(root),
            chain_head: hex::encode(chain_head),
            epoch,
            signed_at: format_rfc3339(now_us),
            prev_checkpoint: hex::encode(prev),
            key_id: self.key_id.clone(),
            signature: String::new(),
        };
        cp.signature = hex::encode(self.key.sign(&cp.message()).to_bytes());
        cp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field_and_the_key() {
        let signer = Signer::from_seed(&[7; 32]);
        let cp = signer.checkpoint(
            "acme",
            3,
            &[1; 32],
            &[2; 32],
            9,
            1_700_000_000_000_000,
            &[0; 32],
        );
        assert!(cp.verify(&signer.public_key()));
        let mut bad = cp.clone();
        bad.prev_checkpoint = hex::encode([1; 32]);
        assert!(!bad.verify(&signer.public_key()));
        let mut bad = cp.clone();
        bad.tree_size = 4;
        assert!(!bad.verify(&signer.public_key()));
        let mut bad = cp.clone();
        bad.tenant_id = "globex".into();
        assert!(!bad.verify(&signer.public_key()));
        let other = Signer::from_seed(&[8; 32]);
        assert!(!cp.verify(&other.public_key()));
        let forged = other.checkpoint(
            "acme",
            3,
            &[1; 32],
            &[2; 32],
            9,
            1_700_000_000_000_000,
            &[0; 32],
        );
        assert!(!forged.verify(&signer.public_key()));
        assert_eq!(
            parse_public_key(&hex::encode(signer.public_key().as_bytes())),
            Some(signer.public_key())
        );
    }
}
