//! HTTP serving: Prometheus `/metrics` and, per tenant behind bearer tokens
//! ([`crate::auth`]), the live views, checkpoints and proofs as JSON.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use custody_operators::Metrics;
use custody_operators::checkpoint::Signer;
use custody_operators::export::{self, ExportFormat};
use custody_operators::record::ViewId;
use custody_reports::document::SignedReport;
use custody_reports::live::LiveViews;
use custody_reports::period::{self, Cut};
use custody_reports::proofs::{LiveLogs, Located, ProofError};
use custody_reports::query::{LakeEngine, QueryError};
use custody_reports::regulatory::{self, CheckpointRef, ReportContext};
use serde_json::{Value, json};

use crate::access_log::{Access, AccessLog};
use crate::auth::{ApiAuth, Need, not_found};
use crate::lake_pool::{LakeError, LakePool};
use custody_operators::sinks::iceberg::EventQuery;
use custody_operators::verify::EventRow;
use custody_schemas::event::EventType;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Bearer tokens.
    pub auth: Arc<ApiAuth>,
    /// The lake, for event queries (run off the serving threads, bounded, with deadlines).
    pub lake: Option<Arc<LakePool>>,
    /// Deadline of any request.
    pub request_timeout: std::time::Duration,
    /// Key binding page cursors to their tenant (per process).
    pub cursor_key: [u8; 32],
    /// Process metrics.
    pub metrics: Metrics,
    /// Live views.
    pub live: Arc<Mutex<LiveViews>>,
    /// Live tenant logs (checkpoints and proofs).
    pub logs: Arc<Mutex<LiveLogs>>,
    /// What reports read besides the views (rules, retention).
    pub report_ctx: Arc<ReportContext>,
    /// Signs bulk exports (the checkpoint key).
    pub signer: Option<Signer>,
    /// Where tenant API requests are recorded (see [`crate::access_log`]).
    pub access: Option<Arc<AccessLog>>,
    /// Tokenizes a filter value naming a person (`?user=jane@example.com`) as the pipeline
    /// tokenized the ids it stored, so the filter finds that person's events.
    pub person_ids: Option<Arc<Mutex<custody_operators::pii::Tokenizer>>>,
}

/// `value` as the pipeline stores it for `tenant`: its personal data tokenized (an id that
/// holds none, or a token already, is unchanged).
fn stored_id(state: &AppState, tenant: &str, value: String) -> String {
    let Some(tokenizer) = &state.person_ids else {
        return value;
    };
    // On a thread of its own: a tenant's first token key may come from the keystore, which
    // blocks on its own runtime (not allowed on the server's).
    let tokenized = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut counts = [0; custody_operators::pii::KINDS];
                tokenizer
                    .lock()
                    .ok()?
                    .tokenize_str(tenant, &value, &mut counts)
            })
            .join()
            .ok()
            .flatten()
    });
    tokenized.unwrap_or(value)
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Json(crate::api_index::index()) }))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::api_index::openapi()) }),
        )
        .route("/v1/public-key", get(public_key))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/tenants", get(tenants))
        .route("/v1/tenants/{tenant}/views/event-counts", get(event_counts))
        .route("/v1/tenants/{tenant}/views/hitl-latency", get(hitl_latency))
        .route(
            "/v1/tenants/{tenant}/checkpoints/latest",
            get(latest_checkpoint),
        )
        .route("/v1/checkpoints", get(witness_checkpoints))
        .route("/v1/checkpoints/consistency", get(witness_consistency))
        .route("/v1/tenants/{tenant}/proofs/inclusion", get(inclusion))
        .route("/v1/tenants/{tenant}/proofs/consistency", get(consistency))
        .route("/v1/tenants/{tenant}/events", get(events))
        .route("/v1/tenants/{tenant}/sessions/{session}", get(session))
        .route("/v1/tenants/{tenant}/events/{event_id}/causes", get(causes))
        .route("/v1/tenants/{tenant}/views/{view}", get(keyed_view))
        .route("/v1/tenants/{tenant}/overrides", get(overrides))
        .route("/v1/tenants/{tenant}/reports", get(reports))
        .route("/v1/tenants/{tenant}/reports/{report}", get(report))
        .route("/v1/tenants/{tenant}/export", get(export_events))
        .route(
            "/v1/tenants/{tenant}/holds",
            get(list_holds).post(place_hold),
        )
        .route(
            "/v1/tenants/{tenant}/holds/{hold_id}/release",
            axum::routing::post(release_hold),
        )
        .route("/v1/tenants/{tenant}/sql", post(sql))
        .route("/dashboard", get(crate::dashboard::page))
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_access,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        // A handler that panics (a bug: no input may make one) answers 500 instead of
        // dropping the connection; the server goes on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "internal error"})),
            )
                .into_response()
        }))
        .with_state(state)
}

/// The key signing checkpoints, reports and exports, to verify them offline.
async fn public_key(State(state): State<AppState>) -> Response {
    match &state.signer {
        Some(signer) => Json(json!({
            "algorithm": "ed25519",
            "key_id": signer.key_id(),
            "public_key": hex::encode(signer.public_key().as_bytes()),
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "this server has no signing key"})),
        )
            .into_response(),
    }
}

/// A path no route serves: 404 with a body saying where the index is.
async fn no_route(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": format!("no endpoint at {}", uri.path()),
            "index": "/",
            "openapi": "/openapi.json",
        })),
    )
        .into_response()
}

/// Answers 503 to a request still unanswered at its deadline (its work is dropped).
async fn deadline(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({"error": format!(
                "no answer within {:?}; try again or narrow the request",
                state.request_timeout
            )})),
        )
            .into_response(),
    }
}

/// Query parameters read strictly: a parameter the endpoint does not know, or a value it
/// cannot read, is a 400 that names it (never silently ignored).
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(Params(t)),
            Err(rejection) => Err(bad_request(rejection.body_text())),
        }
    }
}

