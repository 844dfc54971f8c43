//! Sessions and causal chains are read from the lake by position (the proof store's index
//! bounds a session, and finds an event), not by scanning a tenant's history. Whatever the
//! interleaving of sessions and tenants, however far apart a session's events or an event's
//! parents lie, across epochs and a rebuilt index, what is served is exactly the session and
//! exactly the chain of parents the input holds, each row linked to the one before it.

use std::collections::HashMap;
use std::path::Path;

use custody_tests::{custody, custody_command, free_addr, get_json, serve_warehouse};
use serde_json::json;

const TENANTS: [&str; 2] = ["acme", "beta"];
const SESSIONS: u64 = 12;
const EVENTS: u64 = 3000;

/// One input event: tenant, id, session, parent.
struct Input {
    tenant: usize,
    id: String,
    session: String,
    parent: Option<String>,
}

/// Events of two tenants sharing session names, each session spread over the whole history
/// (picked at random per event); a parent is the session's event before, one several
/// sessions' events back, or (rarely) an id that does not exist.
fn workload() -> Vec<Input> {
    let mut x: u64 = 0x5eed;
    let mut next = move |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut last: HashMap<(usize, String), Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for i in 0..EVENTS {
        let tenant = usize::from(next(4) == 0);
        let session = format!("sess-{}", next(SESSIONS));
        let before = last.entry((tenant, session.clone())).or_default();
        let parent = match (before.len(), next(20)) {
            (0, _) => None,
            (_, 0) => Some(format!("ghost-{i}")),
            (n, 1) if n > 8 => Some(before[n - 1 - next(8) as usize].clone()),
            (n, _) => Some(before[n - 1].clone()),
        };
        let id = format!("{}-{i:05}", TENANTS[tenant]);
        before.push(id.clone());
        out.push(Input {
            tenant,
            id,
            session,
            parent,
        });
    }
    out
}

