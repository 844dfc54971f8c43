//! OpenTelemetry GenAI spans and log events → schema v1 events.
//!
//! Follows the GenAI semantic conventions (`gen_ai.operation.name` and the `gen_ai.*`
//! attributes):
//!
//! | OTLP                                                      | schema v1                                    |
//! |-----------------------------------------------------------|----------------------------------------------|
//! | span `chat`, `text_completion`, `generate_content`        | `MODEL_DECISION` (at the span's end)         |
//! | span `execute_tool`                                       | `TOOL_CALLED` (start), `TOOL_RESULT_RECEIVED` (end) |
//! | span `invoke_agent`                                       | `TASK_INITIATED` (start), `TASK_COMPLETED` or `TASK_FAILED` (end) |
//! | log event `gen_ai.client.inference.operation.details`     | `MODEL_DECISION`                             |
//!
//! Ids keep the trace: `session_id` is the trace id (hex), an event's id is
//! `otel:<trace id>:<span id>` (with `:result`, `:end` or `:details` for a span's second event
//! or a log event), and `parent_event_id` is the parent span's event, so a session reads as its
//! trace. The agent is `gen_ai.agent.id`, else `gen_ai.agent.name`, else the resource's
//! `service.name`; the user is `user.id` or `enduser.id`. Model, token usage
//! (`gen_ai.usage.input_tokens`/`output_tokens`), tool name, arguments and result, and the
//! messages (`gen_ai.input.messages`/`output.messages`, or the older `gen_ai.prompt` and
//! `gen_ai.completion` span events) are kept where the instrumentation recorded them; what it
//! did not record is empty text or zero.
//!
//! Anything else (a span with no or another operation, an operation missing what its event
//! needs, a log record that is not a GenAI event) is not dropped: it becomes an *unmappable*
//! record, the span or log record as OTLP JSON with `unmappable_reason`, which the pipeline's
//! decoder quarantines with that reason (kind `unmappable`) under the authenticated tenant.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The top-level member that marks a record as unmappable, and says why; read by the decoder.
pub use custody_operators::transforms::decode::UNMAPPABLE_REASON;

/// The log event that carries one inference (GenAI semantic conventions).
pub const INFERENCE_DETAILS_EVENT: &str = "gen_ai.client.inference.operation.details";

/// One record to produce: a schema v1 event, or an unmappable span or log record.
#[derive(Debug)]
pub struct Record {
    /// The bytes written to the topic.
    pub bytes: Vec<u8>,
    /// Event time (UTC micros), to order a request's records.
    time_us: i64,
    /// Why it could not be mapped; `None` for an event.
    pub unmappable: Option<String>,
}

/// A request's records, events in time order, then the unmappable ones.
#[derive(Debug, Default)]
pub struct Mapping {
    /// What to produce.
    pub records: Vec<Record>,
}

impl Mapping {
    /// Schema v1 events.
    pub fn events(&self) -> usize {
        self.records.len() - self.unmappable()
    }

    /// Unmappable records.
    pub fn unmappable(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.unmappable.is_some())
            .count()
    }

    /// The first unmappable record's reason.
    pub fn first_reason(&self) -> Option<&str> {
        self.records.iter().find_map(|r| r.unmappable.as_deref())
    }

    fn push_event(&mut self, time_us: i64, event: Value) {
        self.records.push(Record {
            bytes: event.to_string().into_bytes(),
            time_us,
            unmappable: None,
        });
    }

    fn push_unmappable(&mut self, tenant: &str, signal: &str, item: Value, reason: String) {
        let record = json!({
            "tenant_id": tenant,
            UNMAPPABLE_REASON: reason,
            "otlp_signal": signal,
            signal: item,
        });
        self.records.push(Record {
            bytes: record.to_string().into_bytes(),
            time_us: i64::MAX,
            unmappable: Some(reason),
        });
    }

    /// Replaces every record of more than `limit` bytes (a span with a long conversation,
    /// say) by a small unmappable one naming it: the brokers would refuse it, and retrying the
    /// export would never get further.
    pub fn cap(&mut self, tenant: &str, limit: usize) {
        for record in &mut self.records {
            let len = record.bytes.len();
            if len <= limit {
                continue;
            }
            let full: Value = serde_json::from_slice(&record.bytes).unwrap_or(Value::Null);
            let what = match &record.unmappable {
                Some(reason) => format!("unmappable record ({reason})"),
                None => format!(
                    "{} event {}",
                    full["event_type"].as_str().unwrap_or_default(),
                    full["event_id"].as_str().unwrap_or_default()
                ),
            };
            let reason =
                format!("{what}: {len} bytes, more than the {limit} byte limit of a record");
            let small = json!({
                "tenant_id": tenant,
                UNMAPPABLE_REASON: reason,
                "event_id": full.get("event_id"),
                "session_id": full.get("session_id"),
            });
            record.bytes = small.to_string().into_bytes();
            record.unmappable = Some(reason);
        }
    }

    fn finish(&mut self) {
        // Stable: a span's start event stays before its end event at the same time.
        self.records.sort_by_key(|r| r.time_us);
    }
}

