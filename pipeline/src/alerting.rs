//! Delivers drift and anomaly alerts: to an Alertmanager (API v2, `POST /api/v2/alerts`) and
//! to a Kafka alerts topic, with Prometheus metrics.
//!
//! # Inputs
//! The committed changes of the alerts view ([`ViewId::Alerts`]), handed over by the sink's
//! commit hook: an inserted row raises an alert, a row retracted without a replacement
//! resolves it, and a retired row (its window fell below the drift horizon: final, no longer
//! evaluated) stops being re-sent. Only committed epochs are seen, so every alert is backed by
//! the lake.
//!
//! # Outputs
//! - Alertmanager: every change, and every active alert again each `resend`, with `endsAt`
//!   three `resend`s ahead while it holds (Alertmanager's own convention) and `endsAt = now`
//!   once resolved. A retired alert is not sent again: Alertmanager lets it end at the
//!   `endsAt` it last received.
//! - Kafka: one JSON message per change, keyed by `tenant/alert key`.
//! - `custody_alerts_active{kind}`, `custody_alert_deliveries_total{target,outcome}`
//!   (`custody_alerts_raised_total{kind}` is counted by the sink as alerts are committed).
//!
//! # State and its bound
//! The active alerts, in memory: those of windows from each agent's drift horizon on (retired
//! ones leave), so bounded by agents × kept windows, not by history.
//!
//! # Failure modes
//! Alerts are derived data: a delivery failure is logged and counted, retried at the next
//! re-send, and never stops the pipeline. After a restart, alerts still active are re-sent only
//! when they change.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use custody_operators::Metrics;
use custody_operators::record::{ViewId, ViewUpdate};
use custody_operators::sinks::dead_letter::ensure_topic;
use custody_operators::sources::kafka::kafka_client_config;
use custody_reports::views::alerts::Alert;
use custody_schemas::time::{format_rfc3339, now_us};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// Where alerts go.
#[derive(Clone, Debug, Default)]
pub struct AlertTargets {
    /// Alertmanager base URL.
    pub alertmanager_url: Option<String>,
    /// Kafka brokers and topic.
    pub kafka: Option<(String, String)>,
    /// Re-send period.
    pub resend: Duration,
    /// A CA (PEM file) to trust for an https:// Alertmanager, besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// One alert that was raised or resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertChange {
    /// Tenant.
    pub tenant_id: String,
    /// The alert's key in the view.
    pub key: String,
    /// The alert.
    pub alert: Alert,
    /// Raised (or changed) if true, resolved or retired if false.
    pub firing: bool,
    /// Retired: final and no longer evaluated (not resolved).
    pub retired: bool,
}

/// The alert changes among one epoch's view changes.
pub fn changes(updates: &[ViewUpdate]) -> Vec<AlertChange> {
    /// The row inserted, the row retracted and the row retired, per (tenant, key).
    type Sides<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let mut by_key: BTreeMap<(&str, &str), Sides<'_>> = BTreeMap::new();
    for u in updates {
        match u {
            ViewUpdate::Row {
                view: ViewId::Alerts,
                tenant_id,
                key,
                row,
                diff,
            } => {
                let e = by_key.entry((tenant_id, key)).or_default();
                if *diff > 0 {
                    e.0 = Some(row);
                } else {
                    e.1 = Some(row);
                }
            }
            ViewUpdate::Retired {
                view: ViewId::Alerts,
                tenant_id,
                key,
                row,
            } => by_key.entry((tenant_id, key)).or_default().2 = Some(row),
            _ => {}
        }
    }
    by_key
        .into_iter()
        .filter_map(|((tenant, key), (inserted, retracted, retired))| {
            let (row, firing, retired) = match (inserted, retracted, retired) {
                (Some(row), _, _) => (row, true, false),
                (None, Some(row), _) => (row, false, false),
                (None, None, Some(row)) => (row, false, true),
                (None, None, None) => return None,
            };
            Some(AlertChange {
                tenant_id: tenant.to_string(),
                key: key.to_string(),
                alert: serde_json::from_str(row).ok()?,
                firing,
                retired,
            })
        })
        .collect()
}