/// The parameters of an endpoint that takes none.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Records each tenant API request in a tenant's audit log before answering it.
async fn record_access(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let method = request.method().to_string();
    // The tenant as the router decodes it (`tenant%2D0001` is `tenant-0001`): the record must
    // name the tenant whose data was answered, however the request spelled it.
    let target = path
        .strip_prefix("/v1/tenants/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(tenant, _)| {
            percent_encoding::percent_decode_str(tenant)
                .decode_utf8()
                .ok()
                .map(|t| t.into_owned())
        });
    // Without a valid token there is no one to record (the 401 is the answer).
    let caller = match state.auth.principal(request.headers()) {
        Ok(p) => Some(p.cloned()),
        Err(_) => None,
    };
    let response = next.run(request).await;
    // The text of a SQL query, which the handler leaves on its answer to be recorded.
    let sql = response
        .extensions()
        .get::<RecordedSql>()
        .map(|s| s.0.clone());
    let (Some(access), Some(target), Some(caller)) = (&state.access, target, caller) else {
        return response;
    };
    let (name, role, own) = match &caller {
        Some(p) => (
            p.name.as_str(),
            format!("{:?}", p.role).to_lowercase(),
            p.tenant.clone(),
        ),
        None => ("anonymous", "open-api".to_string(), None),
    };
    let known = known_tenant(&state, &target);
    let may_read = own.as_deref().is_none_or(|t| t == target);
    let Some(tenant) = (if known && may_read { Some(target) } else { own }) else {
        return response;
    };
    let recorded = access.record(&Access {
        tenant: &tenant,
        principal: name,
        role: &role,
        method: &method,
        path: &path,
        query: query.as_deref(),
        sql: sql.as_deref(),
        status: response.status().as_u16(),
    });
    match recorded {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, "cannot record an API access; refusing to answer");
            access_log_unavailable()
        }
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.auth.authorize_metrics(&headers) {
        return denied.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/tenants/{t}/holds`: the legal holds in force on the tenant, from its log.
async fn list_holds(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let Some(lake) = state.lake.clone() else {
        return unavailable();
    };
    let events = lake
        .run(|w| async move { w.hold_events().await.map_err(|e| e.to_string()) })
        .await;
    match events {
        Ok(events) => {
            let holds = custody_operators::holds::active(events)
                .remove(&tenant)
                .unwrap_or_default();
            Json(json!({"tenant_id": tenant, "holds": holds})).into_response()
        }
        Err(e) => lake_failed("legal holds", e),
    }
}

/// The caller's name for the record (`anonymous` on an open API).
fn caller_name(state: &AppState, headers: &HeaderMap) -> String {
    match state.auth.principal(headers) {
        Ok(Some(p)) => p.name.clone(),
        _ => "anonymous".into(),
    }
}

/// Appends a legal hold event to the authenticated access log (chained by the serving
/// pipeline within an epoch): 202 with its id, 400 if it is not a valid event.
fn append_hold_event(
    state: &AppState,
    tenant: &str,
    by: &str,
    event_type: &str,
    payload: Value,
) -> Response {
    let Some(access) = &state.access else {
        return unavailable();
    };
    let (event_id, event) = match crate::holds::hold_event(tenant, by, event_type, payload.clone())
    {
        Ok(e) => e,
        Err(e) => return bad_request(e.to_string()),
    };
    match access.append_event(&event) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "hold_id": payload["hold_id"],
                "event_id": event_id,
                "event_type": event_type,
                "status": "recorded: chained into the tenant's log with the next epoch",
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot record a legal hold");
            access_log_unavailable()
        }
    }
}

/// `POST /v1/tenants/{t}/holds` (admin): places a hold, `{"reason": …}` and optionally one of
/// `session_id`, `agent_id`, `from`/`to`, and a `hold_id`.
async fn place_hold(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Admin) {
        return denied.into_response();
    }
    let request: crate::holds::PlaceHold = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body: {e}")),
    };
    let by = caller_name(&state, &headers);
    let payload = match request.payload(&by) {
        Ok(p) => p,
        Err(e) => return bad_request(e.to_string()),
    };
    append_hold_event(&state, &tenant, &by, "LEGAL_HOLD_PLACED", payload)
}

/// `{"reason": …}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseHold {
    reason: String,
}

/// `POST /v1/tenants/{t}/holds/{id}/release` (admin).
async fn release_hold(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, hold_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Admin) {
        return denied.into_response();
    }
    let request: ReleaseHold = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body: {e} (expected {{\"reason\": \"...\"}})")),
    };
    let by = caller_name(&state, &headers);
    let payload = json!({"hold_id": hold_id, "reason": request.reason, "requested_by": by});
    append_hold_event(&state, &tenant, &by, "LEGAL_HOLD_RELEASED", payload)
}

/// Whether `tenant` has events (a tenant the views know).
fn known_tenant(state: &AppState, tenant: &str) -> bool {
    state.live.lock().is_ok_and(|l| l.has_tenant(tenant))
}

/// 503: what must be recorded first could not be.
fn access_log_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "access log unavailable"})),
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

async fn tenants(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(NoParams {}): Params<NoParams>,
) -> Response {
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
    Params(NoParams {}): Params<NoParams>,
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
    Params(NoParams {}): Params<NoParams>,
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
    Params(NoParams {}): Params<NoParams>,
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

/// For witnesses: only a principal of every tenant (an admin or regulator token for `*`, or
/// the open development API) may read every tenant's checkpoints.
/// The refusal, if the caller may not.
fn witness_denied(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    match state.auth.principal(headers) {
        Err(denied) => Some(denied.into_response()),
        Ok(Some(p)) if p.tenant.is_some() || p.role == crate::auth::Role::Dashboard => Some(
            (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "witness endpoints need a token for every tenant"})),
            )
                .into_response(),
        ),
        Ok(_) => None,
    }
}

/// Every tenant's latest checkpoint, for witnesses. Not a tenant's data (sizes, roots and
/// signatures only), so not recorded in a tenant's access log.
async fn witness_checkpoints(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(NoParams {}): Params<NoParams>,
) -> Response {
    if let Some(denied) = witness_denied(&state, &headers) {
        return denied;
    }
    let Ok(logs) = state.logs.lock() else {
        return unavailable();
    };
    Json(json!({ "checkpoints": logs.latest_checkpoints() })).into_response()
}

/// `?tenant=&from=&to=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessConsistencyQuery {
    tenant: String,
    from: u64,
    to: u64,
}