/// Maps every span of `request` for `tenant` (the authenticated one).
pub fn map_traces(request: &ExportTraceServiceRequest, tenant: &str) -> Mapping {
    let mut out = Mapping::default();
    for rs in &request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                if let Err(reason) = map_span(span, Attrs(resource), tenant, &mut out) {
                    let item = serde_json::to_value(span).unwrap_or(Value::Null);
                    let name = &span.name;
                    out.push_unmappable(
                        tenant,
                        "span",
                        item,
                        format!("OTLP span {name:?}: {reason}"),
                    );
                }
            }
        }
    }
    out.finish();
    out
}

/// Maps every log record of `request` for `tenant`.
pub fn map_logs(request: &ExportLogsServiceRequest, tenant: &str) -> Mapping {
    let mut out = Mapping::default();
    for rl in &request.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        for sl in &rl.scope_logs {
            for log in &sl.log_records {
                if let Err(reason) = map_log(log, Attrs(resource), tenant, &mut out) {
                    let item = serde_json::to_value(log).unwrap_or(Value::Null);
                    out.push_unmappable(
                        tenant,
                        "log_record",
                        item,
                        format!("OTLP log record: {reason}"),
                    );
                }
            }
        }
    }
    out.finish();
    out
}

/// What the GenAI operation of a span or event is.
enum Operation {
    Inference,
    Tool,
    Agent,
}

fn operation(name: Option<&str>) -> Result<Operation, String> {
    match name {
        Some("chat" | "text_completion" | "generate_content") => Ok(Operation::Inference),
        Some("execute_tool") => Ok(Operation::Tool),
        Some("invoke_agent") => Ok(Operation::Agent),
        Some(other) => Err(format!(
            "gen_ai.operation.name {other:?} has no schema v1 event (mapped: chat, \
             text_completion, generate_content, execute_tool, invoke_agent)"
        )),
        None => Err("no gen_ai.operation.name: not a GenAI operation".into()),
    }
}

/// The envelope fields every event of a span shares.
struct Envelope<'a> {
    tenant: &'a str,
    trace: String,
    span: String,
    parent: Option<String>,
    agent: String,
    user: Option<String>,
}

impl Envelope<'_> {
    fn event_id(&self, suffix: &str) -> String {
        format!("otel:{}:{}{suffix}", self.trace, self.span)
    }

    fn event(&self, id: String, ty: &str, time_us: i64, parent: Option<String>, p: Value) -> Value {
        let mut e = json!({
            "event_id": id,
            "schema_version": custody_schemas::event::SCHEMA_VERSION,
            "tenant_id": self.tenant,
            "session_id": self.trace,
            "agent_id": self.agent,
            "event_type": ty,
            "timestamp": custody_schemas::time::format_rfc3339(time_us),
            "parent_event_id": parent,
            "payload": p,
        });
        if let Some(user) = &self.user {
            e["user_id"] = Value::from(user.as_str());
        }
        e
    }
}

