//! Kafka end to end against a real broker (tansu): N events produced, the pipeline consumes the
//! topic, and exactly N rows are found across the events and quarantine tables, once each.

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use custody_operators::sources::kafka::kafka_client_config;
use custody_tests::{Tansu, assert_chains_link, custody, custody_command, read_tables, rows};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[test]
fn kafka_to_iceberg_exactly_n_rows() {
    let broker = Tansu::start();
    let n = 6000;
    let produced = custody(&[
        "generate",
        "--events",
        &n.to_string(),
        "--tenants",
        "12",
        "--seed",
        "11",
        "--kafka",
        &broker.addr,
        "--topic",
        "agent-events",
        "--partitions",
        "3",
    ]);
    assert!(
        produced.contains(&format!("produced {n} of {n} events")),
        "{produced}"
    );

    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    // Short drift windows, so that this small workload raises alerts (its agents move to a
    // new model version for the last quarter): they go to the alerts topic.
    let out = custody_command()
        .args([
            "run",
            "--kafka",
            &broker.addr,
            "--topic",
            "agent-events",
            "--group",
            "e2e",
            "--warehouse",
            wh.to_str().unwrap(),
            "--idle-exit",
            "5s",
        ])
        .env("CUSTODY__DRIFT__WINDOW", "2m")
        .env("CUSTODY__DRIFT__BASELINE_WINDOWS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("{n} in = {n} accepted + 0 quarantined (balanced)")),
        "{stdout}"
    );

    let tables = read_tables(&wh);
    let events = rows(&tables, "events");
    let quarantine = rows(&tables, "quarantine");
    assert_eq!(events.len() + quarantine.len(), n);
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len(), "duplicate event ids");
    assert_eq!(assert_chains_link(events), 12);
    // Every event came from the topic, with its partition and offset.
    assert!(events.iter().all(|e| {
        e["source"]
            .as_str()
            .unwrap()
            .starts_with("kafka:agent-events#")
    }));

    // The drift alerts reached the alerts topic, as JSON with their tenant.
    let consumer: BaseConsumer = kafka_client_config(&broker.addr)
        .set("group.id", "alerts-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["custody-alerts"]).unwrap();
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while alerts.is_empty() && Instant::now() < deadline {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(500)) {
            let v: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
            alerts.push(v);
        }
    }
    assert!(!alerts.is_empty(), "no alert on custody-alerts");
    assert!(alerts.iter().all(|a| a["status"] == "firing"
        && a["tenant_id"].as_str().unwrap().starts_with("tenant-")
        && a["alert"]["kind"].is_string()));
}
