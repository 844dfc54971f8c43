//! Epoch seals: one signed record per committed epoch that puts everything the epoch wrote under
//! the signing key, and chains the epochs together.
//!
//! A seal signs (see `docs/chain-format.md` §5):
//! - `row`: the SHA-256 of the epoch's `custody.epochs` row (positions, counts, the epoch
//!   manifest listing every data file the epoch added to every other table with the SHA-256 of
//!   its bytes, and the tenant registry), so no row of any table can be edited, added or
//!   removed without a finding;
//! - `tenants_root`, `tenants`: the root of a Merkle tree over the tenant registry, one leaf per
//!   tenant with the hash of its latest checkpoint as of the epoch: the set of tenants and
//!   where each log stands are themselves signed (a deleted tenant or a removed checkpoint is a
//!   finding, a "log of logs");
//! - `prev_seal`: the hash of the previous epoch's seal, so a removed or replaced epoch shows.
//!
//! The signed message is `custody-epoch/v1\n` followed by the canonical JSON of
//! `{epoch, key_id, prev_seal, row, signed_at, tenants, tenants_root}`.
//!
//! Only tenants whose log grew sign a checkpoint at an epoch's close, so the epoch's row
//! stores only those registry entries (the registry's change); the seal signs the whole
//! registry, which a verifier rebuilds by applying every epoch's change in order
//! ([`Registry`]). An epoch's cost (signatures, row bytes) follows what it appended, not how
//! many tenants exist.

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

/// The registry change of an epoch's checkpoints, sorted by tenant.
pub fn registry(checkpoints: &[Checkpoint]) -> Vec<RegistryEntry> {
    registry_of(checkpoints)
}

/// The whole tenant registry as of an epoch: every tenant's latest checkpoint hash, with its
/// registry leaf kept so that an epoch rehashes only the entries it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    entries: std::collections::BTreeMap<String, (Hash, Hash)>,
}

impl Registry {
    /// The registry of tenants' latest checkpoints.
    pub fn from_latest<'a>(checkpoints: impl IntoIterator<Item = &'a Checkpoint>) -> Self {
        let mut out = Registry::default();
        out.apply(&registry_of(checkpoints));
        out
    }

    /// Applies an epoch's change: its new entries replace the tenants' earlier ones.
    pub fn apply(&mut self, change: &[RegistryEntry]) {
        for (tenant, checkpoint) in change {
            self.entries.insert(
                tenant.clone(),
                (*checkpoint, registry_leaf(tenant, checkpoint)),
            );
        }
    }

    /// Tenants registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tenant is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tenant's latest checkpoint hash.
    pub fn get(&self, tenant: &str) -> Option<&Hash> {
        self.entries.get(tenant).map(|(h, _)| h)
    }

    /// Every entry, in tenant order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Hash)> {
        self.entries.iter().map(|(t, (h, _))| (t.as_str(), h))
    }

    /// The tenant's leaf index and audit path in the registry's tree.
    pub fn inclusion(&self, tenant: &str) -> Option<(u64, Vec<Hash>)> {
        let index = self.entries.keys().position(|t| t == tenant)?;
        let leaves: Vec<Hash> = self.entries.values().map(|(_, leaf)| *leaf).collect();
        Some((
            index as u64,
            crate::merkle::inclusion_proof(&leaves, index)?,
        ))
    }

    /// The Merkle root over the registry's leaves ([`registry_root`] of its entries).
    pub fn root(&self) -> Hash {
        let leaves: Vec<Hash> = self.entries.values().map(|(_, leaf)| *leaf).collect();
        root(&leaves)
    }
}

/// An export's pin on its tenants' logs: the last epoch seal and, per exported tenant, its
/// entry in the tenant registry that seal signs, with the entry's inclusion proof. A bundle cut
/// back consistently (a tenant's later events and checkpoints removed together) no longer holds
/// the checkpoint its entry names. Other tenants' entries appear only as proof hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRegistry {
    /// The last epoch's seal.
    pub seal: EpochSeal,
    /// The exported tenants' entries.
    pub tenants: Vec<RegistryProof>,
}

/// One tenant's entry in a sealed registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryProof {
    /// Tenant.
    pub tenant_id: String,
    /// Hash of its latest checkpoint, hex.
    pub checkpoint: String,
    /// Leaf index in the registry.
    pub index: u64,
    /// Audit path to the seal's `tenants_root`, hex.
    pub proof: Vec<String>,
}