/// The Alertmanager API v2 form of an alert.
pub fn alertmanager_alert(
    change: &AlertChange,
    started_us: i64,
    now_us: i64,
    resend: Duration,
) -> Value {
    let a = &change.alert;
    let ends = if change.firing {
        now_us + 3 * resend.as_micros() as i64
    } else {
        now_us
    };
    json!({
        "labels": {
            "alertname": "CustodyAgentDrift",
            "kind": a.kind.as_str(),
            "severity": a.severity,
            "tenant_id": change.tenant_id,
            "agent_id": a.agent_id,
            "alert_key": change.key,
        },
        "annotations": {
            "summary": a.summary,
            "value": a.value.to_string(),
            "baseline": a.baseline.to_string(),
            "window_start": format_rfc3339(a.window_start_us),
        },
        "startsAt": format_rfc3339(started_us),
        "endsAt": format_rfc3339(ends),
    })
}

/// Hands committed view changes to the notifier thread.
#[derive(Clone, Debug)]
pub struct AlertSender(Sender<Vec<AlertChange>>);

impl AlertSender {
    /// Passes on the alert changes of one committed epoch.
    pub fn committed(&self, updates: &[ViewUpdate]) {
        let changes = changes(updates);
        if !changes.is_empty() {
            // The notifier only stops with the process.
            let _ = self.0.send(changes);
        }
    }
}

/// Starts the notifier thread.
pub fn start(targets: AlertTargets, metrics: Metrics) -> std::io::Result<AlertSender> {
    let http = crate::tls::http_client(targets.ca_file.as_deref(), Duration::from_secs(10))
        .map_err(std::io::Error::other)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let producer = match &targets.kafka {
        Some((brokers, _)) => match kafka_client_config(brokers)
            .set("message.timeout.ms", "10000")
            .create::<FutureProducer>()
        {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "alerts topic unavailable");
                None
            }
        },
        None => None,
    };
    std::thread::Builder::new()
        .name("custody-alerts".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "alert notifier failed to start");
                    return;
                }
            };
            if let Some((brokers, topic)) = &targets.kafka
                && let Err(e) = runtime.block_on(ensure_topic(brokers, topic))
            {
                tracing::warn!(error = %e, %topic, "cannot create the alerts topic");
            }
            runtime.block_on(Notifier::new(targets, metrics, producer, http).run(rx));
        })?;
    Ok(AlertSender(tx))
}

struct Notifier {
    targets: AlertTargets,
    metrics: Metrics,
    producer: Option<FutureProducer>,
    http: reqwest::Client,
    /// Active alerts by (tenant, key), with when they were raised (UTC micros).
    active: BTreeMap<(String, String), (AlertChange, i64)>,
}

impl Notifier {
    fn new(
        targets: AlertTargets,
        metrics: Metrics,
        producer: Option<FutureProducer>,
        http: reqwest::Client,
    ) -> Self {
        Notifier {
            targets,
            metrics,
            producer,
            http,
            active: BTreeMap::new(),
        }
    }

