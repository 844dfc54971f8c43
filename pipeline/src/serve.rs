//! HTTP serving: Prometheus `/metrics` and the live views as JSON per tenant.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use custody_operators::Metrics;
use custody_reports::live::LiveViews;
use serde_json::json;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Process metrics.
    pub metrics: Metrics,
    /// Live views.
    pub live: Arc<Mutex<LiveViews>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/tenants", get(tenants))
        .route("/v1/tenants/{tenant}/views/event-counts", get(event_counts))
        .route("/v1/tenants/{tenant}/views/hitl-latency", get(hitl_latency))
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
