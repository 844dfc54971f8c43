"""An agent instrumented with the official OpenTelemetry Python SDK, exporting over OTLP.

Emits GenAI spans (semantic conventions: invoke_agent, chat, execute_tool) and log events
(gen_ai.client.inference.operation.details), plus what Custody cannot map (an HTTP server
span, an embeddings span, a plain log line), through the SDK's own OTLP exporters (HTTP
protobuf or gRPC). Every export must succeed; prints what was sent as JSON:
{"sessions": [trace id hex, ...], "failed": trace id hex, "spans": n, "logs": n,
 "unmappable_spans": n, "unmappable_logs": n}.

usage: otel_agent.py --protocol http|grpc --endpoint URL --token TOKEN --sessions N [--gzip]
"""

import argparse
import json
import sys

from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Status, StatusCode


class Checked:
    """Delegates to an OTLP exporter (spans or logs) and remembers every result."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def exporters(protocol, endpoint, token, gzip):
    headers = {"authorization": f"Bearer {token}"}
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        c = Compression.Gzip if gzip else Compression.NoCompression
        return (
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers, timeout=30, compression=c),
            OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers, timeout=30, compression=c),
        )
    from grpc import Compression
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    c = Compression.Gzip if gzip else Compression.NoCompression
    return (
        OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=30, compression=c),
        OTLPLogExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=30, compression=c),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", choices=["http", "grpc"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--gzip", action="store_true", help="compress the exports")
    args = p.parse_args()

    # A resource that claims another tenant: the tenant is the token's, never the telemetry's.
    resource = Resource.create(
        {"service.name": "support-bot", "service.version": "2.4.1", "tenant_id": "tenant-evil"}
    )
    span_exporter, log_exporter = exporters(args.protocol, args.endpoint, args.token, args.gzip)
    spans_out = Checked(span_exporter)
    logs_out = Checked(log_exporter)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(spans_out))
    tracer = provider.get_tracer("custody-test-agent")
    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    logger = log_provider.get_logger("custody-test-agent")

    sessions, failed = [], None
    spans = logs = 0
    for i in range(args.sessions):
        fail = i == args.sessions - 1
        with tracer.start_as_current_span("invoke_agent support-bot") as root:
            root.set_attribute("gen_ai.operation.name", "invoke_agent")
            root.set_attribute("gen_ai.agent.name", "support-bot")
            root.set_attribute("gen_ai.agent.id", "agent-support-bot")
            root.set_attribute("user.id", f"user-{i}")
            root.set_attribute(
                "gen_ai.input.messages",
                json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"refund order A-{i}"}]}]),
            )
            sessions.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span("chat gpt-4o") as chat:
                chat.set_attribute("gen_ai.operation.name", "chat")
                chat.set_attribute("gen_ai.provider.name", "openai")
                chat.set_attribute("gen_ai.agent.id", "agent-support-bot")
                chat.set_attribute("gen_ai.request.model", "gpt-4o")
                chat.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
                chat.set_attribute("gen_ai.usage.input_tokens", 120 + i)
                chat.set_attribute("gen_ai.usage.output_tokens", 30)
                chat.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "parts": [{"type": "tool_call", "name": "refund"}]}]))
                ctx = chat.get_span_context()
                logger.emit(
                    LogRecord(
                        event_name="gen_ai.client.inference.operation.details",
                        trace_id=ctx.trace_id,
                        span_id=ctx.span_id,
                        trace_flags=ctx.trace_flags,
                        attributes={
                            "gen_ai.operation.name": "chat",
                            "gen_ai.agent.id": "agent-support-bot",
                            "gen_ai.request.model": "gpt-4o",
                            "gen_ai.usage.input_tokens": 120 + i,
                            "gen_ai.usage.output_tokens": 30,
                            "gen_ai.input.messages": json.dumps([{"role": "user", "content": f"refund order A-{i}"}]),
                        },
                    )
                )
                logs += 1
            spans += 1
            with tracer.start_as_current_span("execute_tool refund") as tool:
                tool.set_attribute("gen_ai.operation.name", "execute_tool")
                tool.set_attribute("gen_ai.agent.id", "agent-support-bot")
                tool.set_attribute("gen_ai.tool.name", "refund")
                tool.set_attribute("gen_ai.tool.call.id", f"call-{i}")
                tool.set_attribute("gen_ai.tool.call.arguments", json.dumps({"order": f"A-{i}", "amount": 40.5 + i}))
                if fail:
                    tool.set_attribute("error.type", "PaymentDeclined")
                    tool.set_status(Status(StatusCode.ERROR, "card declined"))
                else:
                    tool.set_attribute("gen_ai.tool.call.result", json.dumps({"refund_id": f"R-{i}"}))
            spans += 1
            if fail:
                failed = sessions[-1]
                root.set_attribute("error.type", "ToolError")
                root.set_status(Status(StatusCode.ERROR, "refund failed"))
        spans += 1

    # What Custody cannot map: quarantined with a reason, never dropped.
    with tracer.start_as_current_span("GET /healthz") as http:
        http.set_attribute("http.request.method", "GET")
    with tracer.start_as_current_span("embeddings text-embedding-3") as emb:
        emb.set_attribute("gen_ai.operation.name", "embeddings")
        emb.set_attribute("gen_ai.request.model", "text-embedding-3-small")
    logger.emit(LogRecord(body="user clicked the refund button", attributes={"ui.page": "orders"}))

    provider.shutdown()
    log_provider.shutdown()
    bad = [r for r in spans_out.results if r != SpanExportResult.SUCCESS]
    bad += [r for r in logs_out.results if r != LogRecordExportResult.SUCCESS]
    if bad or not spans_out.results or not logs_out.results:
        print(f"exports failed: {bad}", file=sys.stderr)
        sys.exit(1)
    print(
        json.dumps(
            {
                "sessions": sessions,
                "failed": failed,
                "spans": spans,
                "logs": logs,
                "unmappable_spans": 2,
                "unmappable_logs": 1,
                "exports": len(spans_out.results) + len(logs_out.results),
            }
        )
    )


if __name__ == "__main__":
    main()