fn map_span(
    span: &Span,
    resource: Attrs<'_>,
    tenant: &str,
    out: &mut Mapping,
) -> Result<(), String> {
    let a = Attrs(&span.attributes);
    let op = operation(a.str("gen_ai.operation.name"))?;
    let trace = id_hex(&span.trace_id, 16).ok_or("no valid trace_id (16 bytes, not all zero)")?;
    let span_id = id_hex(&span.span_id, 8).ok_or("no valid span_id (8 bytes, not all zero)")?;
    let parent = id_hex(&span.parent_span_id, 8).map(|p| format!("otel:{trace}:{p}"));
    if span.start_time_unix_nano == 0 || span.end_time_unix_nano < span.start_time_unix_nano {
        return Err("no start time, or it ends before it starts".into());
    }
    let start_us = (span.start_time_unix_nano / 1_000) as i64;
    let end_us = (span.end_time_unix_nano / 1_000) as i64;
    let latency_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1_000_000;
    let env = Envelope {
        tenant,
        agent: agent(a, resource)?,
        user: user(a)?,
        trace,
        span: span_id,
        parent,
    };
    let status = span.status.as_ref();
    let failed =
        status.is_some_and(|s| s.code == StatusCode::Error as i32) || a.str("error.type").is_some();
    let error_text = || {
        let message = status.map(|s| s.message.as_str()).unwrap_or_default();
        match (a.str("error.type"), message) {
            (Some(t), "") => t.to_string(),
            (Some(t), m) => format!("{t}: {m}"),
            (None, "") => "error".to_string(),
            (None, m) => m.to_string(),
        }
    };
    let event_text = |event: &str, attr: &str| {
        span.events
            .iter()
            .find(|e| e.name == event)
            .and_then(|e| Attrs(&e.attributes).text(attr))
    };
    let id = env.event_id("");
    match op {
        Operation::Inference => {
            let mut output = a
                .text("gen_ai.output.messages")
                .or_else(|| event_text("gen_ai.content.completion", "gen_ai.completion"))
                .unwrap_or_default();
            if failed && output.is_empty() {
                output = format!("[error] {}", error_text());
            }
            let prompt = a
                .text("gen_ai.input.messages")
                .or_else(|| event_text("gen_ai.content.prompt", "gen_ai.prompt"))
                .unwrap_or_default();
            let p = inference(a, prompt, output, latency_ms)?;
            out.push_event(
                end_us,
                env.event(id, "MODEL_DECISION", end_us, env.parent.clone(), p),
            );
        }
        Operation::Tool => {
            let tool = a
                .str("gen_ai.tool.name")
                .ok_or("execute_tool without gen_ai.tool.name")?;
            let input = match a.text("gen_ai.tool.call.arguments") {
                Some(args) => serde_json::from_str::<Value>(&args).unwrap_or(Value::String(args)),
                None => json!({}),
            };
            let elevated = a.bool("custody.tool.elevated").unwrap_or(false);
            let called = json!({"tool_name": tool, "input": input, "elevated": elevated});
            out.push_event(
                start_us,
                env.event(
                    id.clone(),
                    "TOOL_CALLED",
                    start_us,
                    env.parent.clone(),
                    called,
                ),
            );
            let mut result = json!({
                "tool_name": tool,
                "status": if failed { "error" } else { "success" },
                "output": a.text("gen_ai.tool.call.result").unwrap_or_default(),
                "latency_ms": latency_ms,
            });
            if failed {
                result["error_code"] = Value::from(a.str("error.type").unwrap_or("error"));
                result["error_message"] = Value::from(error_text());
            }
            let rid = env.event_id(":result");
            out.push_event(
                end_us,
                env.event(rid, "TOOL_RESULT_RECEIVED", end_us, Some(id), result),
            );
        }
        Operation::Agent => {
            let input = a.text("gen_ai.input.messages").unwrap_or_default();
            let goal = match a.str("gen_ai.agent.description") {
                Some(d) if input.is_empty() => d.to_string(),
                _ if input.is_empty() => span.name.clone(),
                _ => input.clone(),
            };
            let version = a
                .str("gen_ai.agent.version")
                .or(resource.str("service.version"))
                .unwrap_or("unknown");
            let started =
                json!({"goal": goal, "input": input, "agent_version": version, "channel": "otel"});
            out.push_event(
                start_us,
                env.event(
                    id.clone(),
                    "TASK_INITIATED",
                    start_us,
                    env.parent.clone(),
                    started,
                ),
            );
            let (ty, ended) = if failed {
                (
                    "TASK_FAILED",
                    json!({"reason": error_text(), "last_state": a.text("gen_ai.output.messages").unwrap_or_default()}),
                )
            } else {
                let tokens = a.uint("gen_ai.usage.input_tokens").unwrap_or(0)
                    + a.uint("gen_ai.usage.output_tokens").unwrap_or(0);
                (
                    "TASK_COMPLETED",
                    json!({
                        "output": a.text("gen_ai.output.messages").unwrap_or_default(),
                        "duration_ms": latency_ms,
                        "total_tokens": tokens,
                    }),
                )
            };
            out.push_event(
                end_us,
                env.event(env.event_id(":end"), ty, end_us, Some(id), ended),
            );
        }
    }
    Ok(())
}

