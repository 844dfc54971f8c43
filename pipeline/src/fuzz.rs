//! `custody fuzz`: a time-bounded, structure-aware mutational fuzzer over everything that reads
//! untrusted input, checking that nothing panics:
//!
//! - the event decoder ([`decode_with`]) and, for what it accepts, PII tokenization, or for what
//!   it rejects, the quarantine record builder;
//! - the RFC 3339 timestamp parser;
//! - every API query-parameter parser, through the real HTTP router (paths and query strings
//!   mutated from valid requests).
//!
//! Inputs start from generated events, known poison records and valid requests, and are mutated
//! with byte flips, multi-byte characters put where digits or delimiters belong, truncations,
//! splices and dictionary tokens. The seeded generator of `generate` makes a run reproducible. A panic
//! is caught, counted and reported with the input that caused it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_operators::Metrics;
use custody_operators::pii::{KINDS, Tokenizer};
use custody_operators::record::{RawRecord, ViewUpdate};
use custody_operators::transforms::decode::{DecodeConfig, decode_with, quarantine};
use custody_operators::transforms::tokenize_pii::tokenize;
use custody_reports::live::LiveViews;
use custody_reports::proofs::LiveLogs;

use crate::generate::{Generator, GeneratorConfig, Rng};

/// What a fuzz run did.
#[derive(Debug, Default)]
pub struct FuzzReport {
    /// Inputs tried per target.
    pub decoder: u64,
    /// Timestamps parsed.
    pub timestamps: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Panics, each with its target and input.
    pub panics: Vec<String>,
}

/// Tokens that break parsers: multi-byte characters, escapes, numbers at the edges, JSON and
/// URL syntax.
const DICTIONARY: &[&str] = &[
    "€",
    "𝄞",
    "é",
    "\u{feff}",
    "\u{0}",
    "\\u0000",
    "\\ud800",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "-9223372036854775809",
    "T",
    "Z",
    "+",
    "-",
    ".",
    "%",
    "%FF",
    "%E2%82",
    "%00",
    "&",
    "=",
    "?",
    "/",
    "..",
    "0",
    "9",
    "2026-02-30T00:00:00Z",
    "9999-12-31T23:59:60.9999999+23:59",
    "0000-01-01T00:00:00Z",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.index(4) {
        let at = rng.index(out.len() + 1);
        match rng.index(7) {
            0 if !out.is_empty() => {
                let i = rng.index(out.len());
                out[i] ^= 1 << rng.index(8);
            }
            1 => {
                let token = *rng.pick(DICTIONARY);
                out.splice(at..at, token.bytes());
            }
            2 if !out.is_empty() => {
                // A multi-byte character where a digit (or any byte) was.
                let i = rng.index(out.len());
                let c = *rng.pick(&["€", "𝄞", "é", "ß"]);
                out.splice(i..i + 1, c.bytes());
            }
            3 => out.truncate(at),
            4 if !other.is_empty() => {
                let from = rng.index(other.len());
                let to = from + rng.index(other.len() - from + 1);
                out.splice(at..at, other[from..to].iter().copied());
            }
            5 if at < out.len() => {
                let end = at + rng.index(out.len() - at + 1);
                out.drain(at..end);
            }
            _ => {
                let b = rng.next() as u8;
                out.insert(at, b);
            }
        }
    }
    out
}

/// Runs `f`, recording a panic (with `what`) in `report`.
fn guarded(report: &mut FuzzReport, what: impl Fn() -> String, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        report.panics.push(what());
    }
}

/// Fuzzes for `duration` from `seed`.
pub fn run(duration: Duration, seed: u64) -> Result<FuzzReport, String> {
    // Panics are expected to be caught here and reported, not to end the process.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = fuzz(duration, seed);
    std::panic::set_hook(previous);
    result
}

