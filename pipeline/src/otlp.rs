//! `custody otlp`: the OpenTelemetry intake. Agents instrumented with OpenTelemetry export
//! their GenAI spans and log events here, over OTLP/gRPC or OTLP/HTTP (protobuf or JSON,
//! plain or gzip); the gateway maps them to schema v1 events ([`genai`]) and produces them to
//! the Kafka topic `custody run --kafka` consumes, where they are authenticated, chained and
//! stored like any producer's events.
//!
//! - **Identity.** A caller sends `authorization: Bearer TOKEN` (`OTEL_EXPORTER_OTLP_HEADERS`);
//!   the token's SHA-256 is a producer's `otlp_token_sha256` in `[identity.producers]`. The
//!   gateway writes the producer's tenant into every event, whatever the spans say, and signs
//!   each record with the producer's key (`custody-producer`, `custody-signature`), so the
//!   pipeline checks it as it checks any producer. No or an unknown token: 401 or
//!   `UNAUTHENTICATED`, and nothing is written.
//! - **Durability.** An export is answered only once every record of it is acknowledged by
//!   the brokers (idempotent producer, `acks=all`); if any is not, the answer is 503 or
//!   `UNAVAILABLE`, which OTLP exporters retry. A retry after a lost answer writes the records
//!   again (OTLP is at least once); their event ids are the same.
//! - **Unmappable input** is produced too, marked with its reason, and quarantined by the
//!   pipeline (never dropped); the answer's `partial_success` counts it (`rejected_spans`,
//!   `rejected_log_records`) and gives the first reason.
//! - **Limits.** A request larger than `[otlp] max_request_bytes` (after decompression) is
//!   refused with 413 or `RESOURCE_EXHAUSTED`; a body that does not decode, with 400 or
//!   `INVALID_ARGUMENT`.
//! - **Metrics** (`GET /metrics` on the HTTP port, behind `[api] metrics_token_sha256` when
//!   set): `custody_otlp_requests_total{signal, transport, outcome}` and
//!   `custody_otlp_records_total{signal, result}`.

pub mod genai;

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_operators::sources::kafka::{PRODUCER_HEADER, SIGNATURE_HEADER, kafka_client_config};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prometheus::{IntCounterVec, Opts, Registry};
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::{Digest, Sha256};

use genai::Mapping;

/// Settings of the gateway.
#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// Kafka brokers.
    pub brokers: String,
    /// The topic the pipeline consumes.
    pub topic: String,
    /// OTLP/HTTP address (also answers gRPC).
    pub http_listen: String,
    /// OTLP/gRPC address (also answers HTTP).
    pub grpc_listen: String,
    /// Largest request, decompressed.
    pub max_request_bytes: usize,
    /// Largest record produced (the pipeline's `max_event_bytes`, at most what brokers take
    /// by default); a larger one is replaced by an unmappable record naming it.
    pub max_record_bytes: usize,
    /// SHA-256 of the bearer token `/metrics` asks for (`[api] metrics_token_sha256`).
    pub metrics_token_sha256: Option<[u8; 32]>,
    /// How long to wait for the brokers to acknowledge a request's records.
    pub delivery_timeout: Duration,
    /// `(token SHA-256, producer id, tenant, key)` of every producer that may send OTLP.
    pub clients: Vec<([u8; 32], String, String, Vec<u8>)>,
}

/// An authenticated caller: the producer it speaks as.
struct Client {
    producer_id: String,
    tenant: String,
    key: Vec<u8>,
}

/// The OTLP signals Custody takes.
#[derive(Clone, Copy, Debug)]
enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

/// Why an export was refused.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("no or unknown bearer token: send `authorization: Bearer TOKEN` of a producer")]
    Unauthenticated,
    #[error("request body does not decode: {0}")]
    BadRequest(String),
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    #[error("request of more than {0} bytes")]
    TooLarge(usize),
    #[error("records not acknowledged by the brokers: {0}")]
    Unavailable(String),
}

