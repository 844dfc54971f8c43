//! HTTP serving: Prometheus `/metrics` and the live views as JSON per tenant.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use custody_operators::Metrics;
use custody_reports::live::LiveViews;
use custody_reports::proofs::{LiveLogs, ProofError};
use serde_json::json;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
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

fn not_found(tenant: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no such tenant {tenant:?}")})),
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

async fn tenants(State(state): State<AppState>) -> Response {
    let Ok(live) = state.live.lock() else {
        return unavailable();
    };
    Json(json!({ "tenants": live.tenants(), "total_events": live.total_events() })).into_response()
}

async fn event_counts(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    let Ok(live) = state.live.lock() else {
        return unavailable();
    };
    match live.event_counts(&tenant) {
        Some(view) => Json(view).into_response(),
        None => not_found(&tenant),
    }
}

async fn hitl_latency(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
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

async fn latest_checkpoint(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
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
    Path(tenant): Path<String>,
    Query(q): Query<InclusionQuery>,
) -> Response {
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
    Path(tenant): Path<String>,
    Query(q): Query<ConsistencyQuery>,
) -> Response {
    let Ok(logs) = state.logs.lock() else {
        return unavailable();
    };
    match logs.consistency(&tenant, q.from, q.to) {
        Ok(p) => Json(p).into_response(),
        Err(e) => proof_error(e),
    }
}
