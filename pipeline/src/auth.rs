//! Tenant-scoped bearer tokens for the HTTP API.
//!
//! Each token is configured by its SHA-256 (never the token itself) with a role and the one
//! tenant it may read (`*` for an admin of every tenant). A request for another tenant's
//! data gets the same 404 as a tenant that does not exist, so a token cannot even learn which
//! tenants exist. With no tokens configured the API is open (development), and says so at
//! start-up.

use std::collections::HashMap;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Live views of its tenant.
    Dashboard,
    /// Views, checkpoints, proofs (and reports) of its tenant.
    Regulator,
    /// Everything.
    Admin,
}

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Live views.
    Views,
    /// Checkpoints and proofs.
    Evidence,
    /// Changing what the log records about the tenant (legal holds).
    Admin,
}

impl Role {
    fn allows(self, need: Need) -> bool {
        match need {
            Need::Views => true,
            Need::Evidence => self >= Role::Regulator,
            Need::Admin => self == Role::Admin,
        }
    }
}

/// A configured token (`[api.tokens.NAME]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// SHA-256 of the bearer token, hex.
    pub sha256: String,
    /// The tenant it reads; `*` for every tenant (admins only).
    pub tenant: String,
    /// Its role.
    pub role: Role,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name.
    pub name: String,
    /// Its tenant; `None` for every tenant.
    pub tenant: Option<String>,
    /// Its role.
    pub role: Role,
}

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct ApiAuth {
    by_hash: HashMap<[u8; 32], Principal>,
    /// SHA-256 of the token `/metrics` asks for (`[api] metrics_token_sha256`); open if none.
    metrics: Option<[u8; 32]>,
}

impl ApiAuth {
    /// From `[api.tokens]`; an error names each bad entry.
    pub fn new<'a>(
        tokens: impl IntoIterator<Item = (&'a String, &'a TokenSettings)>,
    ) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        let mut errors = Vec::new();
        for (name, t) in tokens {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(t.sha256.trim(), &mut hash).is_err() {
                errors.push(format!("api.tokens.{name}.sha256: expected 64 hex digits"));
                continue;
            }
            let tenant = (t.tenant != "*").then(|| t.tenant.clone());
            if tenant.is_none() && t.role != Role::Admin {
                errors.push(format!(
                    "api.tokens.{name}: only admins may read every tenant"
                ));
                continue;
            }
            by_hash.insert(
                hash,
                Principal {
                    name: name.clone(),
                    tenant,
                    role: t.role,
                },
            );
        }
        if errors.is_empty() {
            Ok(ApiAuth {
                by_hash,
                metrics: None,
            })
        } else {
            Err(errors.join("; "))
        }
    }

    /// Puts `/metrics` behind the bearer token whose SHA-256 is `sha256` (hex); empty: open.
    pub fn with_metrics_token(mut self, sha256: &str) -> Result<Self, String> {
        let sha256 = sha256.trim();
        if sha256.is_empty() {
            return Ok(self);
        }
        let mut hash = [0u8; 32];
        hex::decode_to_slice(sha256, &mut hash)
            .map_err(|_| "api.metrics_token_sha256: expected 64 hex digits".to_string())?;
        self.metrics = Some(hash);
        Ok(self)
    }

    /// Checks a scrape of `/metrics`: open unless a metrics token is configured, then that
    /// token or an admin token of every tenant.
    pub fn authorize_metrics(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let Some(expected) = self.metrics else {
            return Ok(());
        };
        let hash: [u8; 32] = Sha256::digest(bearer(headers)?.as_bytes()).into();
        let admin = self
            .by_hash
            .get(&hash)
            .is_some_and(|p| p.role == Role::Admin && p.tenant.is_none());
        if hash == expected || admin {
            Ok(())
        } else {
            Err(Denied::Unauthorized)
        }
    }

    /// Whether any token is configured (otherwise the API is open).
    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// The caller of a request (`None` when the API is open), or why not.
    pub fn principal(&self, headers: &HeaderMap) -> Result<Option<&Principal>, Denied> {
        if !self.enabled() {
            return Ok(None);
        }
        let hash: [u8; 32] = Sha256::digest(bearer(headers)?.as_bytes()).into();
        self.by_hash
            .get(&hash)
            .map(Some)
            .ok_or(Denied::Unauthorized)
    }

    /// Checks that the caller may `need` on `tenant`: 401 without a valid token, 404 for
    /// another tenant (as if it did not exist), 403 for a role that lacks the permission.
    pub fn authorize(&self, headers: &HeaderMap, tenant: &str, need: Need) -> Result<(), Denied> {
        let Some(p) = self.principal(headers)? else {
            return Ok(());
        };
        if p.tenant.as_deref().is_some_and(|t| t != tenant) {
            return Err(Denied::NoSuchTenant(tenant.to_string()));
        }
        if !p.role.allows(need) {
            return Err(Denied::Forbidden(p.role));
        }
        Ok(())
    }

    /// Whether the caller may see `tenant` in listings.
    pub fn may_list(&self, principal: Option<&Principal>, tenant: &str) -> bool {
        principal.is_none_or(|p| p.tenant.as_deref().is_none_or(|t| t == tenant))
    }
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Denied::Unauthorized)
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No valid bearer token: 401.
    Unauthorized,
    /// Another tenant, answered as if it did not exist: 404.
    NoSuchTenant(String),
    /// The role lacks the permission on its own tenant: 403.
    Forbidden(Role),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "a valid bearer token is required"})),
            )
                .into_response(),
            Denied::NoSuchTenant(tenant) => not_found(&tenant),
            Denied::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                Json(json!({"error": format!("role {role:?} may not read this")})),
            )
                .into_response(),
        }
    }
}

/// The answer for a tenant that does not exist, or that the caller may not see.
pub fn not_found(tenant: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no such tenant {tenant:?}")})),
    )
        .into_response()
}