fn map_log(
    log: &LogRecord,
    resource: Attrs<'_>,
    tenant: &str,
    out: &mut Mapping,
) -> Result<(), String> {
    let a = Attrs(&log.attributes);
    let name = match log.event_name.as_str() {
        "" => a.str("event.name").unwrap_or_default(),
        n => n,
    };
    if name != INFERENCE_DETAILS_EVENT {
        return Err(match name {
            "" => format!("no event name: not a GenAI event (mapped: {INFERENCE_DETAILS_EVENT})"),
            n => format!("event {n:?} has no schema v1 event (mapped: {INFERENCE_DETAILS_EVENT})"),
        });
    }
    if !matches!(
        operation(a.str("gen_ai.operation.name"))?,
        Operation::Inference
    ) {
        return Err("an inference details event of another operation than an inference".into());
    }
    let time = match log.time_unix_nano {
        0 => log.observed_time_unix_nano,
        t => t,
    };
    if time == 0 {
        return Err("no time".into());
    }
    let time_us = (time / 1_000) as i64;
    let trace = id_hex(&log.trace_id, 16);
    let span = id_hex(&log.span_id, 8);
    let (session, span, parent, id) = match (trace, span) {
        (Some(t), Some(s)) => {
            let parent = format!("otel:{t}:{s}");
            (t, s, Some(parent.clone()), format!("{parent}:details"))
        }
        _ => {
            let conversation = a
                .str("gen_ai.conversation.id")
                .ok_or("no trace context and no gen_ai.conversation.id to place it in a session")?;
            let body = serde_json::to_vec(log).unwrap_or_default();
            let digest = hex::encode(&Sha256::digest(&body)[..16]);
            (
                conversation.to_string(),
                String::new(),
                None,
                format!("otel-log:{digest}"),
            )
        }
    };
    let env = Envelope {
        tenant,
        trace: session,
        span,
        parent: parent.clone(),
        agent: agent(a, resource)?,
        user: user(a)?,
    };
    let prompt = a.text("gen_ai.input.messages").unwrap_or_default();
    let output = a.text("gen_ai.output.messages").unwrap_or_default();
    let p = inference(a, prompt, output, 0)?;
    out.push_event(time_us, env.event(id, "MODEL_DECISION", time_us, parent, p));
    Ok(())
}

/// A `MODEL_DECISION` payload.
fn inference(
    a: Attrs<'_>,
    prompt: String,
    output: String,
    latency_ms: u64,
) -> Result<Value, String> {
    let requested = a.str("gen_ai.request.model");
    let responded = a.str("gen_ai.response.model");
    let model_id = requested
        .or(responded)
        .ok_or("no gen_ai.request.model or gen_ai.response.model")?;
    let tokens = |new: &str, old: &str| a.uint(new).or_else(|| a.uint(old)).unwrap_or(0);
    Ok(json!({
        "model_id": model_id,
        "model_version": responded.unwrap_or(model_id),
        "prompt": prompt,
        "output": output,
        "prompt_tokens": tokens("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        "completion_tokens": tokens("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        "latency_ms": latency_ms,
    }))
}

fn agent(a: Attrs<'_>, resource: Attrs<'_>) -> Result<String, String> {
    let agent = a
        .str("gen_ai.agent.id")
        .or(a.str("gen_ai.agent.name"))
        .or(resource.str("service.name"))
        .filter(|s| !s.is_empty())
        .ok_or(
            "no agent: set gen_ai.agent.id or gen_ai.agent.name, or the resource's service.name",
        )?;
    checked_id("agent", agent)
}

fn user(a: Attrs<'_>) -> Result<Option<String>, String> {
    a.str("user.id")
        .or(a.str("enduser.id"))
        .map(|u| checked_id("user.id", u))
        .transpose()
}

/// An envelope id as schema v1 takes it: not empty, at most 128 bytes, no control characters.
fn checked_id(what: &str, id: &str) -> Result<String, String> {
    let max = custody_schemas::event::MAX_ID_LEN;
    if id.is_empty() || id.len() > max || id.chars().any(char::is_control) {
        return Err(format!(
            "{what} {id:?} is not an id (1 to {max} bytes, no control characters)"
        ));
    }
    Ok(id.to_string())
}

/// Lowercase hex of an id of `len` bytes that is not all zero.
fn id_hex(id: &[u8], len: usize) -> Option<String> {
    (id.len() == len && id.iter().any(|b| *b != 0)).then(|| hex::encode(id))
}

/// Attribute lookup.
#[derive(Clone, Copy)]
struct Attrs<'a>(&'a [KeyValue]);