    async fn run(mut self, rx: Receiver<Vec<AlertChange>>) {
        let resend = self.targets.resend.max(Duration::from_secs(1));
        let mut last_resend = Instant::now();
        loop {
            let wait = resend.saturating_sub(last_resend.elapsed());
            match rx.recv_timeout(wait) {
                Ok(changes) => self.apply(changes).await,
                Err(RecvTimeoutError::Timeout) => {
                    let all: Vec<(AlertChange, i64)> = self.active.values().cloned().collect();
                    self.post_alertmanager(&all).await;
                    last_resend = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    async fn apply(&mut self, changes: Vec<AlertChange>) {
        let now = now_us();
        let mut delivered = Vec::new();
        for change in changes {
            let kind = change.alert.kind.as_str();
            let id = (change.tenant_id.clone(), change.key.clone());
            if change.firing {
                let started = match self.active.get(&id) {
                    Some((_, started)) => *started,
                    None => {
                        self.metrics.alerts_active.with_label_values(&[kind]).inc();
                        // Delivered and counted; a log line each would bury the log (a demo
                        // raises hundreds).
                        tracing::debug!(
                            tenant_id = %change.tenant_id,
                            kind,
                            summary = %change.alert.summary,
                            "alert raised"
                        );
                        now
                    }
                };
                self.active.insert(id, (change.clone(), started));
                delivered.push((change, started));
            } else if let Some((_, started)) = self.active.remove(&id) {
                self.metrics.alerts_active.with_label_values(&[kind]).dec();
                if change.retired {
                    // Final: no longer re-sent, and not resolved either.
                    continue;
                }
                tracing::info!(tenant_id = %change.tenant_id, kind, "alert resolved");
                delivered.push((change, started));
            }
        }
        self.post_alertmanager(&delivered).await;
        self.publish_kafka(&delivered).await;
    }

    async fn post_alertmanager(&self, alerts: &[(AlertChange, i64)]) {
        let Some(url) = &self.targets.alertmanager_url else {
            return;
        };
        if alerts.is_empty() {
            return;
        }
        let now = now_us();
        let body: Vec<Value> = alerts
            .iter()
            .map(|(c, started)| alertmanager_alert(c, *started, now, self.targets.resend))
            .collect();
        let url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
        let outcome = match self.http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => "ok",
            Ok(r) => {
                tracing::warn!(status = %r.status(), %url, "alertmanager refused alerts");
                "error"
            }
            Err(e) => {
                tracing::warn!(error = %e, %url, "alertmanager unreachable");
                "error"
            }
        };
        self.metrics
            .alert_deliveries
            .with_label_values(&["alertmanager", outcome])
            .inc_by(alerts.len() as u64);
    }

    async fn publish_kafka(&self, alerts: &[(AlertChange, i64)]) {
        let (Some(producer), Some((_, topic))) = (&self.producer, &self.targets.kafka) else {
            return;
        };
        for (c, started) in alerts {
            let key = format!("{}/{}", c.tenant_id, c.key);
            let payload = json!({
                "status": if c.firing { "firing" } else { "resolved" },
                "tenant_id": c.tenant_id,
                "key": c.key,
                "started_at": format_rfc3339(*started),
                "alert": c.alert,
            })
            .to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            let outcome = match producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => "ok",
                Err((e, _)) => {
                    tracing::warn!(error = %e, %topic, "alerts topic refused an alert");
                    "error"
                }
            };
            self.metrics
                .alert_deliveries
                .with_label_values(&["kafka", outcome])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use custody_reports::views::alerts::AlertKind;

    use super::*;

    fn row(key: &str, value: i64, diff: i64) -> ViewUpdate {
        let alert = Alert {
            kind: AlertKind::ToolFailureRate,
            severity: "critical".into(),
            agent_id: "agent-1".into(),
            window_start_us: 0,
            value,
            baseline: 80,
            subject: None,
            summary: "s".into(),
        };
        ViewUpdate::Row {
            view: ViewId::Alerts,
            tenant_id: "t".into(),
            key: key.into(),
            row: serde_json::to_string(&alert).unwrap(),
            diff,
        }
    }

    #[test]
    fn inserts_raise_retractions_resolve_updates_refire() {
        let c = changes(&[
            row("a", 300, 1),
            row("b", 300, -1),
            row("c", 300, -1),
            row("c", 400, 1),
        ]);
        let got: Vec<(&str, bool, i64)> = c
            .iter()
            .map(|c| (c.key.as_str(), c.firing, c.alert.value))
            .collect();
        assert_eq!(got, [("a", true, 300), ("b", false, 300), ("c", true, 400)]);
        assert!(c.iter().all(|c| !c.retired));
        let am = alertmanager_alert(&c[1], 0, 1_000_000, Duration::from_secs(60));
        assert_eq!(am["endsAt"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(am["labels"]["kind"], "tool_failure_rate");
    }

    /// A retired alert leaves the active set (it is no longer re-sent) without resolving.
    #[test]
    fn retired_alerts_leave_the_active_set() {
        let ViewUpdate::Row { row: r, .. } = row("a", 300, -1) else {
            unreachable!()
        };
        let retired = ViewUpdate::Retired {
            view: ViewId::Alerts,
            tenant_id: "t".into(),
            key: "a".into(),
            row: r,
        };
        let c = changes(std::slice::from_ref(&retired));
        assert_eq!(c.len(), 1);
        assert!(c[0].retired && !c[0].firing);
        // A retirement and a re-insertion in one epoch: the alert fires.
        let c = changes(&[retired, row("a", 400, 1)]);
        assert!(c[0].firing && !c[0].retired);
    }
}
