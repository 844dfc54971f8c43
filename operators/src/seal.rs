//! Epoch seals: one signed record per committed epoch that puts everything the epoch wrote under
//! the signing key, and chains the epochs together.
//!
//! A seal signs (see `docs/chain-format.md` §5):
//! - `row`: the SHA-256 of the epoch's `custody.epochs` row (positions, counts, the epoch
//!   manifest listing every data file the epoch added to every other table with the SHA-256 of
//!   its bytes, and the tenant registry), so no row of any table can be edited, added or
//!   removed without a finding;
//! - `tenants_root`, `tenants`: the root of a Merkle tree over the tenant registry, one leaf per
//!   tenant with the hash of its checkpoint of the epoch: the set of tenants is itself signed (a
//!   deleted tenant is a finding, a "log of logs");
//! - `prev_seal`: the hash of the previous epoch's seal, so a removed or replaced epoch shows.
//!
//! The signed message is `custody-epoch/v1\n` followed by the canonical JSON of
//! `{epoch, key_id, prev_seal, row, signed_at, tenants, tenants_root}`.

use custody_schemas::time::format_rfc3339;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, Signer, verify_signed};
use crate::hashing::{canonical_json, leaf_hash};
use crate::merkle::{Hash, root};
use crate::record::Epoch;

/// Domain separation prefix of the signed message.
pub const SEAL_DOMAIN: &str = "custody-epoch/v1\n";

/// The signed statement closing one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochSeal {
    /// The epoch.
    pub epoch: Epoch,
    /// [`EpochSeal::hash`] of the previous epoch's seal (zeros for the first), hex.
    pub prev_seal: String,
    /// SHA-256 of the epoch's row ([`row_digest`]), hex.
    pub row: String,
    /// Tenants in the registry.
    pub tenants: u64,
    /// Merkle root of the registry ([`registry_root`]), hex.
    pub tenants_root: String,
    /// Signing time.
    pub signed_at: String,
    /// Id of the signing key.
    pub key_id: String,
    /// Ed25519 signature over [`EpochSeal::message`], hex.
    pub signature: String,
}

impl EpochSeal {
    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        let mut map = Map::new();
        map.insert("epoch".into(), Value::from(self.epoch));
        map.insert("key_id".into(), Value::from(self.key_id.as_str()));
        map.insert("prev_seal".into(), Value::from(self.prev_seal.as_str()));
        map.insert("row".into(), Value::from(self.row.as_str()));
        map.insert("signed_at".into(), Value::from(self.signed_at.as_str()));
        map.insert("tenants".into(), Value::from(self.tenants));
        map.insert(
            "tenants_root".into(),
            Value::from(self.tenants_root.as_str()),
        );
        let mut out = SEAL_DOMAIN.as_bytes().to_vec();
        out.extend(canonical_json(&Value::Object(map)).into_bytes());
        out
    }

    /// SHA-256 of the signed message: what the next seal's `prev_seal` holds.
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.message()).into()
    }

    /// Whether the signature is valid under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        verify_signed(key, &self.key_id, &self.message(), &self.signature)
    }
}

/// One entry of an epoch's tenant registry: a tenant and its checkpoint's hash.
pub type RegistryEntry = (String, Hash);

/// The registry of an epoch's checkpoints, sorted by tenant.
pub fn registry(checkpoints: &[Checkpoint]) -> Vec<RegistryEntry> {
    let mut out: Vec<RegistryEntry> = checkpoints
        .iter()
        .map(|c| (c.tenant_id.clone(), c.hash()))
        .collect();
    out.sort();
    out
}

/// The registry leaf of a tenant: `leaf_hash` of `{"checkpoint":H,"tenant_id":T}`.
pub fn registry_leaf(tenant: &str, checkpoint: &Hash) -> Hash {
    let mut map = Map::new();
    map.insert("checkpoint".into(), Value::from(hex::encode(checkpoint)));
    map.insert("tenant_id".into(), Value::from(tenant));
    leaf_hash(canonical_json(&Value::Object(map)).as_bytes())
}

/// The Merkle root (RFC 6962) over the registry's leaves in tenant order.
pub fn registry_root(entries: &[RegistryEntry]) -> Hash {
    let leaves: Vec<Hash> = entries.iter().map(|(t, h)| registry_leaf(t, h)).collect();
    root(&leaves)
}

