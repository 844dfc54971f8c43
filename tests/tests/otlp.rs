//! The OpenTelemetry intake end to end: an agent instrumented with the official Python SDK
//! exports GenAI spans and log events through the SDK's own OTLP exporters (HTTP protobuf and
//! gRPC) to `custody otlp`, which produces them to a real Kafka-protocol broker (tansu);
//! `custody run --kafka` then chains and stores them. Checked with pyiceberg:
//!
//! - every span and inference event is a schema v1 event of the token's tenant (a resource
//!   claiming another tenant changes nothing), its session the trace id, its parent the
//!   parent span's event, with model, token usage and tool arguments kept;
//! - what cannot be mapped (an HTTP span, an embeddings span, a plain log line) is
//!   quarantined as `unmappable` with its reason under the same tenant, and counts balance;
//! - OTLP/HTTP JSON works too; no or a wrong token is 401, another content type 415, a body
//!   that does not decode 400; and with the broker down an export is not acknowledged (503).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use custody_tests::{
    CHAIN_COLUMNS, Tansu, assert_chains_link, await_line, custody, custody_command, free_addr,
    http_get, manifest_dir, python, read_columns, rows,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOPIC: &str = "otel";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut toml =
        String::from("[identity]\nmode = \"signed-header\"\n\n[otlp]\ndelivery_timeout = \"4s\"\n");
    toml.push_str(&format!(
        "\n[api]\nmetrics_token_sha256 = \"{}\"\n",
        hex::encode(Sha256::digest("metrics-token"))
    ));
    for (id, tenant, token) in [
        ("otel-acme", "acme", "acme-otlp-token"),
        ("otel-beta", "beta", "beta-otlp-token"),
    ] {
        toml.push_str(&format!(
            "\n[identity.producers.{id}]\ntenant = \"{tenant}\"\nkey_hex = \"{}\"\n\
             otlp_token_sha256 = \"{}\"\n",
            hex::encode(format!("key of {id}")),
            hex::encode(Sha256::digest(token))
        ));
    }
    let path = dir.join("custody.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// One raw HTTP/1.1 POST: status and body.
fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (status, raw[split + 4..].to_vec())
}

/// An OTLP/JSON export of one chat span (ids in hex, times as strings, as the spec has them).
fn json_chat(trace: &str) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-agent"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace,
            "spanId": "00000000000000a1",
            "name": "chat claude",
            "kind": 3,
            "startTimeUnixNano": "1780000000000000000",
            "endTimeUnixNano": "1780000000250000000",
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "11"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 5}}
            ]
        }]}]
    }]})
}