impl ExportError {
    fn outcome(&self) -> &'static str {
        match self {
            ExportError::Unauthenticated => "unauthenticated",
            ExportError::BadRequest(_) | ExportError::UnsupportedMediaType(_) => "bad_request",
            ExportError::TooLarge(_) => "too_large",
            ExportError::Unavailable(_) => "unavailable",
        }
    }

    fn http_status(&self) -> StatusCode {
        match self {
            ExportError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ExportError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ExportError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ExportError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ExportError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            ExportError::Unauthenticated => tonic::Status::unauthenticated(message),
            ExportError::BadRequest(_) | ExportError::UnsupportedMediaType(_) => {
                tonic::Status::invalid_argument(message)
            }
            ExportError::TooLarge(_) => tonic::Status::resource_exhausted(message),
            ExportError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

struct Gateway {
    clients: HashMap<[u8; 32], Client>,
    producer: FutureProducer,
    topic: String,
    delivery_timeout: Duration,
    max_request_bytes: usize,
    max_record_bytes: usize,
    metrics_token: Option<[u8; 32]>,
    requests: IntCounterVec,
    records: IntCounterVec,
    registry: Registry,
}

impl Gateway {
    fn authenticate(&self, authorization: Option<&str>) -> Result<&Client, ExportError> {
        let token = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ExportError::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.clients
            .get(&digest)
            .ok_or(ExportError::Unauthenticated)
    }

    /// Produces a request's records, signed as `client`; returns once all are acknowledged.
    async fn deliver(&self, client: &Client, mapping: &Mapping) -> Result<(), ExportError> {
        let mut pending = Vec::with_capacity(mapping.records.len());
        for record in &mapping.records {
            let signature = custody_operators::identity::sign(&client.key, &record.bytes);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: PRODUCER_HEADER,
                    value: Some(client.producer_id.as_str()),
                })
                .insert(Header {
                    key: SIGNATURE_HEADER,
                    value: Some(signature.as_str()),
                });
            let message = FutureRecord::to(&self.topic)
                .key(client.tenant.as_str())
                .payload(&record.bytes)
                .headers(headers);
            match self.producer.send_result(message) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(ExportError::Unavailable(e.to_string())),
            }
        }
        let mut failure = None;
        for delivery in pending {
            match tokio::time::timeout(self.delivery_timeout, delivery).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => failure = Some(e.to_string()),
                Ok(Err(_)) => failure = Some("producer closed".into()),
                Err(_) => {
                    failure = Some(format!("no acknowledgement in {:?}", self.delivery_timeout))
                }
            }
        }
        match failure {
            Some(why) => Err(ExportError::Unavailable(why)),
            None => Ok(()),
        }
    }

    /// Authenticates, maps and delivers one export; the mapping, for the answer's partial
    /// success.
    async fn export(
        &self,
        authorization: Option<&str>,
        map: impl FnOnce(&str) -> Mapping,
    ) -> Result<Mapping, ExportError> {
        let client = self.authenticate(authorization)?;
        let mut mapping = map(&client.tenant);
        mapping.cap(&client.tenant, self.max_record_bytes);
        self.deliver(client, &mapping).await?;
        Ok(mapping)
    }

    fn count(&self, signal: Signal, transport: &str, result: Result<&Mapping, &ExportError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.requests
            .with_label_values(&[signal.as_str(), transport, outcome])
            .inc();
        if let Ok(m) = result {
            let records = |r: &str| self.records.with_label_values(&[signal.as_str(), r]);
            records("mapped").inc_by(m.events() as u64);
            records("unmappable").inc_by(m.unmappable() as u64);
        }
    }
}

/// The partial success a mapping warrants: its unmappable records, and why the first was.
fn rejection(mapping: &Mapping, what: &str) -> Option<(i64, String)> {
    let n = mapping.unmappable();
    (n > 0).then(|| {
        let first = mapping.first_reason().unwrap_or_default();
        (
            n as i64,
            format!("{n} {what} could not be mapped to schema v1 events and were quarantined; first: {first}"),
        )
    })
}

fn trace_response(mapping: &Mapping) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: rejection(mapping, "span(s)").map(|(rejected_spans, error_message)| {
            ExportTracePartialSuccess {
                rejected_spans,
                error_message,
            }
        }),
    }
}

fn logs_response(mapping: &Mapping) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: rejection(mapping, "log record(s)").map(
            |(rejected_log_records, error_message)| ExportLogsPartialSuccess {
                rejected_log_records,
                error_message,
            },
        ),
    }
}

