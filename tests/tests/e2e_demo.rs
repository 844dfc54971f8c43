//! `custody demo` end to end: counts balance, pyiceberg reads every table, chains link, the
//! views agree with the events, and no plaintext PII from the input is anywhere in the lake.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use custody_operators::pii::{PiiKind, scan};
use custody_schemas::decode_event;
use custody_tests::{assert_chains_link, custody, files_under, read_tables, rows, view_rows};

const EVENTS: &str = "20000";
const TENANTS: &str = "30";
const SEED: &str = "7";

#[test]
fn demo_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("wh");
    let wh = warehouse.to_str().unwrap();
    let stdout = custody(&[
        "demo",
        "--events",
        EVENTS,
        "--tenants",
        TENANTS,
        "--seed",
        SEED,
        "--warehouse",
        wh,
    ]);
    assert!(
        stdout.contains("20000 in = 20000 accepted + 0 quarantined (balanced)"),
        "{stdout}"
    );

    let tables = read_tables(&warehouse);
    let events = rows(&tables, "events");
    assert_eq!(events.len(), 20_000);
    assert!(rows(&tables, "quarantine").is_empty());
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 20_000, "duplicate event ids");
    let tenants = assert_chains_link(events);
    assert!(tenants >= 20, "only {tenants} tenants");

    // Chain heads: the last head per tenant is the last event of its chain.
    let mut last_head: BTreeMap<&str, (i64, i64, &str)> = BTreeMap::new();
    for h in rows(&tables, "chain_heads") {
        let t = h["tenant_id"].as_str().unwrap();
        let entry = (
            h["epoch"].as_i64().unwrap(),
            h["seq"].as_i64().unwrap(),
            h["head_hash"].as_str().unwrap(),
        );
        let slot = last_head.entry(t).or_insert(entry);
        if entry > *slot {
            *slot = entry;
        }
    }
    for e in events {
        let t = e["tenant_id"].as_str().unwrap();
        let (_, seq, hash) = last_head[t];
        if e["seq"].as_i64().unwrap() == seq {
            assert_eq!(e["hash"].as_str().unwrap(), hash, "head of {t}");
        }
    }

    // The event-counts changelog consolidates to the counts of the events table.
    let mut from_view: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut net: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    for r in &view_rows(&tables, "event_counts") {
        let key = (
            r["tenant_id"].as_str().unwrap().to_string(),
            r["event_type"].as_str().unwrap().to_string(),
            r["count"].as_i64().unwrap(),
        );
        *net.entry(key).or_default() += r["diff"].as_i64().unwrap();
    }
    for ((t, ty, count), diff) in net {
        assert!(diff == 0 || diff == 1, "changelog does not consolidate");
        if diff == 1 {
            assert!(from_view.insert((t, ty), count).is_none());
        }
    }
    let mut from_events: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in events {
        *from_events
            .entry((
                e["tenant_id"].as_str().unwrap().to_string(),
                e["event_type"].as_str().unwrap().to_string(),
            ))
            .or_default() += 1;
    }
    assert_eq!(from_view, from_events);
    let hitl = view_rows(&tables, "hitl_latency");
    assert!(!hitl.is_empty());
    assert!(
        hitl.iter()
            .any(|r| r["rubber_stamps"].as_i64().unwrap() > 0)
    );
    assert!(hitl.iter().any(|r| r["over_sla"].as_i64().unwrap() > 0));

    // No plaintext email, card or API key from the input anywhere: neither in the decoded
    // table contents nor in the bytes of any file under the warehouse.
    let input = dir.path().join("input.ndjson");
    custody(&[
        "generate",
        "--events",
        EVENTS,
        "--tenants",
        TENANTS,
        "--seed",
        SEED,
        "--out",
        input.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&input).unwrap();
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        let event = decode_event(line.as_bytes()).unwrap();
        let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
        for field in event.event_type.text_fields() {
            let mut strings = Vec::new();
            collect_strings(&payload[*field], &mut strings);
            for s in strings {
                for span in scan(&s) {
                    if matches!(span.kind, PiiKind::Email | PiiKind::Card | PiiKind::Secret) {
                        secrets.insert(s[span.start..span.end].to_string());
                    }
                }
            }
        }
    }
    assert!(
        secrets.len() > 1000,
        "only {} secrets in the input",
        secrets.len()
    );
    let dump = tables.to_string();
    let mut blobs = vec![dump.into_bytes()];
    for file in files_under(&warehouse) {
        blobs.push(std::fs::read(&file).unwrap());
    }
    let finder = Finder::new(&secrets);
    for blob in &blobs {
        if let Some(found) = finder.find_any(blob) {
            panic!("plaintext {found:?} found in the warehouse");
        }
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        serde_json::Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// Exact multi-pattern search: patterns bucketed by their first 8 bytes.
struct Finder<'a> {
    by_prefix: HashMap<u64, Vec<&'a [u8]>>,
}

impl<'a> Finder<'a> {
    fn new(patterns: &'a BTreeSet<String>) -> Self {
        let mut by_prefix: HashMap<u64, Vec<&[u8]>> = HashMap::new();
        for p in patterns {
            let p = p.as_bytes();
            assert!(p.len() >= 8, "pattern too short: {p:?}");
            by_prefix.entry(prefix(p)).or_default().push(p);
        }
        Finder { by_prefix }
    }

    fn find_any(&self, haystack: &[u8]) -> Option<String> {
        for i in 0..haystack.len().saturating_sub(7) {
            if let Some(candidates) = self.by_prefix.get(&prefix(&haystack[i..])) {
                for c in candidates {
                    if haystack[i..].starts_with(c) {
                        return Some(String::from_utf8_lossy(c).into_owned());
                    }
                }
            }
        }
        None
    }
}

fn prefix(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}