fn write_ndjson(path: &Path, events: &[Input]) {
    let mut text = String::new();
    for (i, e) in events.iter().enumerate() {
        let line = json!({
            "schema_version": "1.0",
            "event_id": e.id,
            "event_type": "DECISION_POINT",
            "tenant_id": TENANTS[e.tenant],
            "session_id": e.session,
            "agent_id": "agent-1",
            // One session's user is known by an e-mail address (stored tokenized).
            "user_id": if e.session == "sess-0" { "jane.doe@example.com" } else { "user-1" },
            "parent_event_id": e.parent,
            "timestamp": format!("2026-03-08T00:{:02}:{:02}.{:06}Z", i / 6000, (i / 100) % 60, i % 100),
            "payload": {
                "options": ["a", "b"],
                "reasoning_summary": "because",
                "selected_action": "a",
            },
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Every event of `session`, page after page of `limit` (the default if `None`), each page
/// but the last full and naming the next.
fn session_rows(
    addr: &str,
    tenant: &str,
    session: &str,
    limit: Option<usize>,
    what: &str,
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/tenants/{tenant}/sessions/{session}?");
        if let Some(limit) = limit {
            path.push_str(&format!("limit={limit}&"));
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("cursor={c}"));
        }
        let (code, got) = get_json(addr, &path, "");
        assert_eq!(code, 200, "{what}: {path}: {got}");
        let page = got["events"].as_array().unwrap();
        rows.extend(page.iter().cloned());
        match got["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(Some(page.len()), limit.or(Some(200)), "{what}: {path}");
                cursor = Some(c.to_string());
            }
            None => return rows,
        }
    }
}

/// Every session of every tenant is served whole, in chain order and linked; every event's
/// causes are its parents in the input, nearest first, up to the first that does not exist.
fn check(addr: &str, events: &[Input], what: &str) {
    let by_id: HashMap<&str, &Input> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    for (t, tenant) in TENANTS.iter().enumerate() {
        let mut hash_at: HashMap<i64, String> = HashMap::new();
        for s in 0..SESSIONS {
            let session = format!("sess-{s}");
            let want: Vec<&str> = events
                .iter()
                .filter(|e| e.tenant == t && e.session == session)
                .map(|e| e.id.as_str())
                .collect();
            let rows = session_rows(addr, tenant, &session, Some(37), what);
            let ids: Vec<&str> = rows
                .iter()
                .map(|r| r["event_id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, want, "{what}: {tenant} {session}");
            for r in rows {
                hash_at.insert(
                    r["seq"].as_i64().unwrap(),
                    r["hash"].as_str().unwrap().into(),
                );
            }
        }
        // Every position was served once: each row's prev_hash is the hash of the one before.
        for s in 0..SESSIONS {
            for r in &session_rows(addr, tenant, &format!("sess-{s}"), None, what) {
                let seq = r["seq"].as_i64().unwrap();
                let want = if seq == 0 {
                    "0".repeat(64)
                } else {
                    hash_at[&(seq - 1)].clone()
                };
                assert_eq!(r["prev_hash"].as_str(), Some(want.as_str()), "{what}: {r}");
            }
        }
        let (code, _) = get_json(
            addr,
            &format!("/v1/tenants/{tenant}/sessions/sess-none"),
            "",
        );
        assert_eq!(code, 404, "{what}");
    }
    for e in events.iter().step_by(37).chain(events.last()) {
        let mut want = vec![e.id.as_str()];
        let mut at = e;
        while let Some(parent) = &at.parent {
            match by_id.get(parent.as_str()) {
                Some(p) => {
                    want.push(p.id.as_str());
                    at = p;
                }
                None => break,
            }
        }
        let tenant = TENANTS[e.tenant];
        let (code, got) = get_json(
            addr,
            &format!("/v1/tenants/{tenant}/events/{}/causes", e.id),
            "",
        );
        assert_eq!(code, 200, "{what}: {got}");
        let ids: Vec<&str> = got["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, want, "{what}: causes of {}", e.id);
        // Another tenant's id is not an event of this one.
        let other = TENANTS[1 - e.tenant];
        let (code, _) = get_json(
            addr,
            &format!("/v1/tenants/{other}/events/{}/causes", e.id),
            "",
        );
        assert_eq!(code, 404, "{what}");
    }
}

#[test]
fn sessions_and_causes_are_whole_across_history() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let events = workload();
    write_ndjson(&input, &events);
    let wh = dir.path().join("wh");
    let out = custody_command()
        .args(["run", "--input", input.to_str().unwrap()])
        .args(["--warehouse", wh.to_str().unwrap()])
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env("RUST_LOG", "warn")
        // About twenty epochs: sessions span many of them.
        .env("CUSTODY__PIPELINE__BATCH_SIZE", "150")
        .env("CUSTODY_SIGNING_KEY", "07".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    assert!(
        verified.contains(&format!("verified {EVENTS} ")),
        "{verified}"
    );

    let addr = free_addr();
    let server = serve_warehouse(&wh, &addr);
    check(&addr, &events, "index written with the commits");
    // The user filter takes the address as the caller knows it; the id is never served
    // in clear.
    let (code, got) = get_json(
        &addr,
        "/v1/tenants/acme/events?user=jane.doe@example.com&limit=1000",
        "",
    );
    assert_eq!(code, 200, "{got}");
    let served = got["events"].as_array().unwrap();
    let want = events
        .iter()
        .filter(|e| e.tenant == 0 && e.session == "sess-0")
        .count();
    assert_eq!(served.len(), want, "{got}");
    assert!(served.iter().all(|e| {
        e["session_id"] == "sess-0"
            && e["user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("<EMAIL:tok_"))
    }));
    drop(server);

    // The index rebuilt from the lake (a lost store, then one of an older format).
    std::fs::remove_dir_all(wh.join("proofs")).unwrap();
    let server = serve_warehouse(&wh, &addr);
    check(&addr, &events, "index rebuilt from the lake");
    drop(server);
    std::fs::write(
        wh.join("proofs").join("indexed.json"),
        r#"{"epoch":1,"format":2}"#,
    )
    .unwrap();
    let _server = serve_warehouse(&wh, &addr);
    check(&addr, &events, "index of an older format rebuilt");
}