/// The gRPC services.
#[derive(Clone)]
struct Grpc(Arc<Gateway>);

fn bearer<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let auth = bearer(&request).map(str::to_string);
        let body = request.into_inner();
        let result = self
            .0
            .export(auth.as_deref(), |tenant| genai::map_traces(&body, tenant))
            .await;
        self.0.count(Signal::Traces, "grpc", result.as_ref());
        result
            .map(|m| tonic::Response::new(trace_response(&m)))
            .map_err(|e| e.grpc_status())
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let auth = bearer(&request).map(str::to_string);
        let body = request.into_inner();
        let result = self
            .0
            .export(auth.as_deref(), |tenant| genai::map_logs(&body, tenant))
            .await;
        self.0.count(Signal::Logs, "grpc", result.as_ref());
        result
            .map(|m| tonic::Response::new(logs_response(&m)))
            .map_err(|e| e.grpc_status())
    }
}

/// How an OTLP/HTTP body is encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ExportError> {
        let ty = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = ty.split(';').next().unwrap_or_default().trim();
        match essence {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(ExportError::UnsupportedMediaType(ty.to_string())),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn decode<T: Message + Default + serde::de::DeserializeOwned>(
        self,
        body: &[u8],
    ) -> Result<T, ExportError> {
        match self {
            Encoding::Protobuf => {
                T::decode(body).map_err(|e| ExportError::BadRequest(e.to_string()))
            }
            Encoding::Json => {
                serde_json::from_slice(body).map_err(|e| ExportError::BadRequest(e.to_string()))
            }
        }
    }

    fn respond<T: Message + serde::Serialize>(self, status: StatusCode, message: &T) -> Response {
        let body = match self {
            Encoding::Protobuf => message.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(message).unwrap_or_default(),
        };
        (status, [(header::CONTENT_TYPE, self.content_type())], body).into_response()
    }
}

/// The body, decompressed if `content-encoding: gzip`, at most `limit` bytes.
fn body_bytes(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Vec<u8>, ExportError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let bytes = match encoding {
        "identity" | "" => body.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ExportError::BadRequest(format!("gzip: {e}")))?;
            out
        }
        other => {
            return Err(ExportError::BadRequest(format!(
                "content-encoding {other:?} (use gzip or none)"
            )));
        }
    };
    if bytes.len() > limit {
        return Err(ExportError::TooLarge(limit));
    }
    Ok(bytes)
}

async fn http_export(
    gateway: Arc<Gateway>,
    signal: Signal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Errors answer in the request's encoding, protobuf if it has none Custody takes.
    let encoding = Encoding::of(&headers);
    let answer = encoding.as_ref().map_or(Encoding::Protobuf, |e| *e);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let result = async {
        let encoding = encoding?;
        // Who calls is checked before the body is inflated or decoded.
        gateway.authenticate(auth)?;
        let bytes = body_bytes(&headers, body, gateway.max_request_bytes)?;
        match signal {
            Signal::Traces => {
                let request: ExportTraceServiceRequest = encoding.decode(&bytes)?;
                let mapping = gateway
                    .export(auth, |t| genai::map_traces(&request, t))
                    .await?;
                let response = trace_response(&mapping);
                Ok((mapping, encoding.respond(StatusCode::OK, &response)))
            }
            Signal::Logs => {
                let request: ExportLogsServiceRequest = encoding.decode(&bytes)?;
                let mapping = gateway
                    .export(auth, |t| genai::map_logs(&request, t))
                    .await?;
                let response = logs_response(&mapping);
                Ok((mapping, encoding.respond(StatusCode::OK, &response)))
            }
        }
    }
    .await;
    match result {
        Ok((mapping, response)) => {
            gateway.count(signal, "http", Ok(&mapping));
            response
        }
        Err(e) => {
            gateway.count(signal, "http", Err(&e));
            http_error(&e, answer)
        }
    }
}