/// A consistency proof of any tenant's log, for witnesses.
async fn witness_consistency(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<WitnessConsistencyQuery>,
) -> Response {
    if let Some(denied) = witness_denied(&state, &headers) {
        return denied;
    }
    consistency_answer(&state, &q.tenant, q.from, q.to)
}

/// `?event_id=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    event_id: String,
}

async fn inclusion(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(q): Params<InclusionQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let Ok(mut logs) = state.logs.lock() else {
        return unavailable();
    };
    match logs.inclusion(&tenant, &q.event_id) {
        Ok(p) => Json(p).into_response(),
        Err(e) => proof_error(e),
    }
}

/// `?from=&to=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn consistency(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(q): Params<ConsistencyQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    consistency_answer(&state, &tenant, q.from, q.to)
}

/// A consistency proof of `tenant`'s log from size `from` to `to`, or why not.
fn consistency_answer(state: &AppState, tenant: &str, from: u64, to: u64) -> Response {
    let Ok(mut logs) = state.logs.lock() else {
        return unavailable();
    };
    match logs.consistency(tenant, from, to) {
        Ok(p) => Json(p).into_response(),
        Err(e) => proof_error(e),
    }
}

/// The lake, for a caller allowed to read `tenant`'s events.
fn tenant_lake(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Arc<LakePool>, Box<Response>> {
    state
        .auth
        .authorize(headers, tenant, Need::Views)
        .map_err(|denied| Box::new(denied.into_response()))?;
    state.lake.clone().ok_or_else(|| Box::new(unavailable()))
}

/// The answer to a lake query that has none: 503, with `Retry-After` when the lake is busy.
fn lake_failed(what: &str, e: LakeError) -> Response {
    match e {
        LakeError::Busy(_) | LakeError::TimedOut(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        LakeError::Failed(_) => {
            tracing::error!(error = %e, "{what} failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": format!("{what} failed")})),
            )
                .into_response()
        }
    }
}

/// Runs an event query of `tenant` on the lake pool.
async fn query_lake(
    lake: &LakePool,
    tenant: &str,
    query: EventQuery,
) -> Result<Vec<EventRow>, LakeError> {
    let tenant = tenant.to_string();
    lake.run(move |w| async move {
        let engine = LakeEngine::new(w);
        let lake = engine
            .tenant_tables(&tenant, &[custody_schemas::tables::EVENTS])
            .await
            .map_err(|e| e.to_string())?;
        lake.events(&query).await.map_err(|e| e.to_string())
    })
    .await
}

/// `from` and `to` (RFC 3339) as µs since the epoch: `from` inclusive, `to` exclusive.
fn time_range(from: &Option<String>, to: &Option<String>) -> Result<TimeRange, String> {
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        v.as_deref()
            .map(|t| custody_schemas::time::parse_rfc3339(t).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    let range = TimeRange {
        from_us: time("from", from)?,
        to_us: time("to", to)?,
    };
    if let (Some(f), Some(t)) = (range.from_us, range.to_us)
        && f > t
    {
        return Err("from is after to".into());
    }
    Ok(range)
}

/// A time range (µs since the epoch).
#[derive(Clone, Copy, Default)]
struct TimeRange {
    from_us: Option<i64>,
    to_us: Option<i64>,
}

/// An event type as the API takes it: its wire name, exactly.
fn event_type_param(name: &str) -> Result<EventType, String> {
    EventType::parse(name).ok_or_else(|| {
        let hint = EventType::parse(&name.to_ascii_uppercase())
            .map(|t| format!("; event types are upper case: {}", t.as_str()))
            .unwrap_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                format!("; known types: {}", known.join(", "))
            });
        format!("unknown event type {name:?}{hint}")
    })
}

/// `?type=&agent=&user=&session=&model_version=&from=&to=&limit=&cursor=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    agent: Option<String>,
    user: Option<String>,
    session: Option<String>,
    model_version: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Largest page.
const MAX_PAGE: usize = 1000;

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

fn cursor_mac(key: &[u8; 32], tenant: &str, seq: u64) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    // Panic: HMAC takes keys of any length.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(tenant.as_bytes());
    mac.update(&[0]);
    mac.update(&seq.to_be_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    out
}

/// An opaque cursor after `seq`, valid only for `tenant`.
fn encode_cursor(key: &[u8; 32], tenant: &str, seq: u64) -> String {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.extend_from_slice(&cursor_mac(key, tenant, seq));
    hex::encode(bytes)
}

fn decode_cursor(key: &[u8; 32], tenant: &str, cursor: &str) -> Option<u64> {
    let bytes = hex::decode(cursor).ok()?;
    let (seq, mac) = bytes.split_at_checked(8)?;
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    (mac == cursor_mac(key, tenant, seq)).then_some(seq)
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Views) {
        return denied.into_response();
    }
    let range = match time_range(&q.from, &q.to) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let event_type = match q.event_type.as_deref().map(event_type_param).transpose() {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    if q.limit == Some(0) {
        return bad_request("limit must be at least 1".into());
    }
    let after_seq = match &q.cursor {
        Some(c) => match decode_cursor(&state.cursor_key, &tenant, c) {
            Some(seq) => Some(seq),
            None => return bad_request("invalid cursor".into()),
        },
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let lake = match tenant_lake(&state, &headers, &tenant) {
        Ok(lake) => lake,
        Err(response) => return *response,
    };
    // The chain's committed length bounds the positions a page may walk.
    let end_seq = state
        .logs
        .lock()
        .ok()
        .and_then(|l| l.latest_checkpoint(&tenant).map(|cp| cp.tree_size));
    let query = EventQuery {
        after_seq,
        end_seq,
        event_type: event_type.map(|t| t.as_str().to_string()),
        agent_id: q.agent,
        user_id: q.user.map(|u| stored_id(&state, &tenant, u)),
        session_id: q.session,
        model_version: q.model_version,
        from_us: range.from_us,
        to_us: range.to_us,
        limit,
        ..EventQuery::default()
    };
    let rows = match query_lake(&lake, &tenant, query).await {
        Ok(rows) => rows,
        Err(e) => return lake_failed("event query", e),
    };
    if rows.is_empty() && after_seq.is_none() {
        let known = known_tenant(&state, &tenant);
        if !known {
            return not_found(&tenant);
        }
    }
    let next_cursor = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| encode_cursor(&state.cursor_key, &tenant, r.seq as u64))
        })
        .flatten();
    Json(json!({ "events": rows, "next_cursor": next_cursor })).into_response()
}

