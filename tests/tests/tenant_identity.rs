//! Tenant identity is verified, not self-reported: with `identity.mode = "signed-header"`,
//! every event sent by another tenant's producer (a spoof) or by no registered producer lands
//! in quarantine, never in any tenant's chain; quarantine rows name the
//! authenticated tenant; and every quarantined raw record is also published to the
//! dead-letter topic with its reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use custody_operators::sources::kafka::kafka_client_config;
use custody_tests::{CHAIN_COLUMNS, Tansu, assert_chains_link, custody, read_columns, rows};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;

const TENANTS: usize = 8;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut toml = String::from(
        "[identity]\nmode = \"signed-header\"\n\n[kafka]\ndead_letter_topic = \"custody-dlq\"\n",
    );
    for t in 0..TENANTS {
        toml.push_str(&format!(
            "\n[identity.producers.gateway-{t}]\ntenant = \"tenant-{t:04}\"\nkey_hex = \"{}\"\n",
            hex::encode(format!("producer key {t}"))
        ));
    }
    let path = dir.join("custody.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `(reason kind, tenant header)` of every message on the dead-letter topic.
fn dead_letters(broker: &str, expected: usize) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = kafka_client_config(broker)
        .set("group.id", "dlq-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["custody-dlq"]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expected && Instant::now() < deadline {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let header = |name: &str| {
            msg.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        out.push((
            header("custody-reason-kind").unwrap(),
            header("custody-tenant"),
        ));
    }
    out
}

#[test]
fn spoofed_tenants_are_quarantined_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start();
    let cfg = config(dir.path());
    let cfg = cfg.to_str().unwrap();
    let (n, every) = (4000usize, 40usize);
    let produced = custody(&[
        "--config",
        cfg,
        "generate",
        "--events",
        &n.to_string(),
        "--tenants",
        &TENANTS.to_string(),
        "--kafka",
        &broker.addr,
        "--topic",
        "signed",
        "--spoof-every",
        &every.to_string(),
    ]);
    let spoofed = n / every;
    assert!(
        produced.contains(&format!(
            "produced {0} of {0} events to signed in",
            n + spoofed
        )) && produced.contains(&format!("{spoofed} of them spoofed")),
        "{produced}"
    );
    // An unsigned and a forged record from outside the registry, on the same topic.
    let stranger = custody(&[
        "generate",
        "--events",
        "2",
        "--tenants",
        "1",
        "--seed",
        "9",
        "--kafka",
        &broker.addr,
        "--topic",
        "signed",
    ]);
    assert!(stranger.contains("produced 2 of 2"), "{stranger}");

    let wh = dir.path().join("wh");
    let out = custody(&[
        "--config",
        cfg,
        "run",
        "--kafka",
        &broker.addr,
        "--topic",
        "signed",
        "--warehouse",
        wh.to_str().unwrap(),
        "--idle-exit",
        "5s",
    ]);
    let total = n + spoofed + 2;
    let rejected = spoofed + 2;
    assert!(
        out.contains(&format!(
            "{total} in = {n} accepted + {rejected} quarantined (balanced)"
        )),
        "{out}"
    );

    let tables = read_columns(
        &wh,
        &[CHAIN_COLUMNS, "quarantine:reason_kind,tenant_id,reason"],
    );
    let events = rows(&tables, "events");
    assert_eq!(events.len(), n);
    assert_chains_link(events);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for q in rows(&tables, "quarantine") {
        let kind = q["reason_kind"].as_str().unwrap();
        *kinds.entry(kind).or_default() += 1;
        match kind {
            // Attributed to the producer's own tenant, with both tenants in the reason.
            "tenant_mismatch" => {
                let tenant = q["tenant_id"].as_str().unwrap();
                let reason = q["reason"].as_str().unwrap();
                assert!(reason.contains(&format!("is not {tenant:?}")), "{reason}");
            }
            // Unauthenticated input is attributed to no tenant.
            _ => assert!(q["tenant_id"].is_null(), "{q}"),
        }
    }
    assert_eq!(
        kinds,
        BTreeMap::from([("tenant_mismatch", spoofed), ("unauthenticated", 2)])
    );

    let letters = dead_letters(&broker.addr, rejected);
    assert_eq!(letters.len(), rejected, "dead letters");
    let mismatches = letters
        .iter()
        .filter(|(kind, tenant)| kind == "tenant_mismatch" && tenant.is_some())
        .count();
    assert_eq!(mismatches, spoofed);
}