impl<'a> Attrs<'a> {
    fn get(self, key: &str) -> Option<&'a any_value::Value> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn str(self, key: &str) -> Option<&'a str> {
        match self.get(key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    fn bool(self, key: &str) -> Option<bool> {
        match self.get(key)? {
            any_value::Value::BoolValue(b) => Some(*b),
            any_value::Value::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn uint(self, key: &str) -> Option<u64> {
        match self.get(key)? {
            any_value::Value::IntValue(i) => u64::try_from(*i).ok(),
            any_value::Value::DoubleValue(d) if *d >= 0.0 => Some(*d as u64),
            any_value::Value::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// A value as text: a string as it is, anything else as JSON.
    fn text(self, key: &str) -> Option<String> {
        match self.get(key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            v => Some(to_json(v).to_string()),
        }
    }
}

/// An attribute value as plain JSON (arrays and maps as such, bytes as hex).
fn to_json(v: &any_value::Value) -> Value {
    let any = |v: &AnyValue| v.value.as_ref().map_or(Value::Null, to_json);
    match v {
        any_value::Value::StringValue(s) => Value::from(s.as_str()),
        any_value::Value::BoolValue(b) => Value::from(*b),
        any_value::Value::IntValue(i) => Value::from(*i),
        any_value::Value::DoubleValue(d) => Value::from(*d),
        any_value::Value::BytesValue(b) => Value::from(hex::encode(b)),
        any_value::Value::ArrayValue(a) => Value::Array(a.values.iter().map(any).collect()),
        any_value::Value::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
        }
    }

    fn s(key: &str, v: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(v.into()))
    }

    fn i(key: &str, v: i64) -> KeyValue {
        kv(key, any_value::Value::IntValue(v))
    }

    const T0: u64 = 1_780_000_000_000_000_000;

    fn span(id: u8, parent: Option<u8>, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: "op".into(),
            start_time_unix_nano: T0 + u64::from(id) * 1_000_000,
            end_time_unix_nano: T0 + 500_000_000 - u64::from(id) * 1_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![s("service.name", "support-bot")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn decoded(m: &Mapping) -> Vec<custody_schemas::AuditEvent> {
        m.records
            .iter()
            .filter(|r| r.unmappable.is_none())
            .map(|r| custody_schemas::event::decode_event(&r.bytes).expect("a valid v1 event"))
            .collect()
    }

    #[test]
    fn an_agent_trace_maps_to_a_session_of_valid_events() {
        let spans = vec![
            span(
                3,
                Some(1),
                vec![
                    s("gen_ai.operation.name", "execute_tool"),
                    s("gen_ai.tool.name", "refund"),
                    s(
                        "gen_ai.tool.call.arguments",
                        r#"{"amount": 120.5, "order": "A-1"}"#,
                    ),
                ],
            ),
            span(
                2,
                Some(1),
                vec![
                    s("gen_ai.operation.name", "chat"),
                    s("gen_ai.request.model", "gpt-4o"),
                    s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                    i("gen_ai.usage.input_tokens", 42),
                    i("gen_ai.usage.output_tokens", 7),
                    s("gen_ai.input.messages", "[{\"role\":\"user\"}]"),
                ],
            ),
            span(
                1,
                None,
                vec![
                    s("gen_ai.operation.name", "invoke_agent"),
                    s("gen_ai.agent.name", "support-bot"),
                    s("user.id", "u-9"),
                ],
            ),
        ];
        let m = map_traces(&request(spans), "acme");
        assert_eq!((m.events(), m.unmappable()), (5, 0));
        let events = decoded(&m);
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "TASK_INITIATED",
                "TOOL_CALLED",
                "TOOL_RESULT_RECEIVED",
                "MODEL_DECISION",
                "TASK_COMPLETED"
            ]
        );
        let trace = "07".repeat(16);
        let root = format!("otel:{trace}:{}", "01".repeat(8));
        for e in &events {
            assert_eq!(e.session_id, trace);
            assert_eq!(e.tenant_id.as_str(), "acme");
            assert_eq!(e.agent_id, "support-bot");
        }
        assert_eq!(events[0].event_id, root);
        assert_eq!(events[0].parent_event_id, None);
        assert_eq!(events[0].user_id.as_deref(), Some("u-9"));
        assert_eq!(events[1].parent_event_id.as_deref(), Some(root.as_str()));
        assert_eq!(
            events[2].parent_event_id.as_deref(),
            Some(events[1].event_id.as_str())
        );
        let model: Value = serde_json::from_str(&events[3].payload).unwrap();
        assert_eq!(model["model_id"], "gpt-4o");
        assert_eq!(model["model_version"], "gpt-4o-2024-08-06");
        assert_eq!(
            (
                model["prompt_tokens"].as_u64(),
                model["completion_tokens"].as_u64()
            ),
            (Some(42), Some(7))
        );
        assert_eq!(model["latency_ms"], 496);
        let call: Value = serde_json::from_str(&events[1].payload).unwrap();
        assert_eq!(call["input"]["amount"], 120.5);
    }

    #[test]
    fn failures_become_error_results_and_failed_tasks() {
        let mut tool = span(
            2,
            Some(1),
            vec![
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", "db"),
            ],
        );
        tool.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "timeout".into(),
        });
        let mut agent = span(
            1,
            None,
            vec![
                s("gen_ai.operation.name", "invoke_agent"),
                s("error.type", "ToolError"),
            ],
        );
        agent.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        let m = map_traces(&request(vec![tool, agent]), "acme");
        let events = decoded(&m);
        let result = events
            .iter()
            .find(|e| e.event_type.as_str() == "TOOL_RESULT_RECEIVED")
            .unwrap();
        let p: Value = serde_json::from_str(&result.payload).unwrap();
        assert_eq!(
            (p["status"].as_str(), p["error_message"].as_str()),
            (Some("error"), Some("timeout"))
        );
        let failed = events
            .iter()
            .find(|e| e.event_type.as_str() == "TASK_FAILED")
            .unwrap();
        let p: Value = serde_json::from_str(&failed.payload).unwrap();
        assert_eq!(p["reason"], "ToolError");
    }

    #[test]
    fn unmappable_spans_carry_their_reason_and_tenant() {
        let cases = [
            (vec![], "no gen_ai.operation.name"),
            (
                vec![s("gen_ai.operation.name", "embeddings")],
                "\"embeddings\" has no schema v1 event",
            ),
            (
                vec![s("gen_ai.operation.name", "chat")],
                "no gen_ai.request.model",
            ),
            (
                vec![s("gen_ai.operation.name", "execute_tool")],
                "without gen_ai.tool.name",
            ),
        ];
        for (attrs, why) in cases {
            let m = map_traces(&request(vec![span(1, None, attrs)]), "acme");
            assert_eq!((m.events(), m.unmappable()), (0, 1));
            let r: Value = serde_json::from_slice(&m.records[0].bytes).unwrap();
            assert_eq!(r["tenant_id"], "acme");
            assert!(r[UNMAPPABLE_REASON].as_str().unwrap().contains(why), "{r}");
            assert_eq!(
                r["span"]["spanId"], "0101010101010101",
                "kept as OTLP JSON: {r}"
            );
        }
        let mut zero = span(
            1,
            None,
            vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", "m"),
            ],
        );
        zero.trace_id = vec![0; 16];
        let m = map_traces(&request(vec![zero]), "acme");
        assert!(m.first_reason().unwrap().contains("trace_id"));
    }

    /// Spans drawn at random (operations, attribute types, ids, times, sizes): every record is
    /// a valid schema v1 event of the tenant or an unmappable record with a reason; nothing
    /// panics and nothing is lost.
    #[test]
    fn random_spans_map_to_valid_events_or_reasons() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ops = [
            "chat",
            "text_completion",
            "generate_content",
            "execute_tool",
            "invoke_agent",
            "embeddings",
            "",
            "CHAT",
        ];
        let keys = [
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.tool.name",
            "gen_ai.agent.name",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.tool.call.arguments",
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "error.type",
            "user.id",
            "custody.tool.elevated",
        ];
        let texts = [
            "",
            "gpt-4o",
            "{\"a\": 1}",
            "[1, 2",
            "naïve ✓ \u{0}",
            "x\ny",
            "-5",
            "1e999",
        ];
        for round in 0..2000 {
            let mut attrs = Vec::new();
            let op = ops[next(ops.len() as u64) as usize];
            if !op.is_empty() {
                attrs.push(s("gen_ai.operation.name", op));
            }
            for _ in 0..next(8) {
                let key = keys[next(keys.len() as u64) as usize];
                let value = match next(6) {
                    0 => any_value::Value::IntValue(next(1000) as i64 - 100),
                    1 => any_value::Value::DoubleValue(next(1000) as f64 / 7.0 - 10.0),
                    2 => any_value::Value::BoolValue(next(2) == 0),
                    3 => any_value::Value::BytesValue(vec![0xff, 0]),
                    4 => any_value::Value::ArrayValue(
                        opentelemetry_proto::tonic::common::v1::ArrayValue {
                            values: vec![AnyValue {
                                value: Some(any_value::Value::IntValue(1)),
                            }],
                        },
                    ),
                    _ => any_value::Value::StringValue(
                        texts[next(texts.len() as u64) as usize].into(),
                    ),
                };
                attrs.push(kv(key, value));
            }
            let mut sp = span(
                (next(255) + 1) as u8,
                (next(3) > 0).then(|| (next(255) + 1) as u8),
                attrs,
            );
            match next(10) {
                0 => sp.trace_id = vec![1; next(20) as usize],
                1 => sp.start_time_unix_nano = 0,
                2 => sp.end_time_unix_nano = 1,
                3 => {
                    sp.status = Some(Status {
                        code: StatusCode::Error as i32,
                        message: "boom".into(),
                    })
                }
                _ => {}
            }
            let mut m = map_traces(&request(vec![sp]), "acme");
            m.cap("acme", 1 << 20);
            assert!(
                !m.records.is_empty(),
                "round {round}: a span left no record"
            );
            for r in &m.records {
                match &r.unmappable {
                    None => {
                        let e =
                            custody_schemas::event::decode_event(&r.bytes).unwrap_or_else(|e| {
                                panic!("round {round}: {e}: {}", String::from_utf8_lossy(&r.bytes))
                            });
                        assert_eq!(e.tenant_id.as_str(), "acme");
                    }
                    Some(reason) => {
                        let v: Value = serde_json::from_slice(&r.bytes).unwrap();
                        assert_eq!(v[UNMAPPABLE_REASON], reason.as_str());
                        assert_eq!(v["tenant_id"], "acme");
                    }
                }
            }
        }
    }