/// Most events returned for one causal chain.
const MAX_CHAIN: usize = 10_000;

/// Positions up to an event that `/causes` reads first (demo sessions span about 20).
const CAUSES_WINDOW: u64 = 64;

/// One line of a session's narrative: when, who, what.
fn narrate(e: &custody_operators::verify::EventRow) -> String {
    let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
    let field = |name: &str| payload[name].as_str().unwrap_or("?").to_string();
    let detail = match e.event_type.as_str() {
        "TOOL_CALLED" => format!("called {}", field("tool_name")),
        "TOOL_RESULT_RECEIVED" => format!("got a result from {}", field("tool_name")),
        "MODEL_DECISION" => format!("model {} decided", field("model_id")),
        "HUMAN_ESCALATION_TRIGGERED" => "asked a human to approve".to_string(),
        "HUMAN_REVIEW_DECISION" => format!("reviewer decided: {}", field("decision")),
        "POLICY_DECISION" => format!("policy said {}", field("outcome")),
        other => other.to_lowercase().replace('_', " "),
    };
    format!("{} {} {}", e.event_time, e.agent_id, detail)
}

fn missing(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no such {what} {id:?}")})),
    )
        .into_response()
}

/// A session's events in chain order, with a human-readable narrative.
/// `?limit=&cursor=` of a session's page.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Events of a session in one page unless asked otherwise (most sessions are whole in it).
const SESSION_PAGE: usize = 200;

async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, session_id)): Path<(String, String)>,
    Params(q): Params<SessionQuery>,
) -> Response {
    if q.limit == Some(0) {
        return bad_request("limit must be at least 1".into());
    }
    let lake = match tenant_lake(&state, &headers, &tenant) {
        Ok(lake) => lake,
        Err(response) => return *response,
    };
    let after_seq = match &q.cursor {
        Some(c) => match decode_cursor(&state.cursor_key, &tenant, c) {
            Some(seq) => Some(seq),
            None => return bad_request("invalid cursor".into()),
        },
        None => None,
    };
    let limit = q.limit.unwrap_or(SESSION_PAGE).clamp(1, MAX_PAGE);
    // The event index bounds the session's positions (as of the tenant's latest checkpoint,
    // as every page of events): each range read opens only the files of its positions, a
    // window at a time until the page is full.
    let ranges = state
        .logs
        .lock()
        .map(|logs| logs.session_positions(&tenant, &session_id))
        .unwrap_or_default();
    let mut rows = Vec::new();
    for range in ranges {
        let start = after_seq.map_or(range.start, |a| range.start.max(a + 1));
        if start >= range.end {
            continue;
        }
        let query = EventQuery {
            session_id: Some(session_id.clone()),
            seq_range: Some((start, range.end)),
            limit: limit - rows.len(),
            ..EventQuery::default()
        };
        match query_lake(&lake, &tenant, query).await {
            Ok(part) => rows.extend(part),
            Err(e) => return lake_failed("session query", e),
        }
        if rows.len() >= limit {
            break;
        }
    }
    if rows.is_empty() && after_seq.is_none() {
        return missing("session", &session_id);
    }
    let next_cursor = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| encode_cursor(&state.cursor_key, &tenant, r.seq as u64))
        })
        .flatten();
    let narrative: Vec<String> = rows.iter().map(narrate).collect();
    Json(json!({
        "session_id": session_id,
        "events": rows,
        "narrative": narrative,
        "next_cursor": next_cursor,
    }))
    .into_response()
}

/// The event and its causes, following `parent_event_id` within the tenant, nearest first.
async fn causes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, event_id)): Path<(String, String)>,
    Params(NoParams {}): Params<NoParams>,
) -> Response {
    let lake = match tenant_lake(&state, &headers, &tenant) {
        Ok(lake) => lake,
        Err(response) => return *response,
    };
    // Causes are nearly always shortly before an event: the tenant's events in a window of
    // positions up to it (found by the event index) are read at once and the parents
    // followed in memory; a parent before the window is found the same way, with a window
    // four times larger. One read for a usual chain, not one per hop, and none of the whole
    // history (an event missing from the index is looked for only where it does not reach).
    let locate = |id: &str| {
        state
            .logs
            .lock()
            .map(|logs| logs.locate(&tenant, id))
            .unwrap_or(Located::Nowhere)
    };
    let mut chain = Vec::new();
    let mut next = Some(event_id.clone());
    let mut seen = std::collections::HashSet::new();
    let mut loaded: std::collections::HashMap<String, custody_operators::verify::EventRow> =
        std::collections::HashMap::new();
    let mut window = CAUSES_WINDOW;
    while let Some(id) = next.take() {
        if !seen.insert(id.clone()) || chain.len() >= MAX_CHAIN {
            break;
        }
        if !loaded.contains_key(&id) {
            let query = match locate(&id) {
                Located::At(at) => {
                    let start = (at + 1).saturating_sub(window);
                    window = window.saturating_mul(4);
                    EventQuery {
                        seq_range: Some((start, at + 1)),
                        limit: MAX_CHAIN,
                        ..EventQuery::default()
                    }
                }
                Located::Within(range) => EventQuery {
                    event_ids: Some(vec![id.clone()]),
                    seq_range: Some((range.start, range.end)),
                    limit: 1,
                    ..EventQuery::default()
                },
                Located::Nowhere => break,
            };
            match query_lake(&lake, &tenant, query).await {
                Ok(rows) => loaded.extend(rows.into_iter().map(|r| (r.event_id.clone(), r))),
                Err(e) => return lake_failed("causal chain query", e),
            }
        }
        let Some(row) = loaded.remove(&id) else {
            break;
        };
        next = row.parent_event_id.clone();
        chain.push(row);
    }
    if chain.is_empty() {
        return missing("event", &event_id);
    }
    Json(json!({ "event_id": event_id, "causes": chain })).into_response()
}

