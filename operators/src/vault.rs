//! Envelope encryption and crypto-shredding.
//!
//! - The key-encryption key (KEK, 32 bytes) comes from the environment or a key file and never
//!   touches the lake. Its id is the first 16 hex digits of `SHA-256("custody/kek-id/v1" ‖ KEK)`.
//! - Data keys (32 random bytes) live in the keystore, `keys/keystore.db` (SQLite, with
//!   `secure_delete` so deleted keys are overwritten), wrapped by the KEK with
//!   XChaCha20-Poly1305 (AAD `custody/dek/v1|tenant|subject`). Each tenant has a content key
//!   (subject `""`) and one key per data subject (per token), so one subject can be erased.
//! - Vault entries (`custody.vault`) are sealed with XChaCha20-Poly1305 under a data key: a
//!   token's value under the token's key (AAD `custody/vault/v1|tenant|token`), a field's
//!   content under the tenant's content key (AAD `…|tenant|event_id#field`).
//! - Erasure deletes the data keys: the vault entries stay, but nothing can open them. The hash
//!   chain covers tokens and content commitments, not plaintext, so it still verifies.
//! - KEK rotation: set the new KEK as current and the old one as previous, run
//!   `custody keys rewrap` (every data key is re-wrapped under the new KEK), then drop the old.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// Vault and keystore errors.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The keystore database failed.
    #[error("keystore: {0}")]
    Store(#[from] sqlx::Error),
    /// A key was destroyed by an erasure (or never existed).
    #[error("no data key for tenant {tenant:?} subject {subject:?}: erased or never created")]
    KeyDestroyed {
        /// Tenant.
        tenant: String,
        /// Subject (`""` for the tenant's content key).
        subject: String,
    },
    /// A wrapped key or sealed value failed authentication (wrong KEK or tampering).
    #[error("decryption failed: {0}")]
    Crypto(String),
    /// A wrapped key names a KEK this process was not given.
    #[error("data key wrapped by KEK {0}, which is not configured (set it as the previous KEK)")]
    UnknownKek(String),
}

