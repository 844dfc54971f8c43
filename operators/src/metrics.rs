//! Prometheus metrics, defined once and handed to operators as cheap handles.
//!
//! Operator spec: every operator MUST count `custody_operator_events_received_total`,
//! `custody_operator_events_sent_total` and `custody_operator_errors_total` under its
//! `operator` label. Tenant ids are never labels (unbounded cardinality).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// All metrics of one pipeline process.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Raw records read from sources.
    pub events_in: IntCounter,
    /// Events accepted into a tenant chain.
    pub events_accepted: IntCounter,
    /// Records quarantined, by reason kind.
    pub events_quarantined: IntCounterVec,
    /// Records passed on to the location that keeps them ([`crate::residency`]), by location.
    pub events_elsewhere: IntCounterVec,
    /// PII tokens produced, by kind.
    pub pii_tokens: IntCounterVec,
    op_received: IntCounterVec,
    op_sent: IntCounterVec,
    op_errors: IntCounterVec,
    /// Rows written per table.
    pub sink_rows: IntCounterVec,
    /// Iceberg commits per table.
    pub sink_commits: IntCounterVec,
    /// Data files replaced by compaction, per table.
    pub compacted_files: IntCounterVec,
    /// Rows removed by retention, per table.
    pub retention_expired_rows: IntCounterVec,
    /// Duration of one epoch's commit (all tables).
    pub sink_commit_seconds: Histogram,
    /// Last epoch committed to the lake.
    pub last_committed_epoch: IntGauge,
    /// Unix time (seconds) of the last commit: `time() - this` is how stale the lake and the
    /// views are.
    pub last_commit_timestamp: IntGauge,
    /// HITL reviews that breached their SLA (rows new to the SLA breaches view, committed).
    pub sla_breaches: IntCounter,
    /// Tenants with a chain.
    pub tenants: IntGauge,
    /// Checkpoints signed.
    pub checkpoints_signed: IntCounter,
    /// Continuous verifier alerts, by kind (gap, fork, bad_link, bad_signature).
    pub verifier_alerts: IntCounterVec,
    /// Table commits of the last epoch completed from its manifest at start-up.
    pub sink_commits_rolled_forward: IntCounterVec,
    /// Records re-read after a restart that the lake already had (not counted as input).
    pub source_records_skipped: IntCounter,
    /// Events whose payload tenant disagreed with the producer's bound tenant.
    pub tenant_spoofs: IntCounter,
    /// Consumer lag per Kafka partition (records), from librdkafka statistics.
    pub kafka_lag: IntGaugeVec,
    /// Quarantined raw records published to the dead-letter topic.
    pub dead_letters: IntCounter,
    /// Drift and anomaly alerts raised, by kind.
    pub alerts_raised: IntCounterVec,
    /// Alerts holding now, by kind.
    pub alerts_active: IntGaugeVec,
    /// Alert deliveries, by target (alertmanager, kafka) and outcome (ok, error).
    pub alert_deliveries: IntCounterVec,
    /// State the views hold, by view and kind (entries: sessions, events, keys, buckets).
    pub view_state: IntGaugeVec,
    /// Events of a view key already retired (committed, not applied to its final rows).
    pub view_late_events: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    // Panic: names are constants, checked by the unit test.
    let c = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

/// The three counters of one operator.
#[derive(Clone, Debug)]
pub struct OperatorMetrics {
    /// Records that entered the operator.
    pub received: IntCounter,
    /// Records the operator emitted on its ok output.
    pub sent: IntCounter,
    /// Records the operator emitted on its error output.
    pub errors: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        // Panic: names and labels are constants, checked by the unit test.
        .expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    /// Defines every metric in a fresh registry.
    pub fn new() -> Self {
        let metrics = Self::define();
        metrics.touch_alert_kinds();
        metrics
    }