/// The registry as stored in `custody.epochs.registry`: `[[tenant, checkpoint hash hex], …]`.
pub fn registry_json(entries: &[RegistryEntry]) -> String {
    let rows: Vec<(&str, String)> = entries
        .iter()
        .map(|(t, h)| (t.as_str(), hex::encode(h)))
        .collect();
    serde_json::to_string(&rows).unwrap_or_default()
}

/// Parses [`registry_json`].
pub fn parse_registry(text: &str) -> Option<Vec<RegistryEntry>> {
    let rows: Vec<(String, String)> = serde_json::from_str(text).ok()?;
    rows.into_iter()
        .map(|(t, h)| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&h, &mut hash).ok()?;
            Some((t, hash))
        })
        .collect()
}

/// The columns of a `custody.epochs` row that the seal covers, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochRowFields<'a> {
    /// Epoch.
    pub epoch: Epoch,
    /// Writer id.
    pub sink_id: &'a str,
    /// Source name.
    pub source: &'a str,
    /// Positions (JSON text).
    pub positions: &'a str,
    /// Events committed.
    pub events: i64,
    /// Records quarantined.
    pub quarantined: i64,
    /// Checkpoints signed.
    pub checkpoints: i64,
    /// Digest of the checkpoint signatures.
    pub checkpoint_digest: &'a str,
    /// Commit time, UTC micros.
    pub committed_at_us: i64,
    /// Epoch manifest (JSON text).
    pub files: &'a str,
    /// Tenant registry (JSON text).
    pub registry: &'a str,
}

/// SHA-256 of the canonical JSON of the row's sealed columns (`committed_at` as §2 timestamp).
pub fn row_digest(row: &EpochRowFields<'_>) -> Hash {
    let mut map = Map::new();
    map.insert(
        "checkpoint_digest".into(),
        Value::from(row.checkpoint_digest),
    );
    map.insert("checkpoints".into(), Value::from(row.checkpoints));
    map.insert(
        "committed_at".into(),
        Value::from(format_rfc3339(row.committed_at_us)),
    );
    map.insert("epoch".into(), Value::from(row.epoch));
    map.insert("events".into(), Value::from(row.events));
    map.insert("files".into(), Value::from(row.files));
    map.insert("positions".into(), Value::from(row.positions));
    map.insert("quarantined".into(), Value::from(row.quarantined));
    map.insert("registry".into(), Value::from(row.registry));
    map.insert("sink_id".into(), Value::from(row.sink_id));
    map.insert("source".into(), Value::from(row.source));
    Sha256::digest(canonical_json(&Value::Object(map)).as_bytes()).into()
}

impl Signer {
    /// Seals an epoch whose row digests to `row`, after the seal whose hash is `prev`.
    pub fn seal(
        &self,
        epoch: Epoch,
        prev: &Hash,
        row: &Hash,
        registry: &[RegistryEntry],
        now_us: i64,
    ) -> EpochSeal {
        let mut seal = EpochSeal {
            epoch,
            prev_seal: hex::encode(prev),
            row: hex::encode(row),
            tenants: registry.len() as u64,
            tenants_root: hex::encode(registry_root(registry)),
            signed_at: format_rfc3339(now_us),
            key_id: self.key_id().to_string(),
            signature: String::new(),
        };
        seal.signature = self.sign_bytes(&seal.message());
        seal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bind_every_field_and_chain() {
        let signer = Signer::from_seed(&[5; 32]);
        let cp = signer.checkpoint("acme", 1, &[1; 32], &[2; 32], 3, 0, &[0; 32]);
        let reg = registry(std::slice::from_ref(&cp));
        let first = signer.seal(3, &[0; 32], &[9; 32], &reg, 0);
        assert!(first.verify(&signer.public_key()));
        let second = signer.seal(4, &first.hash(), &[8; 32], &reg, 0);
        assert_eq!(second.prev_seal, hex::encode(first.hash()));
        for edit in [
            |s: &mut EpochSeal| s.epoch += 1,
            |s: &mut EpochSeal| s.tenants -= 1,
            |s: &mut EpochSeal| s.row = hex::encode([0; 32]),
            |s: &mut EpochSeal| s.prev_seal = hex::encode([1; 32]),
            |s: &mut EpochSeal| s.tenants_root = hex::encode([1; 32]),
        ] {
            let mut bad = second.clone();
            edit(&mut bad);
            assert!(!bad.verify(&signer.public_key()));
        }
        assert_eq!(
            parse_registry(&registry_json(&reg)).unwrap(),
            reg,
            "registry round trip"
        );
        assert_ne!(registry_root(&reg), registry_root(&[]));
    }
}