/// An OTLP/HTTP error answer: `google.rpc.Status` in the request's encoding.
fn http_error(e: &ExportError, encoding: Encoding) -> Response {
    let status = RpcStatus {
        code: e.grpc_status().code() as i32,
        message: e.to_string(),
    };
    let mut response = encoding.respond(e.http_status(), &status);
    if matches!(e, ExportError::Unavailable(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    }
    response
}

async fn metrics(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(expected) = gateway.metrics_token {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        if hash != expected {
            return (StatusCode::UNAUTHORIZED, "metrics token required\n").into_response();
        }
    }
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&gateway.registry.gather(), &mut out) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn router(gateway: Arc<Gateway>) -> axum::Router {
    let limit = gateway.max_request_bytes;
    let grpc = Grpc(Arc::clone(&gateway));
    let traces = TraceServiceServer::new(grpc.clone())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::new(grpc)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let (g1, g2) = (Arc::clone(&gateway), Arc::clone(&gateway));
    axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                http_export(Arc::clone(&g1), Signal::Traces, headers, body)
            }),
        )
        .route(
            "/v1/logs",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                http_export(Arc::clone(&g2), Signal::Logs, headers, body)
            }),
        )
        .route("/metrics", axum::routing::get(metrics))
        .route_service(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            traces,
        )
        .route_service(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            logs,
        )
        // Compressed bodies may grow up to the limit once inflated; the compressed size is
        // bounded by it too.
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

/// Runs the gateway until interrupted.
pub fn run(opts: OtlpOptions) -> anyhow::Result<()> {
    if opts.clients.is_empty() {
        anyhow::bail!(
            "no producer may send OTLP: give one an otlp_token_sha256 in [identity.producers]"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("otlp")
        .enable_all()
        .build()?;
    let producer: FutureProducer = kafka_client_config(&opts.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            opts.delivery_timeout.as_millis().to_string(),
        )
        .create()
        .context("creating the Kafka producer")?;
    // Ops create the topic in production (compose's kafka-init); made here if it is missing.
    if let Err(e) = runtime.block_on(custody_operators::sinks::dead_letter::ensure_topic(
        &opts.brokers,
        &opts.topic,
    )) {
        tracing::warn!(error = %e, topic = %opts.topic, "could not make sure the topic exists");
    }
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "custody_otlp_requests_total",
            "OTLP export requests, by outcome",
        ),
        &["signal", "transport", "outcome"],
    )?;
    let records = IntCounterVec::new(
        Opts::new(
            "custody_otlp_records_total",
            "Records produced from OTLP: schema v1 events (mapped) or quarantined (unmappable)",
        ),
        &["signal", "result"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(records.clone()))?;
    let clients = opts
        .clients
        .into_iter()
        .map(|(hash, producer_id, tenant, key)| {
            (
                hash,
                Client {
                    producer_id,
                    tenant,
                    key,
                },
            )
        })
        .collect();
    let gateway = Arc::new(Gateway {
        clients,
        producer,
        topic: opts.topic,
        delivery_timeout: opts.delivery_timeout,
        max_request_bytes: opts.max_request_bytes,
        max_record_bytes: opts.max_record_bytes,
        metrics_token: opts.metrics_token_sha256,
        requests,
        records,
        registry,
    });
    let topic = gateway.topic.clone();
    let app = router(gateway);
    runtime.block_on(async move {
        let http = tokio::net::TcpListener::bind(&opts.http_listen)
            .await
            .with_context(|| format!("binding {} (OTLP/HTTP)", opts.http_listen))?;
        let grpc = tokio::net::TcpListener::bind(&opts.grpc_listen)
            .await
            .with_context(|| format!("binding {} (OTLP/gRPC)", opts.grpc_listen))?;
        println!(
            "otlp intake: OTLP/HTTP on http://{}/v1/traces and /v1/logs, OTLP/gRPC on {}, \
             producing to {}",
            http.local_addr()?,
            grpc.local_addr()?,
            topic
        );
        let grpc_app = app.clone();
        let grpc_server = tokio::runtime::Handle::current()
            .spawn(async move { axum::serve(grpc, grpc_app).await });
        tokio::select! {
            r = async { axum::serve(http, app).await } => r.context("OTLP/HTTP server")?,
            r = grpc_server => r.context("OTLP/gRPC server")?.context("OTLP/gRPC server")?,
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}