fn sdk_agent(protocol: &str, endpoint: &str, token: &str, sessions: usize, gzip: bool) -> Value {
    let script = manifest_dir().join("py/otel_agent.py");
    let out = std::process::Command::new(python())
        .arg(&script)
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--token",
            token,
        ])
        .args(["--sessions", &sessions.to_string()])
        .args(gzip.then_some("--gzip"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "otel_agent.py ({protocol}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn otel_sdk_exports_become_chained_events_and_the_rest_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start();
    let cfg = config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let (http, grpc) = (free_addr(), free_addr());
    let gateway = custody_command()
        .args([
            "--config",
            cfg,
            "otlp",
            "--kafka",
            &broker.addr,
            "--topic",
            TOPIC,
        ])
        .args(["--http-listen", &http, "--grpc-listen", &grpc])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _gateway = await_line(gateway, "otlp intake");

    // Refusals write nothing.
    let json_body = serde_json::to_vec(&json_chat(&"ab".repeat(16))).unwrap();
    let ct_json = ("content-type", "application/json");
    for auth in [None, Some("Bearer wrong-token"), Some("acme-otlp-token")] {
        let mut headers = vec![ct_json];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let (status, _) = post(&http, "/v1/traces", &headers, &json_body);
        assert_eq!(status, 401, "authorization {auth:?}");
    }
    let acme = ("authorization", "Bearer acme-otlp-token");
    let (status, _) = post(
        &http,
        "/v1/traces",
        &[acme, ("content-type", "text/plain")],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, body) = post(
        &http,
        "/v1/traces",
        &[acme, ("content-type", "application/x-protobuf")],
        b"\xff\xff\xff not protobuf",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // OTLP/HTTP JSON: one chat span, acknowledged with no partial success.
    let (status, body) = post(&http, "/v1/traces", &[acme, ct_json], &json_body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        answer.get("partialSuccess").is_none_or(Value::is_null),
        "{answer}"
    );

    // The official SDK: HTTP protobuf (gzip) as acme; gRPC, plain then gzip, as beta.
    let (http_url, grpc_url) = (format!("http://{http}"), format!("http://{grpc}"));
    let runs = [
        (
            "acme",
            sdk_agent("http", &http_url, "acme-otlp-token", 3, true),
        ),
        (
            "beta",
            sdk_agent("grpc", &grpc_url, "beta-otlp-token", 2, false),
        ),
        (
            "beta",
            sdk_agent("grpc", &grpc_url, "beta-otlp-token", 1, true),
        ),
    ];

    // An unmappable span is answered with a partial success that says why.
    let (status, body) = post(
        &http,
        "/v1/traces",
        &[acme, ct_json],
        &serde_json::to_vec(&json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "cd".repeat(16), "spanId": "00000000000000b2", "name": "SELECT orders",
            "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": "1780000000000000001"
        }]}]}]}))
        .unwrap(),
    );
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    // int64 is a number or a decimal string in OTLP/JSON.
    let rejected = answer["partialSuccess"]["rejectedSpans"].to_string();
    assert_eq!(rejected.trim_matches('"'), "1", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("no gen_ai.operation.name"), "{message}");

    let wh = dir.path().join("wh");
    let out = custody(&[
        "--config",
        cfg,
        "run",
        "--kafka",
        &broker.addr,
        "--topic",
        TOPIC,
        "--warehouse",
        wh.to_str().unwrap(),
        "--idle-exit",
        "5s",
    ]);
    // Per session: 3 spans give 5 events, plus one inference details log event.
    let per_session = 6;
    let sessions = |sent: &Value| sent["sessions"].as_array().unwrap().len();
    let unmappable = |sent: &Value| {
        sent["unmappable_spans"].as_u64().unwrap() + sent["unmappable_logs"].as_u64().unwrap()
    };
    let accepted = 1 + per_session * runs.iter().map(|(_, s)| sessions(s)).sum::<usize>();
    let quarantined = 1 + runs.iter().map(|(_, s)| unmappable(s)).sum::<u64>() as usize;
    assert!(
        out.contains(&format!(
            "{} in = {accepted} accepted + {quarantined} quarantined (balanced)",
            accepted + quarantined
        )),
        "{out}"
    );

    let tables = read_columns(
        &wh,
        &[CHAIN_COLUMNS, "quarantine:reason_kind,tenant_id,reason"],
    );
    let events = rows(&tables, "events");
    assert_eq!(events.len(), accepted);
    assert_eq!(assert_chains_link(events), 2, "two tenants");
    for (tenant, sent) in &runs {
        for trace in sent["sessions"].as_array().unwrap() {
            let trace = trace.as_str().unwrap();
            let session: Vec<&Value> = events.iter().filter(|e| e["session_id"] == trace).collect();
            assert_eq!(session.len(), per_session, "session {trace}");
            let ids: BTreeSet<&str> = session
                .iter()
                .map(|e| e["event_id"].as_str().unwrap())
                .collect();
            let mut types = BTreeMap::<&str, usize>::new();
            for e in &session {
                assert_eq!(e["tenant_id"], *tenant, "{e}");
                assert_eq!(e["agent_id"], "agent-support-bot");
                assert!(
                    e["event_id"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("otel:{trace}:"))
                );
                *types.entry(e["event_type"].as_str().unwrap()).or_default() += 1;
                // Every parent is an event of the same session (the trace's tree).
                if let Some(parent) = e["parent_event_id"].as_str() {
                    assert!(ids.contains(parent), "parent {parent} of {e}");
                }
                let payload: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
                match e["event_type"].as_str().unwrap() {
                    "MODEL_DECISION" => {
                        assert_eq!(payload["model_id"], "gpt-4o");
                        assert_eq!(payload["completion_tokens"], 30);
                        assert!(payload["prompt_tokens"].as_u64().unwrap() >= 120);
                    }
                    "TOOL_CALLED" => assert_eq!(payload["tool_name"], "refund"),
                    "TOOL_RESULT_RECEIVED" if sent["failed"] == trace => {
                        assert_eq!(payload["status"], "error");
                        assert_eq!(payload["error_code"], "PaymentDeclined");
                    }
                    "TOOL_RESULT_RECEIVED" => assert_eq!(payload["status"], "success"),
                    "TASK_INITIATED" => {
                        assert!(e["parent_event_id"].is_null());
                        assert_eq!(payload["agent_version"], "2.4.1");
                        assert!(e["user_id"].as_str().is_some());
                    }
                    _ => {}
                }
            }
            let end = if sent["failed"] == trace {
                "TASK_FAILED"
            } else {
                "TASK_COMPLETED"
            };
            assert_eq!(
                types,
                BTreeMap::from([
                    ("MODEL_DECISION", 2),
                    ("TASK_INITIATED", 1),
                    (end, 1),
                    ("TOOL_CALLED", 1),
                    ("TOOL_RESULT_RECEIVED", 1),
                ]),
                "session {trace}"
            );
        }
    }
    let json_event = events
        .iter()
        .find(|e| e["agent_id"] == "json-agent")
        .unwrap();
    assert_eq!(json_event["tenant_id"], "acme");
    let payload: Value = serde_json::from_str(json_event["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&payload["prompt_tokens"], &payload["latency_ms"]),
        (&json!(11), &json!(250))
    );

    let quarantine = rows(&tables, "quarantine");
    assert_eq!(quarantine.len(), quarantined);
    let mut by_tenant = BTreeMap::<&str, usize>::new();
    for q in quarantine {
        assert_eq!(q["reason_kind"], "unmappable", "{q}");
        assert!(q["reason"].as_str().unwrap().starts_with("OTLP "), "{q}");
        *by_tenant
            .entry(q["tenant_id"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(by_tenant, BTreeMap::from([("acme", 4), ("beta", 6)]));

    // The gateway's own metrics count what it took, refused and could not map.
    assert_eq!(
        http_get(&http, "/metrics", "").0,
        401,
        "behind the metrics token"
    );
    let (code, _, body) = http_get(&http, "/metrics", "metrics-token");
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body);
    let metric = |name: &str, labels: &[&str]| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let records = "custody_otlp_records_total";
    let requests = "custody_otlp_requests_total";
    let sessions_sent: u64 = runs.iter().map(|(_, s)| sessions(s) as u64).sum();
    let unmappable_logs: u64 = runs
        .iter()
        .map(|(_, s)| s["unmappable_logs"].as_u64().unwrap())
        .sum();
    assert_eq!(
        metric(records, &[r#"signal="traces""#, r#"result="mapped""#]),
        1 + 5 * sessions_sent,
        "{text}"
    );
    assert_eq!(
        metric(records, &[r#"signal="logs""#, r#"result="mapped""#]),
        sessions_sent
    );
    assert_eq!(
        metric(records, &[r#"result="unmappable""#]),
        quarantined as u64,
        "{text}"
    );
    assert_eq!(
        metric(records, &[r#"signal="logs""#, r#"result="unmappable""#]),
        unmappable_logs
    );
    assert_eq!(metric(requests, &[r#"outcome="unauthenticated""#]), 3);
    assert_eq!(metric(requests, &[r#"outcome="bad_request""#]), 2);
    assert!(metric(requests, &[r#"transport="grpc""#, r#"outcome="ok""#]) > 0);

    // Not acknowledged unless durable: with the broker gone, the export fails (retryable).
    broker.kill();
    let (status, body) = post(&http, "/v1/traces", &[acme, ct_json], &json_body);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
}
