//! The operations stack of docker/ for real: Prometheus (Debian's package) runs
//! `docker/prometheus/prometheus.yml` and the rules of `docker/prometheus/rules/` (only the
//! addresses and intervals changed for the test) against a running `custody run --kafka`, with
//! `/metrics` behind a token; Alertmanager runs `docker/alertmanager/alertmanager.yml` unchanged.
//! An agent event that breaks its emitter chain fires `CustodyIntegrityAlert` in Prometheus,
//! which Alertmanager receives beside custody's own drift alerts (`CustodyAgentDrift`). Every
//! metric the rules and the Grafana dashboard query is one custody serves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custody_operators::sources::kafka::kafka_client_config;
use custody_tests::{
    KillOnDrop, Tansu, alertmanager_binary, await_listening, custody, custody_command, free_addr,
    get_json, http_get, manifest_dir, system_binary,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use sha2::{Digest, Sha256};

const METRICS_TOKEN: &str = "scrape-secret";

fn docker_dir() -> PathBuf {
    manifest_dir().join("../docker")
}

/// Debian names the binary `prometheus-alertmanager`; upstream `alertmanager`.
fn spawn(command: &mut Command, what: &str) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Prometheus's answer to an instant query: the vector's samples.
fn query(prometheus: &str, q: &str) -> Vec<Value> {
    let (code, answer) = get_json(
        prometheus,
        &format!("/api/v1/query?query={}", encode(q)),
        "",
    );
    assert_eq!(code, 200, "{q}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `check` every 500 ms until it returns `Some`; panics with `what` after `timeout`.
fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `docker/prometheus/prometheus.yml` pointed at the test's processes, scraping every second,
/// with the metrics token of the commented block switched on.
fn prometheus_config(dir: &Path, custody: &str, alertmanager: &str, prometheus: &str) -> PathBuf {
    let docker = docker_dir();
    let mut text = std::fs::read_to_string(docker.join("prometheus/prometheus.yml")).unwrap();
    let token = dir.join("custody-metrics.token");
    std::fs::write(&token, METRICS_TOKEN).unwrap();
    let rules = docker.join("prometheus/rules").canonicalize().unwrap();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".into()),
        ("\"custody:9464\"", format!("\"{custody}\"")),
        ("\"alertmanager:9093\"", format!("\"{alertmanager}\"")),
        ("\"localhost:9090\"", format!("\"{prometheus}\"")),
        ("- rules/*.yml", format!("- {}/*.yml", rules.display())),
        (
            "    # authorization:\n    #   type: Bearer\n    #   credentials_file: /etc/prometheus/custody-metrics.token",
            format!(
                "    authorization:\n      type: Bearer\n      credentials_file: {}",
                token.display()
            ),
        ),
    ] {
        assert!(text.contains(from), "prometheus.yml no longer has {from:?}");
        text = text.replace(from, &to);
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every `custody_*` metric name in `text`, comment lines aside.
fn metric_names(text: &str) -> BTreeSet<String> {
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("custody_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn prometheus_fires_a_rule_and_alertmanager_gets_it_with_custodys_drift_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start();
    // A workload whose agents move to a new model version for its last quarter: with short
    // drift windows, custody raises drift alerts.
    let produced = custody(&[
        "generate",
        "--events",
        "6000",
        "--tenants",
        "6",
        "--seed",
        "21",
        "--kafka",
        &broker.addr,
        "--topic",
        "agent-events",
        "--partitions",
        "2",
    ]);
    assert!(produced.contains("produced 6000 of 6000"), "{produced}");

    // Alertmanager, with the deployment's configuration as it is.
    let am_addr = free_addr();
    let am_data = dir.path().join("alertmanager");
    let _alertmanager = KillOnDrop(spawn(
        Command::new(alertmanager_binary())
            .arg(format!(
                "--config.file={}",
                docker_dir().join("alertmanager/alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", am_data.display()))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address="),
        "alertmanager",
    ));
    await_listening(&am_addr, "alertmanager", Duration::from_secs(30));

    // Custody, consuming the topic, sending drift alerts to Alertmanager, /metrics behind a
    // token.
    let custody_addr = free_addr();
    let wh = dir.path().join("wh");
    let _custody = KillOnDrop(
        custody_command()
            .args(["run", "--kafka", &broker.addr, "--topic", "agent-events"])
            .args(["--group", "ops", "--warehouse", wh.to_str().unwrap()])
            .args(["--listen", &custody_addr])
            .env(
                "CUSTODY__ALERTS__ALERTMANAGER_URL",
                format!("http://{am_addr}"),
            )
            .env("CUSTODY__ALERTS__KAFKA_TOPIC", "")
            .env(
                "CUSTODY__API__METRICS_TOKEN_SHA256",
                hex::encode(Sha256::digest(METRICS_TOKEN)),
            )
            .env("CUSTODY__DRIFT__WINDOW", "2m")
            .env("CUSTODY__DRIFT__BASELINE_WINDOWS", "2")
            .env("CUSTODY__VIEWS__CLOCK_TICK", "1s")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    await_listening(&custody_addr, "custody", Duration::from_secs(60));
    let (code, _, _) = http_get(&custody_addr, "/metrics", "wrong");
    assert_eq!(code, 401, "/metrics is behind its token");
    let (code, _, body) = http_get(&custody_addr, "/metrics", METRICS_TOKEN);
    assert_eq!(code, 200);
    let served = String::from_utf8(body).unwrap();

    // Prometheus, with the deployment's rules.
    let prom_addr = free_addr();
    let config = prometheus_config(dir.path(), &custody_addr, &am_addr, &prom_addr);
    let _prometheus = KillOnDrop(spawn(
        Command::new(system_binary("CUSTODY_PROMETHEUS", &["prometheus"]))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prometheus").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}")),
        "prometheus",
    ));
    await_listening(&prom_addr, "prometheus", Duration::from_secs(30));

    // Every rule group loads and every rule evaluates without error.
    let groups = eventually(Duration::from_secs(30), "rules evaluated", || {
        let (_, rules) = get_json(&prom_addr, "/api/v1/rules", "");
        let groups = rules["data"]["groups"].as_array().cloned()?;
        let rules: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        (groups.len() == 3
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            }))
        .then_some(groups)
    });
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Prometheus scrapes custody (with the token) once every event is in.
    eventually(
        Duration::from_secs(120),
        "custody scraped with every event",
        || {
            let up = query(&prom_addr, "up{job=\"custody\"}");
            let events = query(&prom_addr, "custody_events_in_total");
            let n = events.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
            (up.first()?["value"][1] == "1" && n >= 6000.0).then_some(())
        },
    );
    assert!(
        query(&prom_addr, "ALERTS{alertname=\"CustodyIntegrityAlert\"}").is_empty(),
        "no integrity alert before the break"
    );

    // An agent's event whose previous_event_hash is not the hash of the agent's last event:
    // an event lost between agent and Custody. It is quarantined and counted as an integrity
    // problem, and the rule fires.
    let mut forged: Value = {
        let dump = dir.path().join("events.ndjson");
        custody(&[
            "generate",
            "--events",
            "6000",
            "--tenants",
            "6",
            "--seed",
            "21",
            "--out",
            dump.to_str().unwrap(),
        ]);
        let text = std::fs::read_to_string(&dump).unwrap();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("\"previous_event_hash\""))
            .expect("an event with an emitter chain");
        serde_json::from_str(line).unwrap()
    };
    forged["event_id"] = Value::from("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    forged["previous_event_hash"] = Value::from("ab".repeat(32));
    let tenant = forged["tenant_id"].as_str().unwrap().to_string();
    let producer: BaseProducer = kafka_client_config(&broker.addr).create().unwrap();
    let payload = forged.to_string();
    producer
        .send(
            BaseRecord::to("agent-events")
                .key(&tenant)
                .payload(&payload),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    // Alertmanager holds Prometheus's integrity alert and custody's drift alerts.
    let alerts = eventually(
        Duration::from_secs(120),
        "both kinds of alert in Alertmanager",
        || {
            let (_, alerts) = get_json(&am_addr, "/api/v2/alerts", "");
            let alerts = alerts.as_array().cloned()?;
            let names: BTreeSet<&str> = alerts
                .iter()
                .filter_map(|a| a["labels"]["alertname"].as_str())
                .collect();
            (names.contains("CustodyIntegrityAlert") && names.contains("CustodyAgentDrift"))
                .then_some(alerts)
        },
    );
    let integrity = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "CustodyIntegrityAlert")
        .unwrap();
    assert_eq!(
        integrity["labels"]["kind"], "emitter_chain_break",
        "{integrity}"
    );
    assert_eq!(integrity["labels"]["severity"], "critical");
    assert_eq!(
        integrity["labels"]["deployment"], "custody",
        "Prometheus's external label"
    );
    assert_eq!(integrity["status"]["state"], "active");
    let receivers: BTreeSet<&str> = integrity["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(receivers, BTreeSet::from(["integrity"]), "{integrity}");
    let drift: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "CustodyAgentDrift")
        .collect();
    assert!(
        drift
            .iter()
            .all(|a| a["receivers"][0]["name"] == "compliance"
                && a["labels"]["tenant_id"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("tenant-"))),
        "{drift:?}"
    );

    // The metrics the rules and the dashboard read are all served by custody.
    let (_, _, body) = http_get(&custody_addr, "/metrics", METRICS_TOKEN);
    let served_now = String::from_utf8(body).unwrap();
    assert!(
        served_now.contains("custody_hitl_sla_breaches_total"),
        "{served_now}"
    );
    let commit_time: f64 = served_now
        .lines()
        .find_map(|l| l.strip_prefix("custody_sink_last_commit_timestamp_seconds "))
        .expect("last commit time")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - commit_time).abs() < 120.0,
        "last commit at {commit_time}, now {now}"
    );
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(docker_dir().join("prometheus/rules")).unwrap() {
        used.extend(metric_names(
            &std::fs::read_to_string(entry.unwrap().path()).unwrap(),
        ));
    }
    for entry in std::fs::read_dir(docker_dir().join("grafana/dashboards")).unwrap() {
        used.extend(metric_names(
            &std::fs::read_to_string(entry.unwrap().path()).unwrap(),
        ));
    }
    let exposed = metric_names(&(served + &served_now));
    let missing: Vec<&String> = used.iter().filter(|m| !exposed.contains(*m)).collect();
    assert!(missing.is_empty(), "queried but never served: {missing:?}");
    assert!(used.len() >= 12, "{used:?}");
}