    #[test]
    fn records_over_the_limit_become_small_unmappable_ones() {
        let long = "x".repeat(10_000);
        let chat = span(
            1,
            None,
            vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", "m"),
                s("gen_ai.input.messages", &long),
            ],
        );
        let mut m = map_traces(&request(vec![chat]), "acme");
        m.cap("acme", 4096);
        assert_eq!((m.events(), m.unmappable()), (0, 1));
        let r: Value = serde_json::from_slice(&m.records[0].bytes).unwrap();
        assert!(m.records[0].bytes.len() < 4096);
        assert_eq!(r["tenant_id"], "acme");
        assert!(
            r[UNMAPPABLE_REASON]
                .as_str()
                .unwrap()
                .contains("MODEL_DECISION event otel:"),
            "{r}"
        );
    }

    #[test]
    fn inference_details_log_events_map_and_other_logs_do_not() {
        let details = LogRecord {
            time_unix_nano: T0,
            event_name: INFERENCE_DETAILS_EVENT.into(),
            trace_id: vec![7; 16],
            span_id: vec![2; 8],
            attributes: vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", "claude"),
                s("gen_ai.output.messages", "hi"),
            ],
            ..Default::default()
        };
        let plain = LogRecord {
            time_unix_nano: T0,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("GET /".into())),
            }),
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![s("service.name", "bot")],
                    ..Default::default()
                }),
                scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                    log_records: vec![details, plain],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let m = map_logs(&request, "acme");
        assert_eq!((m.events(), m.unmappable()), (1, 1));
        let e = &decoded(&m)[0];
        assert_eq!(
            e.event_id,
            format!("otel:{}:{}:details", "07".repeat(16), "02".repeat(8))
        );
        assert_eq!(
            e.parent_event_id.as_deref(),
            Some(&e.event_id[..e.event_id.len() - 8])
        );
        assert!(m.first_reason().unwrap().contains("no event name"));
    }
}
