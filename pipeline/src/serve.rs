//! HTTP serving: Prometheus `/metrics` and, per tenant behind bearer tokens
//! ([`crate::auth`]), the live views, checkpoints and proofs as JSON.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use custody_operators::Metrics;
use custody_reports::live::LiveViews;
use custody_reports::proofs::{LiveLogs, ProofError};
use serde_json::json;

use crate::auth::{ApiAuth, Need, not_found};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Bearer tokens.
    pub auth: Arc<ApiAuth>,
    /// Process metrics.
    pub metrics: Metrics,
    /// Live views.
    pub live: Arc<Mutex<LiveViews>>,
    /// Live tenant logs (checkpoints and proofs).
    pub logs: Arc<Mutex<LiveLogs>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/tenants", get(tenants))
        .route("/v1/tenants/{tenant}/views/event-counts", get(event_counts))
        .route("/v1/tenants/{tenant}/views/hitl-latency", get(hitl_latency))
        .route(
            "/v1/tenants/{tenant}/checkpoints/latest",
            get(latest_checkpoint),
        )
        .route("/v1/tenants/{tenant}/proofs/inclusion", get(inclusion))
        .route("/v1/tenants/{tenant}/proofs/consistency", get(consistency))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "views unavailable"})),
    )
        .into_response()
}

async fn tenants(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let principal = match state.auth.principal(&headers) {
        Ok(p) => p,
        Err(denied) => return denied.into_response(),
    };
    let Ok(live) = state.live.lock() else {
        return unavailable();
    };
    let tenants: Vec<String> = live
        .tenants()
        .into_iter()
        .filter(|t| state.auth.may_list(principal, t))
        .collect();
    if principal.is_some_and(|p| p.tenant.is_some()) {
        return Json(json!({ "tenants": tenants })).into_response();
    }
    Json(json!({ "tenants": tenants, "total_events": live.total_events() })).into_response()
}

async fn event_counts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Views) {
        return denied.into_response();
    }
    let Ok(live) = state.live.lock() else {
        return unavailable();
    };
    match live.event_counts(&tenant) {
        Some(view) => Json(view).into_response(),
        None => not_found(&tenant),
    }
}

async fn hitl_latency(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Views) {
        return denied.into_response();
    }
    let Ok(live) = state.live.lock() else {
        return unavailable();
    };
    match live.hitl_latency(&tenant) {
        Some(view) => Json(view).into_response(),
        None => not_found(&tenant),
    }
}

fn proof_error(e: ProofError) -> Response {
    let status = match e {
        ProofError::NotFound => StatusCode::NOT_FOUND,
        ProofError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn latest_checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let Ok(logs) = state.logs.lock() else {
        return unavailable();
    };
    match logs.latest_checkpoint(&tenant) {
        Some(cp) => Json(cp.clone()).into_response(),
        None => not_found(&tenant),
    }
}

/// `?event_id=`.
#[derive(serde::Deserialize)]
struct InclusionQuery {
    event_id: String,
}

async fn inclusion(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<InclusionQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let Ok(logs) = state.logs.lock() else {
        return unavailable();
    };
    match logs.inclusion(&tenant, &q.event_id) {
        Ok(p) => Json(p).into_response(),
        Err(e) => proof_error(e),
    }
}

/// `?from=&to=`.
#[derive(serde::Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn consistency(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<ConsistencyQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let Ok(logs) = state.logs.lock() else {
        return unavailable();
    };
    match logs.consistency(&tenant, q.from, q.to) {
        Ok(p) => Json(p).into_response(),
        Err(e) => proof_error(e),
    }
}

#[cfg(test)]
mod tests {
    //! The cross-tenant battery: every tenant endpoint, with foreign ids, path tricks and
    //! query injection, must never show another tenant's data.
    use axum::body::Body;
    use axum::http::Request;
    use custody_operators::checkpoint::Signer;
    use custody_operators::merkle;
    use custody_operators::record::ViewUpdate;
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{Role, TokenSettings};