/// The keyed view served at `/views/{name}`.
fn view_by_name(name: &str) -> Option<ViewId> {
    ViewId::ALL
        .into_iter()
        .find(|v| v.name().replace('_', "-") == name)
}

/// `?limit=&offset=` over a view's rows (in key order).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Rows of a keyed view: sessions, causal-chains, hitl-groups, sla-breaches,
/// policy-violations, alerts, model-versions.
async fn keyed_view(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    Params(q): Params<PageQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Views) {
        return denied.into_response();
    }
    let Some(view) = view_by_name(&name) else {
        return missing("view", &name);
    };
    let Ok(live) = state.live.lock() else {
        return unavailable();
    };
    if !live.has_tenant(&tenant) {
        return not_found(&tenant);
    }
    let all = live.rows(view, &tenant);
    let total = all.len();
    let rows: Vec<Value> = all
        .values()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(MAX_PAGE).clamp(1, 10 * MAX_PAGE))
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    Json(json!({
        "tenant_id": tenant,
        "view": name,
        "epoch": live.epoch(),
        "definition": regulatory::view_definition(view.name()),
        "total": total,
        "rows": rows,
    }))
    .into_response()
}

/// Human overrides: review decisions that rejected or modified the agent's proposal.
/// `?from=&to=` (of the decision's event time).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn overrides(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(q): Params<RangeQuery>,
) -> Response {
    let range = match time_range(&q.from, &q.to) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let lake = match tenant_lake(&state, &headers, &tenant) {
        Ok(lake) => lake,
        Err(response) => return *response,
    };
    let query = EventQuery {
        event_type: Some("HUMAN_REVIEW_DECISION".into()),
        from_us: range.from_us,
        to_us: range.to_us,
        limit: usize::MAX,
        ..EventQuery::default()
    };
    match query_lake(&lake, &tenant, query).await {
        Ok(rows) => {
            let overrides: Vec<Value> = rows
                .iter()
                .filter_map(|r| {
                    let p: Value = serde_json::from_str(&r.payload).ok()?;
                    matches!(p["decision"].as_str(), Some("reject" | "modify")).then(|| {
                        json!({
                            "event_id": r.event_id,
                            "seq": r.seq,
                            "decided_at": p["decided_at"],
                            "decision": p["decision"],
                            "reviewer_id": p["reviewer_id"],
                            "reviewer_role": p["reviewer_role"],
                            "escalation_event_id": p["escalation_event_id"],
                            "modification": p["modification"],
                            "agent_id": r.agent_id,
                            "session_id": r.session_id,
                        })
                    })
                })
                .collect();
            let known = known_tenant(&state, &tenant);
            if rows.is_empty() && !known {
                return not_found(&tenant);
            }
            Json(json!({ "tenant_id": tenant, "overrides": overrides })).into_response()
        }
        Err(e) => lake_failed("overrides query", e),
    }
}

async fn reports(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let known = known_tenant(&state, &tenant);
    if !known {
        return not_found(&tenant);
    }
    let list: Vec<Value> = regulatory::REPORTS
        .iter()
        .map(|(name, title)| {
            json!({"report": name, "title": title,
                   "href": format!("/v1/tenants/{tenant}/reports/{name}")})
        })
        .collect();
    Json(json!({ "tenant_id": tenant, "reports": list })).into_response()
}

/// `?from=&to=&as_of=&format=` of a report.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    as_of: Option<u64>,
    format: Option<String>,
}

/// How a report is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReportFormat {
    /// The report's JSON.
    Json,
    /// A signed document ([`SignedReport`]).
    Signed,
    /// An HTML page carrying the signed document.
    Html,
}

/// The most events a reproducible report recomputes its views over.
const REPORT_MAX_EVENTS: usize = 500_000;