impl SealedRegistry {
    /// The pin of `tenants` under `seal`, whose registry is `registry`.
    pub fn new<'a>(
        seal: EpochSeal,
        registry: &Registry,
        tenants: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let tenants = tenants
            .into_iter()
            .filter_map(|t| {
                let checkpoint = registry.get(t)?;
                let (index, proof) = registry.inclusion(t)?;
                Some(RegistryProof {
                    tenant_id: t.to_string(),
                    checkpoint: hex::encode(checkpoint),
                    index,
                    proof: proof.iter().map(hex::encode).collect(),
                })
            })
            .collect();
        SealedRegistry { seal, tenants }
    }

    /// Checks the seal under `trusted` (key id → key) and every entry's proof; returns each
    /// tenant's pinned checkpoint hash, or what is wrong.
    pub fn check(
        &self,
        trusted: &std::collections::HashMap<String, VerifyingKey>,
    ) -> Result<std::collections::BTreeMap<String, Hash>, String> {
        let seal = &self.seal;
        let key = trusted.get(&seal.key_id).ok_or_else(|| {
            format!(
                "epoch {} is sealed by untrusted key {:?}",
                seal.epoch, seal.key_id
            )
        })?;
        if !seal.verify(key) {
            return Err(format!(
                "the seal of epoch {} has a bad signature",
                seal.epoch
            ));
        }
        let mut root_hash = [0u8; 32];
        hex::decode_to_slice(&seal.tenants_root, &mut root_hash)
            .map_err(|_| format!("the seal of epoch {} has no registry root", seal.epoch))?;
        let mut out = std::collections::BTreeMap::new();
        for entry in &self.tenants {
            let mut checkpoint = [0u8; 32];
            let proof: Option<Vec<Hash>> = entry
                .proof
                .iter()
                .map(|h| {
                    let mut x = [0u8; 32];
                    hex::decode_to_slice(h, &mut x).ok().map(|_| x)
                })
                .collect();
            let ok = hex::decode_to_slice(&entry.checkpoint, &mut checkpoint).is_ok()
                && proof.is_some_and(|proof| {
                    crate::merkle::verify_inclusion(
                        &registry_leaf(&entry.tenant_id, &checkpoint),
                        entry.index,
                        seal.tenants,
                        &proof,
                        &root_hash,
                    )
                });
            if !ok {
                return Err(format!(
                    "the entry of tenant {:?} is not in the registry the seal of epoch {} signed",
                    entry.tenant_id, seal.epoch
                ));
            }
            out.insert(entry.tenant_id.clone(), checkpoint);
        }
        Ok(out)
    }
}

fn registry_of<'a>(checkpoints: impl IntoIterator<Item = &'a Checkpoint>) -> Vec<RegistryEntry> {
    let mut out: Vec<RegistryEntry> = checkpoints
        .into_iter()
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
    /// Seals an epoch whose row digests to `row`, after the seal whose hash is `prev`, with
    /// the whole `registry` as of the epoch.
    pub fn seal(
        &self,
        epoch: Epoch,
        prev: &Hash,
        row: &Hash,
        registry: &Registry,
        now_us: i64,
    ) -> EpochSeal {
        let mut seal = EpochSeal {
            epoch,
            prev_seal: hex::encode(prev),
            row: hex::encode(row),
            tenants: registry.len() as u64,
            tenants_root: hex::encode(registry.root()),
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
        let full = Registry::from_latest([&cp]);
        let first = signer.seal(3, &[0; 32], &[9; 32], &full, 0);
        assert!(first.verify(&signer.public_key()));
        assert_eq!(first.tenants_root, hex::encode(registry_root(&reg)));
        let second = signer.seal(4, &first.hash(), &[8; 32], &full, 0);
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

    /// A sealed registry pins each exported tenant's latest checkpoint under the seal; an
    /// entry moved, changed or proved against another root is refused.
    #[test]
    fn sealed_registries_pin_tenants_and_refuse_edits() {
        let signer = Signer::from_seed(&[5; 32]);
        let cps: Vec<Checkpoint> = (0..5)
            .map(|i| signer.checkpoint(&format!("t{i}"), i, &[1; 32], &[2; 32], i, 0, &[0; 32]))
            .collect();
        let registry = Registry::from_latest(&cps);
        let seal = signer.seal(9, &[0; 32], &[3; 32], &registry, 0);
        let trusted: std::collections::HashMap<String, VerifyingKey> =
            [(signer.key_id().to_string(), signer.public_key())].into();
        let sealed = SealedRegistry::new(seal, &registry, ["t1", "t4"]);
        let pins = sealed.check(&trusted).unwrap();
        assert_eq!(pins.get("t4"), Some(&cps[4].hash()));
        assert_eq!(pins.len(), 2);
        let mut moved = sealed.clone();
        moved.tenants[0].index += 1;
        assert!(moved.check(&trusted).is_err());
        let mut older = sealed.clone();
        older.tenants[1].checkpoint = hex::encode(cps[3].hash());
        assert!(older.check(&trusted).is_err());
        let mut resealed = sealed.clone();
        resealed.seal.tenants_root = hex::encode([7; 32]);
        assert!(resealed.check(&trusted).is_err());
        assert!(sealed.check(&Default::default()).is_err(), "untrusted key");
    }

    /// Applying epochs' changes gives the registry (and root) of every tenant's latest
    /// checkpoint, whatever subset each epoch touched.
    #[test]
    fn registry_changes_accumulate_to_the_latest_checkpoints() {
        let signer = Signer::from_seed(&[5; 32]);
        let mut latest: std::collections::BTreeMap<String, Checkpoint> = Default::default();
        let mut applied = Registry::default();
        let mut seed = 7u64;
        for epoch in 0..40u64 {
            let mut epoch_cps = Vec::new();
            for t in 0..6u64 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if (seed >> 33).is_multiple_of(3) {
                    let tenant = format!("t{t}");
                    let cp =
                        signer.checkpoint(&tenant, epoch, &[1; 32], &[2; 32], epoch, 0, &[0; 32]);
                    latest.insert(tenant, cp.clone());
                    epoch_cps.push(cp);
                }
            }
            applied.apply(&registry(&epoch_cps));
            let rebuilt = Registry::from_latest(latest.values());
            assert_eq!(applied, rebuilt);
            let entries: Vec<RegistryEntry> =
                latest.iter().map(|(t, c)| (t.clone(), c.hash())).collect();
            assert_eq!(applied.root(), registry_root(&entries));
            assert_eq!(applied.len(), entries.len());
        }
    }
}
