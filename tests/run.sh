#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the end-to-end tests need
# (the tansu Kafka broker, the s3s-fs S3 server, a Python venv with pyiceberg + pyarrow, headless Chromium,
# Prometheus and Alertmanager), checks docker/'s configurations, builds the custody binary,
# then runs `cargo test`. Installs are cached under ~/.cache/custody and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${CUSTODY_CACHE:-$HOME/.cache/custody}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
mkdir -p "$CACHE"

TANSU_VERSION=0.6.0
export TANSU_BIN="$CACHE/tansu/bin/tansu"
if ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION" \
   || [ ! -f "$CACHE/tansu/.libsql" ]; then
  echo "==> installing tansu $TANSU_VERSION (Kafka-compatible broker; first time only)"
  cargo install tansu --version "$TANSU_VERSION" --locked --force --features dynostore,libsql \
    --root "$CACHE/tansu" --target-dir "$CACHE/tansu-target"
  touch "$CACHE/tansu/.libsql"
fi

# s3s-fs: an S3-compatible server over a local directory, for the object storage test.
S3S_VERSION=0.14.1
export CUSTODY_S3_SERVER="$CACHE/s3s/bin/s3s-fs"
if ! "$CUSTODY_S3_SERVER" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  echo "==> installing s3s-fs $S3S_VERSION (S3-compatible server; first time only)"
  cargo install s3s-fs --version "$S3S_VERSION" --locked --force --features binary \
    --root "$CACHE/s3s" --target-dir "$CACHE/s3s-target"
fi

export CUSTODY_PYTHON="$CACHE/venv/bin/python"
# pyiceberg-core: pyiceberg's bucket transform, to write Custody's bucket-partitioned tables.
# moto[server]: an S3-compatible server that enforces Object Lock, for the object lock test.
# opentelemetry-sdk and its OTLP exporters (HTTP and gRPC): the agent of the OTLP intake test.
if ! "$CUSTODY_PYTHON" -c "import pyiceberg, pyarrow, sqlalchemy, nacl, pyiceberg_core, moto, boto3, yaml" 2>/dev/null; then
  echo "==> creating the python venv for interop tests (pyiceberg, pyarrow)"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
    "pyiceberg[sql-sqlite,pyarrow,pyiceberg-core]==0.12.0" "pyiceberg-core==0.10.1" "pynacl==1.5.0" \
    "moto[server]==5.1.0" "boto3==1.37.0" "PyYAML==6.0.2"
fi
if ! "$CUSTODY_PYTHON" -c "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http" 2>/dev/null; then
  echo "==> installing the OpenTelemetry SDK and OTLP exporters into the venv"
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
    "opentelemetry-sdk==1.45.2" "opentelemetry-exporter-otlp-proto-http==1.45.2" \
    "opentelemetry-exporter-otlp-proto-grpc==1.45.2"
fi

# Prometheus and Alertmanager (Debian's packages, with promtool and amtool): docker/'s configs are
# checked by them, and tests/tests/ops_stack.rs runs both against a running custody. openssl
# makes the TLS tests' certificates and socat terminates TLS in front of tansu (tests/tests/tls.rs).
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1 \
   || ! command -v socat >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1 \
   || ! command -v curl >/dev/null 2>&1; then
  echo "==> installing prometheus, alertmanager, socat, openssl, curl"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null && \
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
      prometheus prometheus-alertmanager socat openssl curl >/dev/null
fi

# Headless Chromium renders the dashboard in tests/tests/live_views.rs (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium for the dashboard test"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null && \
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null
fi

echo "==> checking docker/ (promtool, amtool, compose and dashboards)"
promtool check config docker/prometheus/prometheus.yml
promtool test rules docker/prometheus/tests/*.yml
amtool check-config docker/alertmanager/alertmanager.yml
# Each kind of alert reaches the receivers it is meant for.
am_route() { amtool config routes test --config.file=docker/alertmanager/alertmanager.yml --verify.receivers="$1" "${@:2}"; }
am_route compliance alertname=CustodyAgentDrift kind=model_version_change tenant_id=t severity=warning
am_route integrity alertname=CustodyIntegrityAlert integrity=true team=custody-oncall severity=critical
am_route compliance alertname=CustodyHitlSlaBreached team=compliance severity=warning
am_route custody-oncall alertname=CustodyDown team=custody-oncall severity=critical
am_route custody-oncall alertname=CustodyConsumerLagHigh team=custody-oncall severity=warning
"$CUSTODY_PYTHON" tests/py/check_docker.py docker

echo "==> building"
cargo build --workspace --all-targets
export CUSTODY_BIN="$CARGO_TARGET_DIR/debug/custody"

echo "==> testing"
cargo test --workspace "$@"