/// A key-encryption key.
#[derive(Clone)]
pub struct Kek {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// A KEK from its 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"custody/kek-id/v1");
        h.update(key);
        Kek {
            id: hex::encode(&h.finalize()[..8]),
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Seals `plaintext` under `key` with `aad`: `nonce (24 bytes) ‖ ciphertext ‖ tag`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(&XChaCha20Poly1305::new(key.into()), aad, plaintext)
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    // Panic-free: encryption into a Vec only fails on absurd lengths (> 256 GiB).
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("xchacha20poly1305 encrypts any slice");
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal`] sealed.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    open_with(&XChaCha20Poly1305::new(key.into()), aad, sealed)
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < 24 {
        return Err(VaultError::Crypto("sealed value too short".into()));
    }
    let (nonce, ct) = sealed.split_at(24);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| VaultError::Crypto("authentication failed".into()))
}

fn dek_aad(tenant: &str, subject: &str) -> Vec<u8> {
    format!("custody/dek/v1|{tenant}|{subject}").into_bytes()
}

/// The AAD of a vault entry.
pub fn vault_aad(tenant: &str, reference: &str) -> Vec<u8> {
    format!("custody/vault/v1|{tenant}|{reference}").into_bytes()
}

/// A data key.
#[derive(Clone)]
pub struct DataKey {
    /// Its id (random, 16 hex digits), recorded with every vault entry it sealed.
    pub id: String,
    /// The key.
    pub key: [u8; 32],
}

/// The keystore; see the module docs.
pub struct Keystore {
    pool: SqlitePool,
    current: Kek,
    previous: Vec<Kek>,
    /// Tenant → subjects whose vault entry is committed: nothing more to do for them.
    /// Keyed by tenant so that the per-token check borrows instead of allocating.
    vaulted: HashMap<String, HashSet<String>>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("kek", &self.current.id)
            .finish_non_exhaustive()
    }
}

impl Keystore {
    /// Opens (creating) the keystore at `path`.
    pub async fn open(path: &Path, current: Kek, previous: Vec<Kek>) -> Result<Self, VaultError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| VaultError::Store(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS data_keys (
                tenant TEXT NOT NULL, subject TEXT NOT NULL, key_id TEXT NOT NULL,
                kek_id TEXT NOT NULL, wrapped BLOB NOT NULL, vaulted INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant, subject))",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS erasures (
                tenant TEXT NOT NULL, subject TEXT, keys_destroyed INTEGER NOT NULL,
                erased_at TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(Keystore {
            pool,
            current,
            previous,
            vaulted: HashMap::new(),
        })
    }

    fn kek(&self, id: &str) -> Result<&Kek, VaultError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| VaultError::UnknownKek(id.to_string()))
    }

    /// The data key of `(tenant, subject)`, if it exists (was not erased).
    pub async fn get(&self, tenant: &str, subject: &str) -> Result<Option<DataKey>, VaultError> {
        let row = sqlx::query(
            "SELECT key_id, kek_id, wrapped FROM data_keys WHERE tenant = ? AND subject = ?",
        )
        .bind(tenant)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (id, kek_id, wrapped): (String, String, Vec<u8>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let key = self.unwrap_key(&kek_id, tenant, subject, &wrapped)?;
        Ok(Some(DataKey { id, key }))
    }

    /// Whether the vault entry of `(tenant, subject)` is already committed.
    pub fn is_vaulted(&self, tenant: &str, subject: &str) -> bool {
        self.vaulted
            .get(tenant)
            .is_some_and(|subjects| subjects.contains(subject))
    }

    fn set_vaulted(&mut self, tenant: &str, subject: &str) {
        self.vaulted
            .entry(tenant.to_string())
            .or_default()
            .insert(subject.to_string());
    }

    /// Unwraps a data key of `(tenant, subject)` wrapped by KEK `kek_id`.
    fn unwrap_key(
        &self,
        kek_id: &str,
        tenant: &str,
        subject: &str,
        wrapped: &[u8],
    ) -> Result<[u8; 32], VaultError> {
        let key = open_with(
            &self.kek(kek_id)?.cipher,
            &dek_aad(tenant, subject),
            wrapped,
        )?;
        key.try_into()
            .map_err(|_| VaultError::Crypto("data key is not 32 bytes".into()))
    }

    /// The data key of `(tenant, subject)`, created if missing; and whether its vault entry
    /// is already committed.
    pub async fn get_or_create(
        &mut self,
        tenant: &str,
        subject: &str,
    ) -> Result<(DataKey, bool), VaultError> {
        let wanted = [(tenant.to_string(), subject.to_string())];
        let mut got = self.get_or_create_many(&wanted).await?;
        // Panic-free: get_or_create_many answers every pair it is given.
        Ok(got.pop().expect("one key per pair"))
    }

    /// [`Keystore::get_or_create`] for many pairs, in one transaction (one fsync), in order.
    /// New keys are inserted many rows per statement: with a key per data subject an epoch can
    /// create hundreds of thousands.
    pub async fn get_or_create_many(
        &mut self,
        wanted: &[(String, String)],
    ) -> Result<Vec<(DataKey, bool)>, VaultError> {
        let mut out: Vec<Option<(DataKey, bool)>> = vec![None; wanted.len()];
        let mut tx = self.pool.begin().await?;
        // Existing keys, looked up per tenant in chunks.
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, (tenant, _)) in wanted.iter().enumerate() {
            by_tenant.entry(tenant).or_default().push(i);
        }
        for (tenant, idxs) in &by_tenant {
            for chunk in idxs.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT subject, key_id, kek_id, wrapped, vaulted FROM data_keys \
                     WHERE tenant = ? AND subject IN ({marks})"
                );
                let mut q = sqlx::query(&sql).bind(*tenant);
                for &i in chunk {
                    q = q.bind(&wanted[i].1);
                }
                let rows = q.fetch_all(&mut *tx).await?;
                let pos: std::collections::HashMap<&str, usize> =
                    chunk.iter().map(|&i| (wanted[i].1.as_str(), i)).collect();
                for row in rows {
                    let (subject, id, kek_id, wrapped, vaulted): (
                        String,
                        String,
                        String,
                        Vec<u8>,
                        i64,
                    ) = (
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                    );
                    let Some(&i) = pos.get(subject.as_str()) else {
                        continue;
                    };
                    let key = self.unwrap_key(&kek_id, tenant, &subject, &wrapped)?;
                    if vaulted != 0 {
                        self.set_vaulted(tenant, &subject);
                    }
                    out[i] = Some((DataKey { id, key }, vaulted != 0));
                }
            }
        }
        // The rest are new.
        let missing: Vec<usize> = (0..wanted.len()).filter(|&i| out[i].is_none()).collect();
        for chunk in missing.chunks(150) {
            let marks = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(",");
            let sql = format!(
                "INSERT INTO data_keys (tenant, subject, key_id, kek_id, wrapped) VALUES {marks}"
            );
            let mut q = sqlx::query(&sql);
            for &i in chunk {
                let (tenant, subject) = &wanted[i];
                let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
                let id = hex::encode(&XChaCha20Poly1305::generate_nonce(&mut OsRng)[..8]);
                let wrapped = seal_with(&self.current.cipher, &dek_aad(tenant, subject), &key);
                q = q
                    .bind(tenant)
                    .bind(subject)
                    .bind(id.clone())
                    .bind(self.current.id.clone())
                    .bind(wrapped);
                out[i] = Some((DataKey { id, key }, false));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Panic-free: every slot was filled by the lookup or the insert.
        Ok(out
            .into_iter()
            .map(|k| k.expect("key found or created"))
            .collect())
    }

    /// Records that the vault entries of these subjects are committed.
    pub async fn mark_vaulted(&mut self, subjects: &[(String, String)]) -> Result<(), VaultError> {
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (tenant, subject) in subjects {
            by_tenant.entry(tenant).or_default().push(subject);
        }
        let mut tx = self.pool.begin().await?;
        for (tenant, subs) in &by_tenant {
            for chunk in subs.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "UPDATE data_keys SET vaulted = 1 WHERE tenant = ? AND subject IN ({marks})"
                );
                let mut q = sqlx::query(&sql).bind(*tenant);
                for s in chunk {
                    q = q.bind(*s);
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        for (tenant, subject) in subjects {
            self.set_vaulted(tenant, subject);
        }
        Ok(())
    }

    /// Destroys every key of `tenant`, or of one `subject`; returns how many. The freed
    /// pages are overwritten (`secure_delete`) and the file is vacuumed.
    pub async fn erase(&mut self, tenant: &str, subject: Option<&str>) -> Result<u64, VaultError> {
        let done = match subject {
            Some(s) => {
                sqlx::query("DELETE FROM data_keys WHERE tenant = ? AND subject = ?")
                    .bind(tenant)
                    .bind(s)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM data_keys WHERE tenant = ?")
                    .bind(tenant)
                    .execute(&self.pool)
                    .await?
            }
        };
        let n = done.rows_affected();
        sqlx::query("INSERT INTO erasures (tenant, subject, keys_destroyed, erased_at) VALUES (?, ?, ?, datetime('now'))")
            .bind(tenant)
            .bind(subject)
            .bind(n as i64)
            .execute(&self.pool)
            .await?;
        sqlx::query("VACUUM").execute(&self.pool).await?;
        match subject {
            Some(s) => {
                if let Some(subjects) = self.vaulted.get_mut(tenant) {
                    subjects.remove(s);
                }
            }
            None => {
                self.vaulted.remove(tenant);
            }
        }
        Ok(n)
    }

    /// Re-wraps every data key under the current KEK; returns how many changed.
    pub async fn rewrap(&mut self) -> Result<u64, VaultError> {
        let rows =
            sqlx::query("SELECT tenant, subject, kek_id, wrapped FROM data_keys WHERE kek_id != ?")
                .bind(&self.current.id)
                .fetch_all(&self.pool)
                .await?;
        let mut n = 0;
        let mut tx = self.pool.begin().await?;
        for row in rows {
            let (tenant, subject, kek_id, wrapped): (String, String, String, Vec<u8>) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            let key = self.unwrap_key(&kek_id, &tenant, &subject, &wrapped)?;
            let rewrapped = seal_with(&self.current.cipher, &dek_aad(&tenant, &subject), &key);
            sqlx::query(
                "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE tenant = ? AND subject = ?",
            )
            .bind(&self.current.id)
            .bind(rewrapped)
            .bind(&tenant)
            .bind(&subject)
            .execute(&mut *tx)
            .await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// The keystore subject under which a tenant's token key is kept (token subjects start with
/// `<`, the content key's is empty).
pub const TOKEN_KEY_SUBJECT: &str = "#token-key";

/// Tenants' token keys (see [`custody_pii::TokenKeys`]), kept in the keystore as data keys of
/// subject [`TOKEN_KEY_SUBJECT`]: random, wrapped by the KEK, destroyed with the tenant's
/// other keys by `custody erase`. Its own connection to the keystore, used from the dataflow's
/// workers (a key is fetched or created once per tenant and worker).
pub struct TokenKeyring {
    runtime: tokio::runtime::Runtime,
    store: std::sync::Mutex<Keystore>,
}

impl std::fmt::Debug for TokenKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeyring").finish_non_exhaustive()
    }
}

impl TokenKeyring {
    /// Opens the keystore at `path` for token keys.
    pub fn open(path: &Path, current: Kek, previous: Vec<Kek>) -> Result<Self, VaultError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VaultError::Store(sqlx::Error::Io(e)))?;
        let store = runtime.block_on(Keystore::open(path, current, previous))?;
        Ok(TokenKeyring {
            runtime,
            store: std::sync::Mutex::new(store),
        })
    }
}

impl custody_pii::TokenKeys for TokenKeyring {
    fn token_key(&self, tenant: &str) -> Result<[u8; 32], custody_pii::TokenKeyError> {
        let error = |message: String| custody_pii::TokenKeyError {
            tenant: tenant.to_string(),
            message,
        };
        let mut store = self
            .store
            .lock()
            .map_err(|_| error("keystore lock poisoned".into()))?;
        self.runtime
            .block_on(store.get_or_create(tenant, TOKEN_KEY_SUBJECT))
            .map(|(key, _)| key.key)
            .map_err(|e| error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn keys_wrap_rotate_and_shred() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keystore.db");
            let (old, new) = (Kek::new(&[1; 32]), Kek::new(&[2; 32]));
            let mut ks = Keystore::open(&path, old.clone(), vec![]).await.unwrap();
            let (a, vaulted) = ks.get_or_create("acme", "tok_a").await.unwrap();
            assert!(!vaulted);
            let sealed = seal(&a.key, b"aad", b"jane@example.com");
            assert_eq!(open(&a.key, b"aad", &sealed).unwrap(), b"jane@example.com");
            assert!(open(&a.key, b"other aad", &sealed).is_err());
            ks.get_or_create("acme", "").await.unwrap();
            ks.get_or_create("globex", "tok_g").await.unwrap();
            drop(ks);

            // Rotation: the new KEK with the old as previous re-wraps everything.
            let mut ks = Keystore::open(&path, new.clone(), vec![old]).await.unwrap();
            assert_eq!(ks.rewrap().await.unwrap(), 3);
            drop(ks);
            let mut ks = Keystore::open(&path, new, vec![]).await.unwrap();
            let again = ks.get("acme", "tok_a").await.unwrap().unwrap();
            assert_eq!(again.key, a.key);

            // Subject erasure, then tenant erasure.
            assert_eq!(ks.erase("acme", Some("tok_a")).await.unwrap(), 1);
            assert!(ks.get("acme", "tok_a").await.unwrap().is_none());
            assert!(ks.get("acme", "").await.unwrap().is_some());
            assert_eq!(ks.erase("acme", None).await.unwrap(), 1);
            assert!(ks.get("acme", "").await.unwrap().is_none());
            assert!(ks.get("globex", "tok_g").await.unwrap().is_some());
            drop(ks);
            // The destroyed key bytes are nowhere in the keystore file.
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(32).any(|w| w == a.key));
        });
    }

    #[test]
    fn token_keys_are_random_per_tenant_stable_and_destroyed_by_erasure() {
        use custody_pii::{TokenKeys, Tokenizer};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystore.db");
        let kek = Kek::new(&[3; 32]);
        let token = |keys: Arc<dyn TokenKeys>, tenant: &str| {
            Tokenizer::new(b"master").with_token_keys(keys).token(
                tenant,
                custody_pii::PiiKind::Email,
                "jane@example.com",
            )
        };
        let ring: Arc<dyn TokenKeys> =
            Arc::new(TokenKeyring::open(&path, kek.clone(), vec![]).unwrap());
        let (a, b) = (token(ring.clone(), "acme"), token(ring.clone(), "globex"));
        assert_ne!(a, b);
        // Not the key derived from the master key.
        assert_ne!(
            a,
            Tokenizer::new(b"master").token(
                "acme",
                custody_pii::PiiKind::Email,
                "jane@example.com"
            )
        );
        drop(ring);
        // Stable across opens (a restart tokenizes replayed input identically).
        let ring: Arc<dyn TokenKeys> =
            Arc::new(TokenKeyring::open(&path, kek.clone(), vec![]).unwrap());
        assert_eq!(token(ring.clone(), "acme"), a);
        drop(ring);
        // Erasing the tenant destroys it: the same value gets an unlinkable token.
        rt().block_on(async {
            let mut ks = Keystore::open(&path, kek.clone(), vec![]).await.unwrap();
            assert_eq!(ks.erase("acme", None).await.unwrap(), 1);
        });
        let ring: Arc<dyn TokenKeys> = Arc::new(TokenKeyring::open(&path, kek, vec![]).unwrap());
        assert_ne!(token(ring.clone(), "acme"), a);
        assert_eq!(token(ring, "globex"), b);
    }
}