/// A regulatory report. Without `from`, `to`, `as_of` or `format`, rendered from the live
/// views at the last committed epoch; with any of them, *reproducible*: the views recomputed
/// over the tenant's events in `[from, to)` at positions below the checkpoint of tree size
/// `as_of` (default: the latest), the same bytes for the same inputs (see
/// [`custody_reports::period`]); `format=signed` and `format=html` sign it
/// ([`custody_reports::document`]).
async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    Params(q): Params<ReportQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let format = match q.format.as_deref() {
        None | Some("json") => ReportFormat::Json,
        Some("signed") => ReportFormat::Signed,
        Some("html") => ReportFormat::Html,
        Some(other) => {
            return bad_request(format!(
                "format must be json, signed or html, not {other:?}"
            ));
        }
    };
    if !regulatory::REPORTS.iter().any(|(n, _)| *n == name) {
        return missing("report", &name);
    }
    let scoped = q.from.is_some() || q.to.is_some() || q.as_of.is_some();
    if !scoped && format == ReportFormat::Json {
        let mut ctx = (*state.report_ctx).clone();
        ctx.checkpoint = state
            .logs
            .lock()
            .ok()
            .and_then(|l| l.latest_checkpoint(&tenant).map(CheckpointRef::from));
        let Ok(live) = state.live.lock() else {
            return unavailable();
        };
        if !live.has_tenant(&tenant) {
            return not_found(&tenant);
        }
        return match regulatory::render(&name, &tenant, &live, &ctx) {
            Some(r) => Json(r).into_response(),
            None => missing("report", &name),
        };
    }
    let range = match time_range(&q.from, &q.to) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let latest = state
        .logs
        .lock()
        .ok()
        .and_then(|l| l.latest_checkpoint(&tenant).cloned());
    let Some(latest) = latest else {
        return not_found(&tenant);
    };
    if let Some(size) = q.as_of
        && size > latest.tree_size
    {
        return bad_request(format!(
            "as_of={size} is past the tenant's latest checkpoint (tree size {})",
            latest.tree_size
        ));
    }
    let (Some(lake), Some(signer)) = (state.lake.clone(), state.signer.clone()) else {
        return unavailable();
    };
    let cut = Cut {
        from: q.from.clone().zip(range.from_us),
        to: q.to.clone().zip(range.to_us),
        tree_size: q.as_of.unwrap_or(latest.tree_size),
    };
    let ctx = (*state.report_ctx).clone();
    let (t, n, c) = (tenant.clone(), name.clone(), cut.clone());
    let answer = lake
        .run(move |w| async move {
            let engine = LakeEngine::new(w);
            let lake = engine
                .tenant_tables(
                    &t,
                    &[
                        custody_schemas::tables::EVENTS,
                        custody_schemas::tables::CHECKPOINTS,
                    ],
                )
                .await
                .map_err(|e| e.to_string())?;
            let checkpoint = if c.tree_size == latest.tree_size {
                Some(latest)
            } else {
                lake.checkpoint_at(c.tree_size)
                    .await
                    .map_err(|e| e.to_string())?
            };
            let Some(checkpoint) = checkpoint else {
                return Ok(Err(format!(
                    "no checkpoint of the tenant has tree size {}: as_of must be the tree \
                     size of one (custody.checkpoints, over the SQL endpoint)",
                    c.tree_size
                )));
            };
            let query = EventQuery {
                from_us: c.from.as_ref().map(|(_, us)| *us),
                to_us: c.to.as_ref().map(|(_, us)| *us),
                seq_range: Some((0, c.tree_size)),
                limit: REPORT_MAX_EVENTS + 1,
                ..EventQuery::default()
            };
            let rows = lake.events(&query).await.map_err(|e| e.to_string())?;
            if rows.len() > REPORT_MAX_EVENTS {
                return Ok(Err(format!(
                    "the period holds more than {REPORT_MAX_EVENTS} events: choose a shorter one"
                )));
            }
            let (views, mut scope) = period::views_of(&rows, &c, &ctx.views);
            scope.checkpoint = Some(checkpoint.clone());
            let ctx = ReportContext {
                checkpoint: Some(CheckpointRef::from(&checkpoint)),
                ..ctx
            };
            Ok(Ok(regulatory::render_scoped(&n, &t, &views, &ctx, scope)))
        })
        .await;
    let report = match answer {
        Ok(Ok(Some(report))) => report,
        Ok(Ok(None)) => return missing("report", &name),
        Ok(Err(reason)) => return bad_request(reason),
        Err(e) => return lake_failed("report query", e),
    };
    match format {
        ReportFormat::Json => Json(report).into_response(),
        ReportFormat::Signed => (
            [(header::CONTENT_TYPE, "application/json")],
            SignedReport::sign(&signer, &report).to_json(),
        )
            .into_response(),
        ReportFormat::Html => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            SignedReport::sign(&signer, &report).to_html(&report),
        )
            .into_response(),
    }
}

/// `?format=&bundle=&from=&to=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<String>,
    bundle: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Every event of the tenant up to its latest checkpoint, signed (see
/// [`custody_operators::export`]); the manifest travels in `x-custody-*` headers.
async fn export_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(q): Params<ExportQuery>,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let range = match time_range(&q.from, &q.to) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let Some(format) = ExportFormat::parse(q.format.as_deref().unwrap_or("ndjson")) else {
        return bad_request("format must be ndjson or parquet".into());
    };
    let bundled = match q.bundle.as_deref() {
        None => false,
        Some("tar") => true,
        Some(other) => return bad_request(format!("bundle must be tar, not {other:?}")),
    };
    let (Some(lake), Some(signer)) = (state.lake.clone(), state.signer.clone()) else {
        return unavailable();
    };
    let Some(checkpoint) = state
        .logs
        .lock()
        .ok()
        .and_then(|l| l.latest_checkpoint(&tenant).cloned())
    else {
        return not_found(&tenant);
    };
    let query = EventQuery {
        from_us: range.from_us,
        to_us: range.to_us,
        limit: usize::MAX,
        ..EventQuery::default()
    };
    let mut rows = match query_lake(&lake, &tenant, query).await {
        Ok(rows) => rows,
        Err(e) => return lake_failed("export query", e),
    };
    // Exactly the log the checkpoint signs: later commits wait for the next checkpoint.
    rows.retain(|r| (r.seq as u64) < checkpoint.tree_size);
    let body = match export::encode(&rows, format) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "export encoding failed");
            return unavailable();
        }
    };
    let m = export::sign(
        &signer,
        &tenant,
        format,
        &body,
        rows.len() as u64,
        export::ExportCut {
            tree_size: checkpoint.tree_size,
            root: &checkpoint.root,
            from: q.from.as_deref(),
            to: q.to.as_deref(),
        },
    );
    let (file, content_type, body) = if bundled {
        let archive = custody_operators::export_bundle::bundle(
            &m,
            &body,
            &checkpoint,
            &signer.public_key(),
            custody_schemas::time::now_us().div_euclid(1_000_000).max(0) as u64,
        );
        (
            format!("{tenant}-export-{}.tar", checkpoint.tree_size),
            "application/x-tar",
            archive,
        )
    } else {
        (
            format!("{tenant}-events.{}", format.as_str()),
            format.content_type(),
            body,
        )
    };
    let header = |v: String| {
        axum::http::HeaderValue::from_str(&v).unwrap_or(axum::http::HeaderValue::from_static(""))
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response();
    let h = response.headers_mut();
    for (name, value) in [
        ("x-custody-tenant", m.tenant_id.clone()),
        ("x-custody-format", format.as_str().to_string()),
        ("x-custody-body-sha256", m.body_sha256.clone()),
        ("x-custody-events", m.events.to_string()),
        ("x-custody-tree-size", m.tree_size.to_string()),
        ("x-custody-root", m.root.clone()),
        ("x-custody-key-id", m.key_id.clone()),
        ("x-custody-signature", m.signature.clone()),
    ] {
        h.insert(name, header(value));
    }
    for (name, value) in [("x-custody-from", &m.from), ("x-custody-to", &m.to)] {
        if let Some(v) = value {
            h.insert(name, header(v.clone()));
        }
    }
    response
}

/// The SQL text of a request, left on its response for the access log.
#[derive(Clone)]
struct RecordedSql(String);

/// Most rows one SQL query answers.
const MAX_SQL_ROWS: usize = 10_000;
/// Longest SQL text accepted.
const MAX_SQL_BYTES: usize = 64 * 1024;