fn fuzz(duration: Duration, seed: u64) -> Result<FuzzReport, String> {
    let mut rng = Rng(seed);
    let mut report = FuzzReport::default();
    let mut corpus: Vec<Vec<u8>> = Generator::new(GeneratorConfig {
        seed,
        tenants: 3,
        events: 300,
        ..GeneratorConfig::default()
    })
    .collect();
    corpus.push(
        br#"{"event_id":"x","schema_version":"1.0","tenant_id":"t","session_id":"s","agent_id":"a","event_type":"TASK_INITIATED","timestamp":"2026-01-01T00:00:0\xe2\x82\xacZ","payload":{}}"#
            .to_vec(),
    );
    let timestamps: Vec<&[u8]> = vec![
        b"2026-03-08T14:47:00Z",
        b"2026-03-08T16:47:00.5+02:00",
        b"2024-02-29T00:00:00.000001Z",
        b"2026-01-01T00:00:0\xe2\x82\xacZ",
    ];
    let requests = [
        "/v1/tenants/t/events?type=TOOL_CALLED&agent=a&user=u&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&limit=5&cursor=00",
        "/v1/tenants/t/proofs/inclusion?event_id=e1",
        "/v1/tenants/t/proofs/consistency?from=1&to=2",
        "/v1/tenants/t/views/sessions?limit=10&offset=5",
        "/v1/tenants/t/views/event-counts",
        "/v1/tenants/t/views/hitl-latency",
        "/v1/tenants/t/sessions/s1",
        "/v1/tenants/t/events/e1/causes",
        "/v1/tenants/t/overrides",
        "/v1/tenants/t/reports/eu-ai-act-art14",
        "/v1/tenants/t/export?format=ndjson",
        "/v1/tenants/t/checkpoints/latest",
    ];
    let config = DecodeConfig {
        max_event_bytes: 1 << 20,
        quarantine_keep_bytes: 512,
        producers: None,
        access_log_key: Some([9; 32]),
    };
    let mut tokenizer = Tokenizer::new(b"fuzz key");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let router = fuzz_router();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        for _ in 0..64 {
            // The decoder, then tokenization or quarantine.
            let a = rng.pick(&corpus);
            let b = rng.pick(&corpus);
            let bytes = mutate(&mut rng, a, b);
            let raw = RawRecord::new(0, report.decoder as i64, bytes.clone());
            let what = || format!("decoder: {:?}", String::from_utf8_lossy(&bytes));
            guarded(&mut report, what, || {
                match decode_with(&raw, &config, |decoded| {
                    tokenize(&mut tokenizer, decoded, &mut [0; KINDS])
                }) {
                    Ok(_) => {}
                    Err((kind, reason)) => {
                        quarantine(raw.clone(), kind, reason, &config, &mut tokenizer);
                    }
                }
            });
            report.decoder += 1;
            if report.decoder % 997 == 0 && corpus.len() < 2000 {
                corpus.push(bytes);
            }
            // The timestamp parser.
            let base = *rng.pick(&timestamps);
            let t = mutate(&mut rng, base, b"");
            let text = String::from_utf8_lossy(&t).into_owned();
            guarded(
                &mut report,
                || format!("timestamp: {text:?}"),
                || {
                    let _ = custody_schemas::time::parse_rfc3339(&text);
                },
            );
            report.timestamps += 1;
        }
        // The API's parameter parsers, through the router.
        for _ in 0..8 {
            let base = rng.pick(&requests).as_bytes();
            let uri = mutate(&mut rng, base, b"");
            let uri = String::from_utf8_lossy(&uri).into_owned();
            let Ok(request) =
                axum::http::Request::get(uri.as_str()).body(axum::body::Body::empty())
            else {
                continue; // not a URI at all: the HTTP layer rejects it before any handler
            };
            use tower::ServiceExt;
            let status = runtime
                .block_on(router.clone().oneshot(request))
                .map(|r| r.status());
            if status.is_ok_and(|s| s.is_server_error() && s.as_u16() != 503) {
                report
                    .panics
                    .push(format!("api: {uri:?} answered {status:?}"));
            }
            report.requests += 1;
        }
    }
    Ok(report)
}

/// The API over one tenant with views and no lake: what the parameter parsers see.
fn fuzz_router() -> axum::Router {
    let mut live = LiveViews::default();
    live.apply(
        0,
        &[ViewUpdate::EventCount {
            tenant_id: "t".into(),
            event_type: "TOOL_CALLED".into(),
            count: 1,
            diff: 1,
        }],
    );
    let no_tokens: Vec<(&String, &crate::auth::TokenSettings)> = Vec::new();
    crate::serve::router(crate::serve::AppState {
        // Panic-free: no tokens is a valid configuration.
        auth: Arc::new(crate::auth::ApiAuth::new(no_tokens).unwrap_or_else(|_| unreachable!())),
        lake: None,
        request_timeout: std::time::Duration::from_secs(30),
        cursor_key: [7; 32],
        metrics: Metrics::new(),
        live: Arc::new(Mutex::new(live)),
        logs: Arc::new(Mutex::new(LiveLogs::default())),
        report_ctx: Arc::new(custody_reports::regulatory::ReportContext {
            checkpoint: None,
            rules: Vec::new(),
            retention: Default::default(),
            legal_minimum_days: 0,
            continuous_verification: true,
            ..custody_reports::regulatory::ReportContext::default()
        }),
        signer: None,
        access: None,
        person_ids: None,
    })
}