    const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];

    fn app() -> Router {
        let mut live = LiveViews::default();
        let mut rows = Vec::new();
        let mut checkpoints = Vec::new();
        let signer = Signer::from_seed(&[7; 32]);
        for tenant in TENANTS {
            live.apply(
                1,
                &[ViewUpdate::EventCount {
                    tenant_id: tenant.into(),
                    event_type: "TOOL_CALLED".into(),
                    count: 3,
                    diff: 1,
                }],
            );
            let leaves: Vec<[u8; 32]> = (0..3u8).map(|i| [i + tenant.len() as u8; 32]).collect();
            for (seq, leaf) in leaves.iter().enumerate() {
                rows.push((
                    tenant.to_string(),
                    seq as u64,
                    format!("{tenant}-e{seq}"),
                    *leaf,
                ));
            }
            checkpoints.push(signer.checkpoint(tenant, 3, &merkle::root(&leaves), &[1; 32], 1, 0));
        }
        let tokens: Vec<(String, TokenSettings)> = [
            ("a-dash", "tenant-a", Role::Dashboard),
            ("a-reg", "tenant-a", Role::Regulator),
            ("root", "*", Role::Admin),
        ]
        .into_iter()
        .map(|(name, tenant, role)| {
            (
                name.to_string(),
                TokenSettings {
                    sha256: hex::encode(Sha256::digest(format!("secret-{name}"))),
                    tenant: tenant.into(),
                    role,
                },
            )
        })
        .collect();
        router(AppState {
            auth: Arc::new(ApiAuth::new(tokens.iter().map(|(n, t)| (n, t))).unwrap()),
            metrics: Metrics::new(),
            live: Arc::new(Mutex::new(live)),
            logs: Arc::new(Mutex::new(LiveLogs::load(rows, checkpoints))),
        })
    }

    async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer secret-{t}"));
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn endpoints(tenant: &str) -> Vec<String> {
        vec![
            format!("/v1/tenants/{tenant}/views/event-counts"),
            format!("/v1/tenants/{tenant}/views/hitl-latency"),
            format!("/v1/tenants/{tenant}/checkpoints/latest"),
            format!("/v1/tenants/{tenant}/proofs/inclusion?event_id={tenant}-e1"),
            format!("/v1/tenants/{tenant}/proofs/consistency?from=1&to=3"),
        ]
    }

    #[tokio::test]
    async fn no_token_reads_another_tenant() {
        let app = app();
        // Own tenant: allowed for the regulator.
        for uri in endpoints("tenant-a") {
            let (status, body) = get(&app, &uri, Some("a-reg")).await;
            assert!(
                status == StatusCode::OK || uri.contains("hitl"),
                "{uri}: {status} {body}"
            );
            assert!(!body.contains("tenant-b"), "{uri}: {body}");
        }
        // A foreign tenant looks exactly like one that does not exist.
        for token in ["a-dash", "a-reg"] {
            for (foreign, missing) in endpoints("tenant-b").iter().zip(endpoints("tenant-zz")) {
                let (fs, fb) = get(&app, foreign, Some(token)).await;
                let (ms, mb) = get(&app, &missing, Some(token)).await;
                assert_eq!(fs, StatusCode::NOT_FOUND, "{foreign}: {fb}");
                assert_eq!(
                    (fs, fb.replace("tenant-b", "X")),
                    (ms, mb.replace("tenant-zz", "X"))
                );
            }
        }
        // Path tricks and query injection.
        for uri in [
            "/v1/tenants/tenant-a/../tenant-b/views/event-counts",
            "/v1/tenants/tenant-a%2F..%2Ftenant-b/views/event-counts",
            "/v1/tenants/TENANT-B/views/event-counts",
            "/v1/tenants/tenant-b%00/views/event-counts",
            "/v1/tenants//tenant-b/views/event-counts",
            "/v1/tenants/tenant-a/proofs/inclusion?event_id=tenant-b-e1",
            "/v1/tenants/tenant-a/proofs/inclusion?event_id=tenant-a-e1&tenant=tenant-b",
            "/v1/tenants/tenant-b/proofs/inclusion?event_id=tenant-b-e1&tenant=tenant-a",
            "/v1/tenants/*/views/event-counts",
            "/v1/tenants/%2A/views/event-counts",
        ] {
            let (status, body) = get(&app, uri, Some("a-reg")).await;
            assert!(!body.contains("tenant-b-e"), "{uri}: {body}");
            assert!(
                status != StatusCode::OK || !body.contains("\"tenant-b\""),
                "{uri}: {status} {body}"
            );
            // A path that names tenant-b, however spelled, never answers with data.
            let path = uri.split('?').next().unwrap_or_default().to_lowercase();
            if path.contains("tenant-b") {
                assert_ne!(status, StatusCode::OK, "{uri}: {body}");
            }
        }
        // The listing shows only the caller's tenant.
        let (_, body) = get(&app, "/v1/tenants", Some("a-dash")).await;
        assert!(
            body.contains("tenant-a") && !body.contains("tenant-b"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn tokens_and_roles_are_enforced() {
        let app = app();
        for uri in endpoints("tenant-a") {
            assert_eq!(
                get(&app, &uri, None).await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
            assert_eq!(
                get(&app, &uri, Some("forged")).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            get(
                &app,
                "/v1/tenants/tenant-a/checkpoints/latest",
                Some("a-dash")
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(
                &app,
                "/v1/tenants/tenant-a/views/event-counts",
                Some("a-dash")
            )
            .await
            .0,
            StatusCode::OK
        );
        for tenant in TENANTS {
            for uri in endpoints(tenant) {
                let (status, body) = get(&app, &uri, Some("root")).await;
                assert!(
                    status == StatusCode::OK || uri.contains("hitl"),
                    "{uri}: {body}"
                );
            }
        }
        let (_, body) = get(&app, "/v1/tenants", Some("root")).await;
        assert!(
            body.contains("tenant-a") && body.contains("tenant-b"),
            "{body}"
        );
        assert_eq!(get(&app, "/healthz", None).await.0, StatusCode::OK);
    }
}