/// `{"sql": "...", "max_rows": n}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    max_rows: Option<usize>,
}

/// Read-only SQL over the tenant's tables (regulator and admin roles): every table is seen
/// through a view scoped to the tenant in the plan (see [`custody_reports::query`]); at most
/// [`MAX_SQL_ROWS`] rows, within the query deadline; the SQL text is recorded in the tenant's
/// access log.
async fn sql(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Params(NoParams {}): Params<NoParams>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = state.auth.authorize(&headers, &tenant, Need::Evidence) {
        return denied.into_response();
    }
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body: {e} (expected {{\"sql\": \"...\"}})")),
    };
    let mut response = sql_answer(&state, &tenant, &request).await;
    let mut text = request.sql;
    if text.len() > MAX_SQL_BYTES {
        let mut cut = MAX_SQL_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    response.extensions_mut().insert(RecordedSql(text));
    response
}

async fn sql_answer(state: &AppState, tenant: &str, request: &SqlRequest) -> Response {
    if request.sql.len() > MAX_SQL_BYTES {
        return bad_request(format!("the query is longer than {MAX_SQL_BYTES} bytes"));
    }
    if !known_tenant(state, tenant) {
        return not_found(tenant);
    }
    let Some(lake) = state.lake.clone() else {
        return unavailable();
    };
    let max_rows = request.max_rows.unwrap_or(1000).clamp(1, MAX_SQL_ROWS);
    let (tenant, text) = (tenant.to_string(), request.sql.clone());
    let answer = lake
        .run(move |w| async move {
            let answer = match LakeEngine::new(w).tenant(&tenant).await {
                Ok(lake) => lake.sql(&text, max_rows).await,
                Err(e) => Err(e),
            };
            Ok(answer)
        })
        .await;
    match answer {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(QueryError::Invalid(reason))) => bad_request(reason),
        Ok(Err(e)) => lake_failed("sql query", LakeError::Failed(e.to_string())),
        Err(e) => lake_failed("sql query", e),
    }
}

#[cfg(test)]
mod tests {
    //! The cross-tenant battery: every tenant endpoint, with foreign ids, path tricks and
    //! query injection, must never show another tenant's data.
    use axum::body::Body;
    use axum::http::Request;
    use custody_operators::merkle;
    use custody_operators::record::ViewUpdate;
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{Role, TokenSettings};
    use custody_operators::sinks::iceberg::Warehouse;

