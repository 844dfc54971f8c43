//! Producer identity: which tenant a record may speak for.
//!
//! Tenants are not self-reported. Each producer (an agent gateway, an SDK instance) is
//! registered with an id, the one tenant it is bound to and a secret key; it sends
//! `custody-producer: ID` and `custody-signature: hex(HMAC-SHA256(key, record bytes))` with
//! every record. The decoder then accepts an event only if the signature verifies and the
//! payload's `tenant_id` is the producer's tenant; anything else is quarantined with the
//! reason, and a tenant mismatch also counts in `custody_tenant_spoofs_total`. Quarantine
//! rows carry the authenticated tenant, never the claimed one.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::ProducerClaim;

type HmacSha256 = Hmac<Sha256>;

/// A registered producer.
#[derive(Clone)]
pub struct Producer {
    /// The only tenant it may write for.
    pub tenant_id: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// Why a record's identity was refused; `kind()` is the quarantine reason kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// No producer headers.
    #[error("no {header} header: records must name their producer (identity mode signed-header)", header = crate::sources::kafka::PRODUCER_HEADER)]
    Unauthenticated,
    /// Unregistered producer id.
    #[error("producer {0:?} is not registered")]
    UnknownProducer(String),
    /// The MAC does not match the bytes.
    #[error("signature of producer {0:?} does not match the record bytes")]
    BadSignature(String),
    /// The payload names another tenant.
    #[error(
        "payload tenant_id {claimed:?} is not {bound:?}, the tenant producer {producer:?} is bound to"
    )]
    TenantMismatch {
        /// The producer.
        producer: String,
        /// Its tenant.
        bound: String,
        /// The payload's tenant.
        claimed: String,
    },
}

impl IdentityError {
    /// Stable short label.
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityError::Unauthenticated => "unauthenticated",
            IdentityError::UnknownProducer(_) => "unknown_producer",
            IdentityError::BadSignature(_) => "bad_producer_signature",
            IdentityError::TenantMismatch { .. } => "tenant_mismatch",
        }
    }
}

/// The producers allowed to write; shared by every decode worker.
#[derive(Clone, Debug, Default)]
pub struct ProducerRegistry {
    producers: Arc<HashMap<String, Producer>>,
}

impl ProducerRegistry {
    /// A registry of `(producer id, tenant, key)`.
    pub fn new(producers: impl IntoIterator<Item = (String, String, Vec<u8>)>) -> Self {
        let producers = producers
            .into_iter()
            .map(|(id, tenant_id, key)| (id, Producer { tenant_id, key }))
            .collect();
        ProducerRegistry {
            producers: Arc::new(producers),
        }
    }

    /// Number of producers.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is registered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Authenticates `bytes` under `claim`; returns the producer's tenant.
    pub fn authenticate(
        &self,
        claim: Option<&ProducerClaim>,
        bytes: &[u8],
    ) -> Result<&str, IdentityError> {
        let claim = claim.ok_or(IdentityError::Unauthenticated)?;
        let producer = self
            .producers
            .get(&claim.producer_id)
            .ok_or_else(|| IdentityError::UnknownProducer(claim.producer_id.clone()))?;
        let mut mac = HmacSha256::new_from_slice(&producer.key)
            // Panic: HMAC takes keys of any length.
            .expect("hmac takes any key length");
        mac.update(bytes);
        mac.verify_slice(&claim.signature)
            .map_err(|_| IdentityError::BadSignature(claim.producer_id.clone()))?;
        Ok(&producer.tenant_id)
    }

    /// Checks that the authenticated producer may write for `tenant_id`.
    pub fn check_tenant(
        &self,
        claim: &ProducerClaim,
        bound: &str,
        tenant_id: &str,
    ) -> Result<(), IdentityError> {
        if bound == tenant_id {
            Ok(())
        } else {
            Err(IdentityError::TenantMismatch {
                producer: claim.producer_id.clone(),
                bound: bound.to_string(),
                claimed: tenant_id.to_string(),
            })
        }
    }
}

/// The `custody-signature` value for `bytes` under `key`: hex HMAC-SHA256.
pub fn sign(key: &[u8], bytes: &[u8]) -> String {
    // Panic: HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    mac.update(bytes);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, key: &[u8], bytes: &[u8]) -> ProducerClaim {
        ProducerClaim {
            producer_id: id.into(),
            signature: hex::decode(sign(key, bytes)).unwrap(),
        }
    }

    #[test]
    fn only_the_bound_producer_with_its_key_speaks_for_a_tenant() {
        let reg = ProducerRegistry::new([
            ("gw-a".into(), "tenant-a".into(), b"key-a".to_vec()),
            ("gw-b".into(), "tenant-b".into(), b"key-b".to_vec()),
        ]);
        let bytes = b"{\"tenant_id\":\"tenant-a\"}";
        let good = claim("gw-a", b"key-a", bytes);
        assert_eq!(reg.authenticate(Some(&good), bytes), Ok("tenant-a"));
        assert_eq!(reg.check_tenant(&good, "tenant-a", "tenant-a"), Ok(()));
        assert_eq!(
            reg.check_tenant(&good, "tenant-a", "tenant-b")
                .unwrap_err()
                .kind(),
            "tenant_mismatch"
        );
        let wrong_key = claim("gw-a", b"key-b", bytes);
        assert_eq!(
            reg.authenticate(Some(&wrong_key), bytes)
                .unwrap_err()
                .kind(),
            "bad_producer_signature"
        );
        assert_eq!(
            reg.authenticate(Some(&good), b"{\"tenant_id\":\"tenant-b\"}")
                .unwrap_err()
                .kind(),
            "bad_producer_signature"
        );
        let unknown = claim("gw-x", b"key-a", bytes);
        assert_eq!(
            reg.authenticate(Some(&unknown), bytes).unwrap_err().kind(),
            "unknown_producer"
        );
        assert_eq!(
            reg.authenticate(None, bytes).unwrap_err().kind(),
            "unauthenticated"
        );
    }
}
