//! The tenant API over a real warehouse: events pages through a tenant's whole chain with
//! cursors, filters narrow it, and no token, cursor, filter or path reaches another tenant.

use std::time::{Duration, Instant};

use custody_tests::{free_addr, get_json, post_json, read_columns, rows, serve_demo};
use serde_json::Value;
use sha2::{Digest, Sha256};

const ACCESS: &str = "AUDIT_LOG_ACCESSED";

fn get(addr: &str, path: &str, token: &str) -> (u16, Value) {
    get_json(addr, path, token)
}

#[test]
fn events_page_through_a_tenant_and_never_across() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut cfg = String::from("[api.tokens.a]\n");
    cfg.push_str(&format!(
        "sha256 = \"{}\"\ntenant = \"tenant-0000\"\nrole = \"dashboard\"\n",
        hex::encode(Sha256::digest("token-a"))
    ));
    cfg.push_str(&format!(
        "[api.tokens.b]\nsha256 = \"{}\"\ntenant = \"tenant-0001\"\nrole = \"regulator\"\n",
        hex::encode(Sha256::digest("token-b"))
    ));
    let cfg_path = dir.path().join("custody.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let wh = dir.path().join("wh");
    let server = serve_demo(&cfg_path, &wh, &addr, 3000, 3);

    let expected: Vec<i64> = {
        let tables = read_columns(&wh, &["events:tenant_id,seq,event_type"]);
        let mut seqs: Vec<i64> = rows(&tables, "events")
            .iter()
            .filter(|e| e["tenant_id"] == "tenant-0000" && e["event_type"] != ACCESS)
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        seqs.sort();
        seqs
    };
    assert!(expected.len() > 500);

    // Page through tenant-0000 with 137 per page.
    let mut seen = Vec::new();
    let mut hash_at: std::collections::HashMap<i64, String> = Default::default();
    let mut cursor: Option<String> = None;
    let mut first_cursor = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants/tenant-0000/events?limit=137&cursor={c}"),
            None => "/v1/tenants/tenant-0000/events?limit=137".to_string(),
        };
        let (code, page) = get(&addr, &path, "token-a");
        assert_eq!(code, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["tenant_id"], "tenant-0000");
            hash_at.insert(
                e["seq"].as_i64().unwrap(),
                e["hash"].as_str().unwrap().to_string(),
            );
            // This test's own requests are recorded in the log as it pages through it.
            if e["event_type"] != ACCESS {
                seen.push(e["seq"].as_i64().unwrap());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                first_cursor.get_or_insert(c.to_string());
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(seen, expected, "every event once, in chain order");
    // Every row served links to the hash of the row before it in the chain, however it was
    // selected (a filtered page, a session, a causal chain read its neighbours separately).
    let linked = |rows: &[Value], what: &str| {
        for e in rows {
            let seq = e["seq"].as_i64().unwrap();
            let want = match seq {
                0 => "0".repeat(64),
                s => hash_at[&(s - 1)].clone(),
            };
            assert_eq!(e["prev_hash"].as_str(), Some(want.as_str()), "{what}: {e}");
        }
    };

    // Filters.
    let (code, page) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?type=TOOL_CALLED&limit=1000",
        "token-a",
    );
    assert_eq!(code, 200);
    let tools = page["events"].as_array().unwrap();
    assert!(!tools.is_empty() && tools.iter().all(|e| e["event_type"] == "TOOL_CALLED"));
    linked(tools, "a filtered page");
    // A short filtered page (read as one small window, filtered by the server) and the page
    // after it agree with the long one, links included.
    let (code, short) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?type=TOOL_CALLED&limit=7",
        "token-a",
    );
    assert_eq!(code, 200, "{short}");
    let (code, next) = get(
        &addr,
        &format!(
            "/v1/tenants/tenant-0000/events?type=TOOL_CALLED&limit=7&cursor={}",
            short["next_cursor"].as_str().unwrap()
        ),
        "token-a",
    );
    assert_eq!(code, 200, "{next}");
    let pages: Vec<Value> = [&short, &next]
        .iter()
        .flat_map(|p| p["events"].as_array().unwrap().clone())
        .collect();
    assert_eq!(pages.as_slice(), &tools[..14]);
    linked(&pages, "short filtered pages");
    // A type that does not exist (an injection attempt, or lower case) is an error, not an
    // empty page.
    for ty in ["TOOL_CALLED%27%20OR%20%271%27=%271", "tool_called"] {
        let (code, page) = get(
            &addr,
            &format!("/v1/tenants/tenant-0000/events?type={ty}"),
            "token-a",
        );
        assert_eq!(code, 400, "{page}");
    }
    // Model version attribution: the decisions of one model version, and only those.
    let (code, decisions) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?type=MODEL_DECISION&limit=1000",
        "token-a",
    );
    assert_eq!(code, 200);
    let version_of = |e: &Value| -> String {
        let p: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
        p["model_version"].as_str().unwrap().to_string()
    };
    let decisions = decisions["events"].as_array().unwrap().clone();
    let version = version_of(&decisions[0]);
    let (code, page) = get(
        &addr,
        &format!("/v1/tenants/tenant-0000/events?model_version={version}&limit=1000"),
        "token-a",
    );
    assert_eq!(code, 200, "{page}");
    let by_version: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["event_type"], "MODEL_DECISION");
            assert_eq!(version_of(e), version);
            e["seq"].as_i64().unwrap()
        })
        .collect();
    let expected_by_version: Vec<i64> = decisions
        .iter()
        .filter(|e| version_of(e) == version)
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(!by_version.is_empty());
    assert_eq!(by_version, expected_by_version);
    // A filter that does not exist is an error, not ignored.
    let (code, page) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?model=gpt&limit=1",
        "token-a",
    );
    assert_eq!(code, 400, "{page}");
    assert!(page["error"].as_str().unwrap().contains("model"), "{page}");
    let (_, page) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?from=2099-01-01T00:00:00Z",
        "token-a",
    );
    assert_eq!(page["events"].as_array().map(Vec::len), Some(0), "{page}");

    // Across tenants: foreign path 404 (like a missing tenant), foreign cursor 400.
    let (code, _) = get(&addr, "/v1/tenants/tenant-0001/events", "token-a");
    assert_eq!(code, 404);
    let (missing, _) = get(&addr, "/v1/tenants/tenant-9999/events", "token-a");
    assert_eq!(missing, 404);
    let c = first_cursor.unwrap();
    let (code, body) = get(
        &addr,
        &format!("/v1/tenants/tenant-0001/events?cursor={c}"),
        "token-b",
    );
    assert_eq!(code, 400, "another tenant's cursor: {body}");
    let (code, page) = get(
        &addr,
        "/v1/tenants/tenant-0001/events?limit=1000",
        "token-b",
    );
    assert_eq!(code, 200);
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant_id"] == "tenant-0001")
    );
    let (code, _) = get(&addr, "/v1/tenants/tenant-0000/events", "nope");
    assert_eq!(code, 401);

    // A session, with its narrative, and a causal chain; neither crosses tenants.
    let (_, page) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?limit=1000",
        "token-a",
    );
    let events = page["events"].as_array().unwrap();
    let with_parent = events
        .iter()
        .find(|e| e["parent_event_id"].is_string())
        .expect("an event with a parent");
    let session_id = with_parent["session_id"].as_str().unwrap();
    let (code, session) = get(
        &addr,
        &format!("/v1/tenants/tenant-0000/sessions/{session_id}"),
        "token-a",
    );
    assert_eq!(code, 200, "{session}");
    let session_events = session["events"].as_array().unwrap();
    assert!(!session_events.is_empty());
    assert!(
        session_events
            .iter()
            .all(|e| e["tenant_id"] == "tenant-0000" && e["session_id"] == session_id)
    );
    assert_eq!(
        session["narrative"].as_array().unwrap().len(),
        session_events.len()
    );
    linked(session_events, "a session");
    let id = with_parent["event_id"].as_str().unwrap();
    let (code, chain) = get(
        &addr,
        &format!("/v1/tenants/tenant-0000/events/{id}/causes"),
        "token-a",
    );
    assert_eq!(code, 200, "{chain}");
    let causes = chain["causes"].as_array().unwrap();
    assert!(causes.len() >= 2, "{chain}");
    for pair in causes.windows(2) {
        assert_eq!(pair[0]["parent_event_id"], pair[1]["event_id"]);
    }
    assert!(causes.last().unwrap()["parent_event_id"].is_null());
    linked(causes, "a causal chain");
    // Links come from the proof store's chain hashes, checked against each row: damaged ones
    // are not served, the lake answers instead.
    let chains = wh.join("proofs").join("chains");
    let mut damaged = 0;
    for file in std::fs::read_dir(&chains).unwrap() {
        let path = file.unwrap().path();
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![0x5a; len]).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0, "no chain hashes in {}", chains.display());
    let (code, again) = get(
        &addr,
        "/v1/tenants/tenant-0000/events?type=TOOL_CALLED&limit=1000",
        "token-a",
    );
    assert_eq!(code, 200, "{again}");
    let again = again["events"].as_array().unwrap();
    assert_eq!(again, tools);
    linked(again, "a filtered page over damaged chain hashes");
    let (code, chain) = get(
        &addr,
        &format!("/v1/tenants/tenant-0000/events/{id}/causes"),
        "token-a",
    );
    assert_eq!(code, 200, "{chain}");
    assert_eq!(chain["causes"].as_array().unwrap(), causes);
    linked(causes, "a causal chain over damaged chain hashes");
    let (code, _) = get(
        &addr,
        &format!("/v1/tenants/tenant-0000/sessions/{session_id}"),
        "token-b",
    );
    assert_eq!(code, 404);
    let (code, _) = get(
        &addr,
        &format!("/v1/tenants/tenant-0001/events/{id}/causes"),
        "token-b",
    );
    assert_eq!(code, 404, "tenant-0000's event id under tenant-0001");
    let (code, other) = get(
        &addr,
        &format!("/v1/tenants/tenant-0001/sessions/{session_id}"),
        "token-b",
    );
    assert!(
        code == 404
            || other["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["tenant_id"] == "tenant-0001"),
        "{other}"
    );

    // Every request above is in the audit log of the tenant it concerns, chained like any
    // event: token-a's attempt on tenant-0001 in tenant-0000's own log, never in tenant-0001's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, page) = get(
            &addr,
            "/v1/tenants/tenant-0000/events?type=AUDIT_LOG_ACCESSED&limit=1000",
            "token-a",
        );
        let accesses = page["events"].as_array().cloned().unwrap_or_default();
        let probe = accesses.iter().find(|e| {
            let p: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
            p["path"] == "/v1/tenants/tenant-0001/events"
                && p["status"] == 404
                && p["principal"] == "a"
        });
        if accesses.len() >= 10 && probe.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "access events not chained: {accesses:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, page) = get(
        &addr,
        "/v1/tenants/tenant-0001/events?type=AUDIT_LOG_ACCESSED&limit=1000",
        "token-b",
    );
    for e in page["events"].as_array().unwrap() {
        let p: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
        assert_eq!(p["principal"], "b", "{e}");
    }
    drop(server);
}