    const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];

    async fn app() -> Router {
        app_at().await.0
    }

    /// The app over a fresh warehouse, and that warehouse's directory.
    async fn app_at() -> (Router, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap().keep();
        let lake = Warehouse::open(&dir).await.unwrap();
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
                rows.push(custody_operators::sinks::iceberg::LeafEntry {
                    tenant: tenant.to_string(),
                    seq: seq as u64,
                    event_id: format!("{tenant}-e{seq}"),
                    session_id: "s".into(),
                    leaf: *leaf,
                    hash: *leaf,
                });
            }
            checkpoints.push(signer.checkpoint(
                tenant,
                3,
                &merkle::root(&leaves),
                &[1; 32],
                1,
                0,
                &[0; 32],
            ));
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
        let app = router(AppState {
            auth: Arc::new(ApiAuth::new(tokens.iter().map(|(n, t)| (n, t))).unwrap()),
            lake: Some(Arc::new(
                LakePool::new(lake, 4, std::time::Duration::from_secs(30)).unwrap(),
            )),
            request_timeout: std::time::Duration::from_secs(30),
            cursor_key: [3; 32],
            metrics: Metrics::new(),
            live: Arc::new(Mutex::new(live)),
            logs: Arc::new(Mutex::new({
                let mut store =
                    custody_operators::proof_store::ProofStore::open(&dir.join("proofs")).unwrap();
                store
                    .append(
                        1,
                        rows.iter()
                            .map(custody_operators::sinks::iceberg::LeafEntry::stored),
                    )
                    .unwrap();
                LiveLogs::new(store, checkpoints)
            })),
            report_ctx: Arc::new(ReportContext::default()),
            signer: Some(signer),
            access: Some(Arc::new(AccessLog::open(&dir, &[7; 32]).unwrap())),
            person_ids: None,
        });
        (app, dir)
    }

    /// The access log lines written so far in the app's warehouse.
    fn accesses(app_dir: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(app_dir.join("access-log.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let line: Value = serde_json::from_str(l).unwrap();
                serde_json::from_str(line["record"].as_str().unwrap()).unwrap()
            })
            .collect()
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
            format!("/v1/tenants/{tenant}/events?limit=5"),
            format!("/v1/tenants/{tenant}/sessions/s-1"),
            format!("/v1/tenants/{tenant}/events/{tenant}-e1/causes"),
            format!("/v1/tenants/{tenant}/views/sessions"),
            format!("/v1/tenants/{tenant}/views/alerts?limit=5"),
            format!("/v1/tenants/{tenant}/views/sla-breaches"),
            format!("/v1/tenants/{tenant}/views/policy-violations"),
            format!("/v1/tenants/{tenant}/views/model-versions"),
            format!("/v1/tenants/{tenant}/views/causal-chains"),
            format!("/v1/tenants/{tenant}/views/hitl-groups"),
            format!("/v1/tenants/{tenant}/overrides"),
            format!("/v1/tenants/{tenant}/reports"),
            format!("/v1/tenants/{tenant}/reports/eu-ai-act-art14"),
            format!("/v1/tenants/{tenant}/export?format=ndjson"),
            format!("/v1/tenants/{tenant}/export?format=parquet"),
        ]
    }

    /// A multi-byte character where a timestamp digit belongs once panicked the handler and
    /// dropped the connection: it is a 400 naming the parameter.
    #[tokio::test]
    async fn a_malformed_time_filter_is_a_bad_request_not_a_panic() {
        let app = app().await;
        for value in [
            "2026-01-01T00:00:0%E2%82%ACZ",
            "2026-01-01T00:00:00%E2%82%AC",
            "%F0%9D%84%9E",
            "2026-01-01T00:00:00.%E2%82%AC",
        ] {
            for name in ["from", "to"] {
                let uri = format!("/v1/tenants/tenant-a/events?{name}={value}");
                let (status, body) = get(&app, &uri, Some("a-reg")).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
                assert!(body.contains(name), "{uri}: {body}");
            }
        }
    }

    /// A filter an endpoint does not know was once ignored (answering as if unfiltered): it
    /// is a 400 that names it, on every endpoint.
    #[tokio::test]
    async fn unknown_parameters_are_bad_requests_naming_them() {
        let app = app().await;
        let mut uris: Vec<String> = endpoints("tenant-a");
        uris.extend([
            "/v1/tenants".to_string(),
            "/v1/checkpoints".to_string(),
            "/v1/checkpoints/consistency?tenant=tenant-a&from=1&to=3".to_string(),
        ]);
        for uri in uris {
            let sep = if uri.contains('?') { '&' } else { '?' };
            let uri = format!("{uri}{sep}colour=blue");
            let (status, body) = get(&app, &uri, Some("root")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert!(body.contains("colour"), "{uri}: {body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"].is_string(), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn filter_values_are_checked() {
        let app = app().await;
        for (uri, says) in [
            ("events?type=tool_called", "upper case: TOOL_CALLED"),
            ("events?type=TOOL_CALLS", "known types"),
            ("events?limit=0", "limit"),
            ("events?limit=-3", "limit"),
            (
                "events?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
                "from is after to",
            ),
            ("export?from=yesterday", "from"),
            ("export?format=csv", "format"),
            ("overrides?to=soon", "to"),
            ("reports/eu-ai-act-art14?from=soon", "from"),
            ("reports/eu-ai-act-art14?format=pdf", "format"),
            ("reports/eu-ai-act-art14?as_of=999999999", "as_of"),
            ("reports/eu-ai-act-art14?as_of=-1", "as_of"),
            ("reports/eu-ai-act-art14?period=q1", "period"),
        ] {
            let uri = format!("/v1/tenants/tenant-a/{uri}");
            let (status, body) = get(&app, &uri, Some("root")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert!(body.contains(says), "{uri}: {body}");
        }
        // Filters that exist are taken.
        for uri in [
            "events?type=TOOL_CALLED&agent=a&user=u&session=s&model_version=v1&limit=5",
            "events?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z",
            "overrides?from=2026-03-01T00:00:00Z",
        ] {
            let uri = format!("/v1/tenants/tenant-a/{uri}");
            let (status, body) = get(&app, &uri, Some("root")).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn no_token_reads_another_tenant() {
        let app = app().await;
        // Own tenant: allowed for the regulator.
        for uri in endpoints("tenant-a") {
            let (status, body) = get(&app, &uri, Some("a-reg")).await;
            assert!(
                status == StatusCode::OK
                    || uri.contains("hitl")
                    || uri.contains("sessions/")
                    || uri.contains("/causes"),
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

    /// Every answered tenant request is on record before it is answered; attempts on another
    /// tenant go to the caller's own log; requests without a valid token name no one.
    #[tokio::test]
    async fn api_access_is_recorded_in_the_tenants_log() {
        let (app, dir) = app_at().await;
        get(
            &app,
            "/v1/tenants/tenant-a/views/event-counts",
            Some("a-dash"),
        )
        .await;
        get(
            &app,
            "/v1/tenants/tenant-a/reports/iso-42001",
            Some("a-dash"),
        )
        .await;
        get(
            &app,
            "/v1/tenants/tenant-b/views/event-counts",
            Some("a-reg"),
        )
        .await;
        get(
            &app,
            "/v1/tenants/tenant-b/views/event-counts",
            Some("root"),
        )
        .await;
        get(
            &app,
            "/v1/tenants/tenant-zz/views/event-counts",
            Some("root"),
        )
        .await;
        get(
            &app,
            "/v1/tenants/tenant-a/views/event-counts",
            Some("forged"),
        )
        .await;
        get(&app, "/v1/tenants/tenant-a/views/event-counts", None).await;
        get(&app, "/v1/tenants", Some("a-dash")).await;
        let seen: Vec<(String, String, String, u64)> = accesses(&dir)
            .iter()
            .map(|e| {
                custody_schemas::decode_value(e.clone()).expect("a valid event");
                let p = &e["payload"];
                (
                    e["tenant_id"].as_str().unwrap().to_string(),
                    p["principal"].as_str().unwrap().to_string(),
                    p["path"].as_str().unwrap().to_string(),
                    p["status"].as_u64().unwrap(),
                )
            })
            .collect();
        let row = |t: &str, p: &str, path: &str, s: u64| {
            (t.to_string(), p.to_string(), path.to_string(), s)
        };
        assert_eq!(
            seen,
            [
                row(
                    "tenant-a",
                    "a-dash",
                    "/v1/tenants/tenant-a/views/event-counts",
                    200
                ),
                row(
                    "tenant-a",
                    "a-dash",
                    "/v1/tenants/tenant-a/reports/iso-42001",
                    403
                ),
                row(
                    "tenant-a",
                    "a-reg",
                    "/v1/tenants/tenant-b/views/event-counts",
                    404
                ),
                row(
                    "tenant-b",
                    "root",
                    "/v1/tenants/tenant-b/views/event-counts",
                    200
                ),
            ]
        );
    }

    #[test]
    fn cursors_are_bound_to_their_tenant() {
        let key = [9; 32];
        let c = encode_cursor(&key, "tenant-a", 41);
        assert_eq!(decode_cursor(&key, "tenant-a", &c), Some(41));
        assert_eq!(decode_cursor(&key, "tenant-b", &c), None);
        assert_eq!(decode_cursor(&[8; 32], "tenant-a", &c), None);
        let mut forged = hex::decode(&c).unwrap();
        forged[7] ^= 1;
        assert_eq!(decode_cursor(&key, "tenant-a", &hex::encode(forged)), None);
        assert_eq!(decode_cursor(&key, "tenant-a", "zz"), None);
    }

    #[tokio::test]
    async fn tokens_and_roles_are_enforced() {
        let app = app().await;
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
                    status == StatusCode::OK
                        || uri.contains("hitl")
                        || uri.contains("sessions/")
                        || uri.contains("/causes"),
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