    fn define() -> Self {
        let registry = Registry::new();
        let events_in = IntCounter::new("custody_events_in_total", "raw records read from sources")
            .expect("valid metric");
        let events_accepted = IntCounter::new(
            "custody_events_accepted_total",
            "events accepted into a chain",
        )
        .expect("valid metric");
        let sink_commit_seconds = Histogram::with_opts(HistogramOpts::new(
            "custody_sink_commit_seconds",
            "time to commit one epoch to every table",
        ))
        .expect("valid metric");
        let last_committed_epoch = IntGauge::new(
            "custody_sink_last_committed_epoch",
            "last epoch committed to the lake",
        )
        .expect("valid metric");
        let tenants =
            IntGauge::new("custody_tenants", "tenants with a chain").expect("valid metric");
        let checkpoints_signed =
            IntCounter::new("custody_checkpoints_signed_total", "checkpoints signed")
                .expect("valid metric");
        for m in [
            Box::new(events_in.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events_accepted.clone()),
            Box::new(sink_commit_seconds.clone()),
            Box::new(last_committed_epoch.clone()),
            Box::new(tenants.clone()),
            Box::new(checkpoints_signed.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Metrics {
            events_quarantined: counter_vec(
                &registry,
                "custody_events_quarantined_total",
                "records quarantined",
                &["reason"],
            ),
            events_elsewhere: counter_vec(
                &registry,
                "custody_events_elsewhere_total",
                "records passed on to the location that keeps their tenant's data",
                &["location"],
            ),
            pii_tokens: counter_vec(
                &registry,
                "custody_pii_tokens_total",
                "pii occurrences replaced by tokens",
                &["kind"],
            ),
            op_received: counter_vec(
                &registry,
                "custody_operator_events_received_total",
                "records received per operator",
                &["operator"],
            ),
            op_sent: counter_vec(
                &registry,
                "custody_operator_events_sent_total",
                "records sent per operator",
                &["operator"],
            ),
            op_errors: counter_vec(
                &registry,
                "custody_operator_errors_total",
                "records sent to the error output per operator",
                &["operator"],
            ),
            sink_rows: counter_vec(
                &registry,
                "custody_sink_rows_total",
                "rows written per table",
                &["table"],
            ),
            sink_commits: counter_vec(
                &registry,
                "custody_sink_commits_total",
                "iceberg commits per table",
                &["table"],
            ),
            compacted_files: counter_vec(
                &registry,
                "custody_compacted_files_total",
                "data files merged into larger ones by compaction, per table",
                &["table"],
            ),
            retention_expired_rows: counter_vec(
                &registry,
                "custody_retention_expired_rows_total",
                "rows removed by retention (events past their tenant's policy, their vault \
                 entries and quarantined records), per table",
                &["table"],
            ),
            verifier_alerts: counter_vec(
                &registry,
                "custody_verifier_alerts_total",
                "integrity problems found by the continuous verifier",
                &["kind"],
            ),
            registry: registry.clone(),
            checkpoints_signed,
            events_in,
            events_accepted,
            sink_commit_seconds,
            last_committed_epoch,
            last_commit_timestamp: {
                let g = IntGauge::new(
                    "custody_sink_last_commit_timestamp_seconds",
                    "unix time of the last epoch committed to the lake",
                )
                .expect("valid metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            sla_breaches: counter(
                &registry,
                "custody_hitl_sla_breaches_total",
                "human reviews that breached their SLA (committed to the SLA breaches view)",
            ),
            tenants,
            sink_commits_rolled_forward: counter_vec(
                &registry,
                "custody_sink_commits_rolled_forward_total",
                "table commits a crash cut short, completed at start-up from the epoch manifest",
                &["table"],
            ),
            source_records_skipped: counter(
                &registry,
                "custody_source_records_skipped_total",
                "records re-read after a restart that were already durable in the lake",
            ),
            alerts_raised: counter_vec(
                &registry,
                "custody_alerts_raised_total",
                "drift and anomaly alerts raised",
                &["kind"],
            ),
            alerts_active: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "custody_alerts_active",
                        "drift and anomaly alerts holding now",
                    ),
                    &["kind"],
                )
                .expect("valid metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            view_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "custody_view_state",
                        "state the views hold, by view and kind of entry",
                    ),
                    &["view", "kind"],
                )
                .expect("valid metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            view_late_events: counter_vec(
                &registry,
                "custody_view_late_events_total",
                "events of a view key already retired, not applied to its final rows",
                &["view"],
            ),
            alert_deliveries: counter_vec(
                &registry,
                "custody_alert_deliveries_total",
                "alert deliveries by target and outcome",
                &["target", "outcome"],
            ),
            tenant_spoofs: counter(
                &registry,
                "custody_tenant_spoofs_total",
                "events claiming a tenant other than their producer's",
            ),
            kafka_lag: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "custody_kafka_consumer_lag",
                        "records behind the high watermark per partition",
                    ),
                    &["topic", "partition"],
                )
                // Panic: constant definition.
                .expect("valid metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            dead_letters: counter(
                &registry,
                "custody_dead_letters_total",
                "quarantined raw records published to the dead-letter topic",
            ),
        }
    }

    /// Creates the alert series at zero so dashboards see them before the first alert.
    fn touch_alert_kinds(&self) {
        for kind in [
            "gap",
            "fork",
            "modified",
            "broken_link",
            "root_mismatch",
            "bad_signature",
            "emitter_chain_break",
        ] {
            self.verifier_alerts.with_label_values(&[kind]);
        }
    }

    /// The handles of operator `name`.
    pub fn operator(&self, name: &str) -> OperatorMetrics {
        OperatorMetrics {
            received: self.op_received.with_label_values(&[name]),
            sent: self.op_sent.with_label_values(&[name]),
            errors: self.op_errors.with_label_values(&[name]),
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.operator("decode").received.inc();
        m.events_quarantined
            .with_label_values(&["invalid_json"])
            .inc();
        let text = m.render();
        for name in [
            "custody_events_in_total",
            "custody_operator_events_received_total{operator=\"decode\"} 1",
            "custody_events_quarantined_total{reason=\"invalid_json\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