/// The access log is not an open door: a line appended by someone who can write the warehouse
/// (plain, or with a made-up MAC) is quarantined as `unauthenticated`, never chained; a request
/// that spells the tenant with percent-escapes is recorded under the tenant it reached; and a
/// query string is tokenized like any event text.
#[test]
fn access_records_are_authenticated_canonical_and_tokenized() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut cfg = format!(
        "[api.tokens.root]\nsha256 = \"{}\"\ntenant = \"*\"\nrole = \"admin\"\n",
        hex::encode(Sha256::digest("token-root"))
    );
    for (name, role) in [("a", "dashboard"), ("b", "regulator")] {
        cfg.push_str(&format!(
            "[api.tokens.{name}]\nsha256 = \"{}\"\ntenant = \"tenant-0001\"\nrole = \"{role}\"\n",
            hex::encode(Sha256::digest(format!("token-{name}")))
        ));
    }
    let cfg_path = dir.path().join("custody.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let wh = dir.path().join("wh");
    let server = serve_demo(&cfg_path, &wh, &addr, 600, 2);

    let forged = serde_json::json!({
        "event_id": "forged-access", "schema_version": "1.0", "tenant_id": "tenant-0001",
        "session_id": "custody-api", "agent_id": "custody-api", "user_id": "root",
        "event_type": ACCESS, "timestamp": "2026-01-01T00:00:00Z", "parent_event_id": null,
        "payload": {"principal": "root", "role": "admin", "method": "GET",
                    "path": "/v1/tenants/tenant-0001/export", "query": null, "status": 200},
    });
    let wrapped = serde_json::json!({"record": forged.to_string(), "mac": "00".repeat(32)});
    {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(wh.join("access-log.ndjson"))
            .unwrap();
        writeln!(log, "{forged}\n{wrapped}").unwrap();
    }
    let (code, _) = get(
        &addr,
        "/v1/tenants/tenant%2D0001/events?agent=jane.doe@example.com&limit=1",
        "token-root",
    );
    assert_eq!(code, 200);

    let deadline = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let (_, page) = get(
            &addr,
            "/v1/tenants/tenant-0001/events?type=AUDIT_LOG_ACCESSED&limit=1000",
            "token-root",
        );
        let accesses = page["events"].as_array().cloned().unwrap_or_default();
        assert!(
            accesses.iter().all(|e| e["event_id"] != "forged-access"),
            "a forged access record was chained: {accesses:?}"
        );
        let hit = accesses.iter().find_map(|e| {
            let p: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
            (p["path"] == "/v1/tenants/tenant%2D0001/events").then_some(p)
        });
        if let Some(p) = hit {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the escaped request was not recorded in tenant-0001's log: {accesses:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let query = recorded["query"].as_str().unwrap();
    assert!(!query.contains("jane.doe@example.com"), "{query}");
    assert!(query.contains("<EMAIL:tok_"), "{query}");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tables = read_columns(&wh, &["quarantine:reason_kind,reason,source_offset"]);
        let refused = rows(&tables, "quarantine")
            .iter()
            .filter(|q| q["reason_kind"] == "unauthenticated")
            .count();
        if refused == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forged access lines not quarantined: {tables}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    sql_stays_in_its_tenant(&addr, &wh);
    drop(server);
}

/// The SQL endpoint: whatever the query (joins, subqueries, unions, casing, comments,
/// catalogs, table functions, statements), no row of another tenant, and every query is
/// recorded in the tenant's log.
fn sql_stays_in_its_tenant(addr: &str, wh: &std::path::Path) {
    let sql = |token: &str, text: &str| {
        post_json(
            addr,
            "/v1/tenants/tenant-0001/sql",
            token,
            &serde_json::json!({"sql": text, "max_rows": 10000}),
        )
    };
    // Only regulators and admins.
    let (code, _) = sql("token-a", "SELECT 1");
    assert!(
        code == 403 || code == 404,
        "a dashboard token ran SQL: {code}"
    );
    let (code, answer) = sql(
        "token-b",
        "SELECT tenant_id, count(*) AS n FROM events GROUP BY tenant_id",
    );
    assert_eq!(code, 200, "{answer}");
    let groups = answer["rows"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{answer}");
    assert_eq!(groups[0]["tenant_id"], "tenant-0001");
    let own = {
        let tables = read_columns(wh, &["events:tenant_id,seq"]);
        rows(&tables, "events")
            .iter()
            .filter(|e| e["tenant_id"] == "tenant-0001")
            .count() as i64
    };
    assert!(groups[0]["n"].as_i64().unwrap() >= own.min(1), "{answer}");

    // Data files sit in partition directories (tenant_bucket=…/event_day=…).
    let data_file = {
        let mut stack = vec![wh.join("data/custody/events/data")];
        let mut found = None;
        while let Some(dir) = stack.pop() {
            for p in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    found = Some(p);
                }
            }
        }
        found.unwrap()
    };
    let data_file = data_file.display();
    let scoped = [
        "SELECT * FROM events".to_string(),
        "SELECT * FROM events WHERE tenant_id = 'tenant-0000'".into(),
        "SELECT * FROM events WHERE tenant_id <> 'tenant-0001' OR 1 = 1".into(),
        "SELECT e1.tenant_id, e2.tenant_id AS t2 FROM events e1 JOIN events e2 ON e1.seq = e2.seq"
            .into(),
        "SELECT e1.tenant_id FROM events e1 CROSS JOIN checkpoints c LIMIT 500".into(),
        "SELECT * FROM (SELECT * FROM events) sub WHERE tenant_id IN \
         (SELECT tenant_id FROM checkpoints)"
            .into(),
        "SELECT tenant_id FROM events UNION ALL SELECT tenant_id FROM view_changes \
         UNION ALL SELECT tenant_id FROM quarantine UNION ALL SELECT tenant_id FROM chain_heads \
         UNION ALL SELECT tenant_id FROM checkpoints"
            .into(),
        "SELECT * FROM custody.custody.EVENTS".into(),
        "SeLeCt * FrOm CUSTODY.Events".into(),
        "SELECT * FROM events /* WHERE tenant_id = 'tenant-0000' */ -- OR 1=1".into(),
        "WITH t AS (SELECT * FROM events) SELECT * FROM t WHERE t.tenant_id LIKE '%'".into(),
        "SELECT * FROM view_changes WHERE tenant_id = 'tenant-0000' OR tenant_id IS NULL".into(),
        "SELECT * FROM quarantine".into(),
        "SELECT * FROM generate_series(1, 3)".into(),
    ];
    for text in &scoped {
        let (code, answer) = sql("token-b", text);
        assert_eq!(code, 200, "{text}: {answer}");
        for row in answer["rows"].as_array().unwrap() {
            for (column, value) in row.as_object().unwrap() {
                if column == "tenant_id" || column == "t2" {
                    assert_eq!(value, "tenant-0001", "{text}: {row}");
                }
            }
        }
    }
    let refused = [
        "SELECT * FROM information_schema.tables".to_string(),
        "SHOW TABLES".into(),
        "SELECT * FROM datafusion.public.events".into(),
        "SELECT * FROM \"Events\"".into(),
        "SELECT * FROM epochs".into(),
        "SELECT * FROM vault".into(),
        "SELECT * FROM emitter_heads".into(),
        format!("SELECT * FROM read_parquet('{data_file}')"),
        format!("SELECT * FROM '{data_file}'"),
        "CREATE TABLE x AS SELECT 1".into(),
        "CREATE VIEW v AS SELECT * FROM events".into(),
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/'".into(),
        "COPY (SELECT * FROM events) TO '/tmp/custody-leak.csv'".into(),
        "INSERT INTO events SELECT * FROM events".into(),
        "DELETE FROM events".into(),
        "DROP TABLE events".into(),
        "SET datafusion.catalog.information_schema = true".into(),
        "SELECT * FROM events; SELECT * FROM events".into(),
        "this is not sql".into(),
    ];
    for text in &refused {
        let (code, answer) = sql("token-b", text);
        assert_eq!(code, 400, "{text}: {answer}");
        assert!(answer["error"].is_string(), "{text}: {answer}");
    }
    assert!(!std::path::Path::new("/tmp/custody-leak.csv").exists());
    // EXPLAIN shows the plan: the only tenant in it is the caller's.
    let (code, answer) = sql("token-b", "EXPLAIN SELECT * FROM events");
    assert_eq!(code, 200, "{answer}");
    let plan = answer.to_string();
    assert!(plan.contains("tenant-0001"), "{plan}");
    assert!(!plan.contains("tenant-0000"), "{plan}");
    // An admin of every tenant is still scoped to the tenant of the path.
    let (code, answer) = post_json(
        addr,
        "/v1/tenants/tenant-0000/sql",
        "token-root",
        &serde_json::json!({"sql": "SELECT DISTINCT tenant_id FROM events"}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["rows"],
        serde_json::json!([{"tenant_id": "tenant-0000"}])
    );
    // Row limits.
    let (code, answer) = post_json(
        addr,
        "/v1/tenants/tenant-0001/sql",
        "token-b",
        &serde_json::json!({"sql": "SELECT seq FROM events", "max_rows": 5}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["rows"].as_array().unwrap().len(), 5);
    assert_eq!(answer["truncated"], true);

    // Every query is in the tenant's log, with its text.
    let marker = "SELECT count(*) AS recorded FROM events -- recorded";
    let (code, _) = sql("token-b", marker);
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, page) = get(
            addr,
            "/v1/tenants/tenant-0001/events?type=AUDIT_LOG_ACCESSED&limit=1000",
            "token-b",
        );
        let found = page["events"].as_array().unwrap().iter().any(|e| {
            let p: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
            p["sql"] == marker && p["path"] == "/v1/tenants/tenant-0001/sql"
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "the SQL query was not recorded");
        std::thread::sleep(Duration::from_millis(500));
    }
}
