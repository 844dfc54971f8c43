//! Kafka end to end against a real broker (tansu): N events produced, the pipeline consumes the
//! topic, and exactly N rows are found across the events and quarantine tables, once each.

use std::collections::BTreeSet;

use custody_tests::{Tansu, assert_chains_link, custody, read_tables, rows};

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
    let stdout = custody(&[
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
    ]);
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
}
