//! The live views, reports, alerts, export and dashboard of a running process, end to end:
//! the views answered over HTTP equal a recomputation from the generated input, alerts reach
//! an Alertmanager-compatible receiver, every report row cites a signed checkpoint, exports
//! verify, and the dashboard renders the tenant's sessions in headless Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use custody_operators::checkpoint::parse_public_key;
use custody_operators::export::{ExportFormat, ExportManifest};
use custody_schemas::time::parse_rfc3339;
use custody_tests::{free_addr, generate_ndjson, get_json, http_get, serve_demo};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TENANT: &str = "tenant-0000";

/// A fake Alertmanager: records the JSON bodies POSTed to `/api/v2/alerts`.
fn alertmanager() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if request.is_empty() {
                    request = line.clone();
                }
                if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if request.starts_with("POST /api/v2/alerts")
                && let Ok(v) = serde_json::from_slice(&body)
            {
                sink.lock().unwrap().push(v);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}

/// What the views should hold for TENANT, recomputed from the input.
struct Expected {
    sessions: BTreeMap<String, &'static str>,
    violations: BTreeSet<String>,
    breaches: BTreeSet<String>,
    events: usize,
}

fn recompute(input: &std::path::Path) -> Expected {
    let events: Vec<Value> = std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["tenant_id"] == TENANT)
        .collect();
    let mut sessions = BTreeMap::new();
    let mut decided = BTreeSet::new();
    for e in &events {
        let s = e["session_id"].as_str().unwrap().to_string();
        let status = sessions.entry(s.clone()).or_insert("open");
        match e["event_type"].as_str().unwrap() {
            "TASK_FAILED" => *status = "failed",
            "TASK_COMPLETED" if *status != "failed" => *status = "completed",
            "HUMAN_REVIEW_DECISION" => {
                decided.insert(
                    e["payload"]["escalation_event_id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    let violations = oversight_oracle(&events);
    // Generated events are months old: every undecided escalation is past its SLA.
    let breaches = events
        .iter()
        .filter(|e| e["event_type"] == "HUMAN_ESCALATION_TRIGGERED")
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .filter(|id| !decided.contains(id))
        .collect();
    Expected {
        sessions,
        violations,
        breaches,
        events: events.len(),
    }
}

/// The tool calls and decisions the policy rule (`payments.*` above 500 needs an approval of
/// that action) and the oversight rules flag, recomputed from the raw input independently
/// of the views: an approval covers a call of the same tool with the same string and number
/// members, numbers at most the approved ones; a rejected action (same tool, its string
/// members) is flagged when made after the rejection unless approved again in between; an
/// escalation decided both ways is flagged on each later decision; an event before its
/// parent and a decision before its escalation was presented are flagged.
fn oversight_oracle(events: &[Value]) -> BTreeSet<String> {
    type Action = (String, BTreeMap<String, Value>);
    let ts = |e: &Value| parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
    let action = |v: &Value| -> Option<Action> {
        let tool = v.get("tool_name")?.as_str()?.to_string();
        let input = v
            .get("input")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| v.is_string() || v.is_number())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Some((tool, input))
    };
    let covers = |a: &Action, c: &Action| {
        a.0 == c.0
            && a.1.len() == c.1.len()
            && c.1.iter().all(|(k, v)| match (a.1.get(k), v.as_f64()) {
                (Some(approved), Some(n)) if v.is_number() => {
                    approved.as_f64().is_some_and(|m| n <= m)
                }
                (Some(approved), _) => approved == v,
                (None, _) => false,
            })
    };
    let same_action = |a: &Action, c: &Action| {
        a.0 == c.0
            && a.1
                .iter()
                .filter(|(_, v)| v.is_string())
                .all(|(k, v)| c.1.get(k) == Some(v))
    };
    let mut out = BTreeSet::new();
    let mut by_session: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in events {
        by_session
            .entry(e["session_id"].as_str().unwrap())
            .or_default()
            .push(e);
    }
    for session in by_session.values() {
        let id = |e: &Value| e["event_id"].as_str().unwrap().to_string();
        let mut escalations: BTreeMap<String, (i64, Option<Action>)> = BTreeMap::new();
        let mut decisions: Vec<(i64, String, String, String, Option<Action>)> = Vec::new();
        let mut calls: Vec<(i64, String, Action)> = Vec::new();
        let times: BTreeMap<String, i64> = session.iter().map(|e| (id(e), ts(e))).collect();
        for e in session {
            let p = &e["payload"];
            match e["event_type"].as_str().unwrap() {
                "HUMAN_ESCALATION_TRIGGERED" => {
                    let at = parse_rfc3339(p["presented_at"].as_str().unwrap()).unwrap();
                    escalations.insert(id(e), (at, action(&p["proposed_action"])));
                }
                "HUMAN_REVIEW_DECISION" => decisions.push((
                    parse_rfc3339(p["decided_at"].as_str().unwrap()).unwrap(),
                    id(e),
                    p["escalation_event_id"].as_str().unwrap().to_string(),
                    p["decision"].as_str().unwrap().to_string(),
                    p.get("modification").and_then(action),
                )),
                "TOOL_CALLED" => calls.push((ts(e), id(e), action(p).unwrap())),
                _ => {}
            }
            if let Some(parent) = e["parent_event_id"].as_str()
                && times.get(parent).is_some_and(|pt| ts(e) < *pt)
            {
                out.insert(id(e));
            }
        }
        decisions.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let approves = |d: &str| matches!(d, "approve" | "modify");
        let decided_action = |d: &(i64, String, String, String, Option<Action>)| match d.3.as_str()
        {
            "modify" => d.4.clone(),
            _ => escalations.get(&d.2).and_then(|e| e.1.clone()),
        };
        let approved = |c: &Action, after: i64, at: i64| {
            decisions.iter().any(|d| {
                approves(&d.3)
                    && d.0 >= after
                    && d.0 <= at
                    && decided_action(d).is_some_and(|a| covers(&a, c))
            })
        };
        for (at, cid, c) in &calls {
            let amount = c.1.get("amount").and_then(Value::as_f64);
            if c.0.starts_with("payments.")
                && amount.is_none_or(|a| a > 500.0)
                && !approved(c, i64::MIN, *at)
            {
                out.insert(cid.clone());
            }
        }
        for d in decisions.iter().filter(|d| d.3 == "reject") {
            let Some(rejected) = decided_action(d) else {
                continue;
            };
            for (at, cid, c) in &calls {
                if *at >= d.0 && same_action(&rejected, c) && !approved(c, d.0, *at) {
                    out.insert(cid.clone());
                }
            }
        }
        let mut first: BTreeMap<&str, bool> = BTreeMap::new();
        for d in &decisions {
            if d.3 == "escalate" {
                continue;
            }
            match first.get(d.2.as_str()) {
                None => {
                    first.insert(&d.2, approves(&d.3));
                }
                Some(f) if *f != approves(&d.3) => {
                    out.insert(d.1.clone());
                }
                Some(_) => {}
            }
            if escalations.get(&d.2).is_some_and(|e| d.0 < e.0) {
                out.insert(d.1.clone());
            }
        }
    }
    out
}

fn rows(addr: &str, view: &str, token: &str) -> Vec<Value> {
    let (code, body) = get_json(
        addr,
        &format!("/v1/tenants/{TENANT}/views/{view}?limit=10000"),
        token,
    );
    assert_eq!(code, 200, "{view}: {body}");
    body["rows"].as_array().unwrap().clone()
}

#[test]
fn views_reports_alerts_export_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let (am_url, received) = alertmanager();
    let addr = free_addr();
    let token = |name: &str, role: &str| {
        format!(
            "[api.tokens.{name}]\nsha256 = \"{}\"\ntenant = \"{TENANT}\"\nrole = \"{role}\"\n",
            hex::encode(Sha256::digest(format!("secret-{name}")))
        )
    };
    let cfg = format!(
        "{}{}[alerts]\nalertmanager_url = \"{am_url}\"\nkafka_topic = \"\"\nresend = \"1h\"\n\
         [drift]\nwindow = \"10m\"\nbaseline_windows = 3\nmin_samples = 5\n\
         rate_increase_permille = 150\nvolume_factor = 3.0\nmin_volume = 50\n\
         [pipeline]\nbatch_size = 1500\n[views]\nretire_grace_epochs = 1\n",
        token("reg", "regulator"),
        token("dash", "dashboard"),
    );
    let cfg_path = dir.path().join("custody.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let (events, tenants) = (20_000u64, 3usize);
    let input = dir.path().join("input.ndjson");
    generate_ndjson(&input, events, tenants);
    let wh = dir.path().join("wh");
    let _server = serve_demo(&cfg_path, &wh, &addr, events, tenants);
    let want = recompute(&input);
    assert!(want.events > 5_000 && !want.violations.is_empty() && !want.breaches.is_empty());
    let ids = |view: &str, field: &str| -> BTreeSet<String> {
        rows(&addr, view, "secret-dash")
            .iter()
            .map(|r| r[field].as_str().unwrap().to_string())
            .collect()
    };

    // The serving run rebuilds the views from the lake: readers never see a partial rebuild
    // (a snapshot's pending escalations before the epochs that decided them).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < until {
        assert_eq!(ids("sla-breaches", "escalation_event_id"), want.breaches);
    }

    // Views equal the recomputation.
    let sessions: BTreeMap<String, String> = rows(&addr, "sessions", "secret-dash")
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want_sessions: BTreeMap<String, String> = want
        .sessions
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    assert_eq!(sessions, want_sessions);
    // Most sessions ended epochs ago: their rows are served from the warehouse, not memory.
    let retired = std::fs::read_dir(wh.join("served"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("ndjson".as_ref()))
        .count();
    assert!(retired >= 1, "no retired rows in {}", wh.display());
    assert_eq!(ids("policy-violations", "event_id"), want.violations);
    assert_eq!(ids("sla-breaches", "escalation_event_id"), want.breaches);
    let chains = rows(&addr, "causal-chains", "secret-dash");
    // Each round of a generated session is model decision → decision point → (data access,
    // policy, escalation, review) → tool call: one model decision per tool call.
    assert!(
        chains
            .iter()
            .all(|c| c["model_decisions"].as_array().unwrap().len() == 1),
        "{:?}",
        chains
            .iter()
            .find(|c| c["model_decisions"].as_array().unwrap().len() != 1)
    );
    let models = rows(&addr, "model-versions", "secret-dash");
    let attributed: i64 = models
        .iter()
        .map(|m| m["tool_calls"].as_i64().unwrap())
        .sum();
    assert_eq!(
        attributed as usize,
        chains.len(),
        "every tool call has a model version"
    );

    // Alerts: in the view, and delivered to the Alertmanager.
    let alerts = rows(&addr, "alerts", "secret-dash");
    assert!(
        alerts.iter().any(|a| a["kind"] == "model_version_change"),
        "{alerts:?}"
    );
    let keys: BTreeSet<String> = alerts
        .iter()
        .map(|a| {
            let subject = a["subject"].as_str().map(str::to_string);
            match subject {
                Some(s) => format!(
                    "{}/{}/{s}",
                    a["kind"].as_str().unwrap(),
                    a["agent_id"].as_str().unwrap()
                ),
                None => format!(
                    "{}/{}/{}",
                    a["kind"].as_str().unwrap(),
                    a["agent_id"].as_str().unwrap(),
                    a["window_start_us"]
                ),
            }
        })
        .collect();
    // Delivery is asynchronous (batched after each commit): wait for it.
    let posted = || -> BTreeSet<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|batch| batch.as_array().unwrap().clone())
            .filter(|a| a["labels"]["tenant_id"] == TENANT)
            .map(|a| a["labels"]["alert_key"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !keys.is_subset(&posted()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let posted = posted();
    assert!(keys.is_subset(&posted), "alerts {keys:?} posted {posted:?}");

    // Reports: every row cites the tenant's checkpoint and the offsets it covers.
    let (code, _) = get_json(
        &addr,
        &format!("/v1/tenants/{TENANT}/reports/iso-42001"),
        "secret-dash",
    );
    assert_eq!(code, 403, "a dashboard token reads no reports");
    for name in [
        "eu-ai-act-art12",
        "eu-ai-act-art14",
        "eu-ai-act-retention",
        "soc2-cc7.2",
        "iso-42001",
    ] {
        let (code, report) = get_json(
            &addr,
            &format!("/v1/tenants/{TENANT}/reports/{name}"),
            "secret-reg",
        );
        assert_eq!(code, 200, "{name}: {report}");
        let rows = report["rows"].as_array().unwrap();
        assert!(!rows.is_empty());
        for row in rows {
            let p = &row["provenance"];
            // The test's own requests are appended to the log as API access events.
            let tree = p["checkpoint"]["tree_size"].as_u64().unwrap() as usize;
            assert!(tree >= want.events, "{name}: {row}");
            assert!(
                !p["offsets"].as_object().unwrap().is_empty(),
                "{name}: {row}"
            );
        }
    }
    let (_, art14) = get_json(
        &addr,
        &format!("/v1/tenants/{TENANT}/reports/eu-ai-act-art14"),
        "secret-reg",
    );
    assert_eq!(
        art14["rows"][2]["value"]["pending_past_sla"],
        want.breaches.len(),
        "{art14}"
    );

    // Signed exports verify against the published key; a flipped byte does not.
    for format in [ExportFormat::Ndjson, ExportFormat::Parquet] {
        let (code, headers, body) = http_get(
            &addr,
            &format!("/v1/tenants/{TENANT}/export?format={}", format.as_str()),
            "secret-reg",
        );
        assert_eq!(code, 200);
        let manifest = manifest_of(&headers, format);
        assert_eq!((&manifest.from, &manifest.to), (&None, &None));
        let key =
            std::fs::read_to_string(wh.join(format!("keys/{}.pub", manifest.key_id))).unwrap();
        let key = parse_public_key(key.trim()).unwrap();
        assert!(manifest.verify(&body, &key), "{format:?} export verifies");
        assert!(manifest.events as usize >= want.events);
        assert_eq!(manifest.events, manifest.tree_size);
        let mut tampered = body.clone();
        tampered[body.len() / 3] ^= 0x20;
        assert!(!manifest.verify(&tampered, &key));
        match format {
            ExportFormat::Ndjson => {
                assert_eq!(
                    body.iter().filter(|b| **b == b'\n').count() as u64,
                    manifest.events
                )
            }
            ExportFormat::Parquet => assert_eq!(&body[..4], b"PAR1"),
        }
    }
    period_export(&addr, &wh);
    reproducible_reports(&addr, &wh);
    reviewers(&addr);

    // The dashboard, rendered by headless Chromium.
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium (tests/run.sh installs it)");
    let profile = dir.path().join("chromium");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "http://{addr}/dashboard#tenant={TENANT}&token=secret-dash"
        ))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let count = |needle: &str| dom.matches(needle).count();
    assert!(
        count("class=\"session") >= 100.min(want.sessions.len()),
        "sessions listed: {}",
        &dom[..dom.len().min(3000)]
    );
    assert!(count("class=\"narrative\"") > 3, "a session's timeline");
    assert!(
        dom.contains("called payments.") || dom.contains("model "),
        "narrative text"
    );
    assert!(count("class=\"alert ") >= 1, "alerts panel");
    assert!(count("class=\"overdue\"") >= 1, "SLA panel");
    assert!(!dom.contains("tenant-0001"), "no other tenant on the page");
}

/// Reports of a period, as of a checkpoint: the same bytes on every read while the log grows
/// (each read is itself recorded), signed documents (JSON and HTML) that verify offline with
/// the public key in Rust and Python and fail once changed, and a scope holding exactly the
/// events of the period below the checkpoint.
fn reproducible_reports(addr: &str, wh: &std::path::Path) {
    use custody_tests::{custody_output, manifest_dir, python};
    let (code, cp) = get_json(
        addr,
        &format!("/v1/tenants/{TENANT}/checkpoints/latest"),
        "secret-reg",
    );
    assert_eq!(code, 200, "{cp}");
    let size = cp["tree_size"].as_u64().unwrap();
    let key_file = wh.join(format!("keys/{}.pub", cp["key_id"].as_str().unwrap()));
    let key_copy = wh.parent().unwrap().join("signing.pub");
    std::fs::copy(&key_file, &key_copy).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check = |file: &std::path::Path, ok: bool| {
        let rust = custody_output(&[
            "verify-report",
            file.to_str().unwrap(),
            "--trusted-key",
            key_copy.to_str().unwrap(),
        ]);
        assert_eq!(
            rust.status.success(),
            ok,
            "custody verify-report {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&rust.stdout),
            String::from_utf8_lossy(&rust.stderr)
        );
        let py = Command::new(python())
            .arg(manifest_dir().join("py/verify_report.py"))
            .arg(file)
            .args(["--trusted-key", key_copy.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            py.status.success(),
            ok,
            "verify_report.py {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&py.stdout),
            String::from_utf8_lossy(&py.stderr)
        );
    };
    for name in ["eu-ai-act-art12", "eu-ai-act-art14"] {
        let path = format!("/v1/tenants/{TENANT}/reports/{name}?as_of={size}&format=signed");
        let (code, _, first) = http_get(addr, &path, "secret-reg");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&first));
        // The log grows between the reads (they and these are recorded as access events).
        for _ in 0..3 {
            http_get(
                addr,
                &format!("/v1/tenants/{TENANT}/events?limit=5"),
                "secret-reg",
            );
        }
        let (_, _, again) = http_get(addr, &path, "secret-reg");
        assert_eq!(
            first, again,
            "{name} as of {size}: the same bytes on every read"
        );
        let doc: Value = serde_json::from_slice(&first).unwrap();
        let report: Value = serde_json::from_str(doc["report"].as_str().unwrap()).unwrap();
        assert_eq!(report["scope"]["as_of_tree_size"], size);
        assert_eq!(
            report["scope"]["events"], size,
            "every event below the checkpoint"
        );
        assert_eq!(report["scope"]["checkpoint"], cp);
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, &first).unwrap();
        check(&file, true);
        // Any change of the report breaks the signature.
        let forged = String::from_utf8(first.clone()).unwrap().replacen(
            "\\\"status\\\":\\\"attention\\\"",
            "\\\"status\\\":\\\"met\\\"",
            1,
        );
        assert_ne!(
            forged.as_bytes(),
            &first[..],
            "{name} has a finding to forge"
        );
        let file = dir.path().join(format!("{name}.forged.json"));
        std::fs::write(&file, forged).unwrap();
        check(&file, false);
        // The HTML page carries the same document.
        let (code, headers, html) = http_get(
            addr,
            &format!("/v1/tenants/{TENANT}/reports/{name}?as_of={size}&format=html"),
            "secret-reg",
        );
        assert_eq!(code, 200);
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.starts_with("text/html")),
            "{headers:?}"
        );
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains("custody-signed-report") && html.contains("<table>"));
        let file = dir.path().join(format!("{name}.html"));
        std::fs::write(&file, &html).unwrap();
        check(&file, true);
    }
    // A period: exactly the events of [from, to) below the checkpoint, and the same report
    // twice.
    let (_, _, body) = http_get(
        addr,
        &format!("/v1/tenants/{TENANT}/export?format=ndjson"),
        "secret-reg",
    );
    let mut times: Vec<(u64, String)> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["event_time"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(seq, _)| *seq < size)
        .collect();
    times.sort_by(|a, b| a.1.cmp(&b.1));
    let (from, to) = (&times[times.len() / 4].1, &times[3 * times.len() / 4].1);
    let (f, t) = (parse_rfc3339(from).unwrap(), parse_rfc3339(to).unwrap());
    let want = times
        .iter()
        .filter(|(_, time)| (f..t).contains(&parse_rfc3339(time).unwrap()))
        .count();
    let path =
        format!("/v1/tenants/{TENANT}/reports/eu-ai-act-art12?from={from}&to={to}&as_of={size}");
    let (code, report) = get_json(addr, &path, "secret-reg");
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["scope"]["events"], want, "{}", report["scope"]);
    assert_eq!(report["rows"][0]["value"]["total"], want);
    assert_eq!(get_json(addr, &path, "secret-reg").1, report);
    // A tree size no checkpoint has is refused, with the reason.
    let (code, refused) = get_json(
        addr,
        &format!(
            "/v1/tenants/{TENANT}/reports/eu-ai-act-art12?as_of={}",
            size + 10_000_000
        ),
        "secret-reg",
    );
    assert_eq!(code, 400, "{refused}");
}

/// Rubber stamps per reviewer: the reviewers' rows add up to the tenant's HITL statistics, and
/// the Art. 14 report lists the reviewers who rubber-stamp, most first.
fn reviewers(addr: &str) {
    let (code, latency) = get_json(
        addr,
        &format!("/v1/tenants/{TENANT}/views/hitl-latency"),
        "secret-reg",
    );
    assert_eq!(code, 200, "{latency}");
    let (code, view) = get_json(
        addr,
        &format!("/v1/tenants/{TENANT}/views/reviewers?limit=1000"),
        "secret-reg",
    );
    assert_eq!(code, 200, "{view}");
    let rows = view["rows"].as_array().unwrap();
    assert!(rows.len() > 3, "{view}");
    let sum = |field: &str| rows.iter().map(|r| r[field].as_i64().unwrap()).sum::<i64>();
    assert_eq!(
        sum("reviews"),
        latency["reviews"].as_i64().unwrap(),
        "{latency}"
    );
    assert_eq!(
        sum("rubber_stamps"),
        latency["rubber_stamps"].as_i64().unwrap()
    );
    let (_, art14) = get_json(
        addr,
        &format!("/v1/tenants/{TENANT}/reports/eu-ai-act-art14"),
        "secret-reg",
    );
    let row = art14["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["metric"]
                .as_str()
                .unwrap()
                .starts_with("rubber stamps per reviewer")
        })
        .unwrap_or_else(|| panic!("{art14}"));
    let listed = row["value"]["with_rubber_stamps"].as_array().unwrap();
    assert!(!listed.is_empty());
    let counts: Vec<i64> = listed
        .iter()
        .map(|r| r["rubber_stamps"].as_i64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
}

/// An export of a period holds exactly the events of the period (of the log its checkpoint
/// signs), and signs the period: the same manifest without it does not verify.
fn period_export(addr: &str, wh: &std::path::Path) {
    let ndjson = |path: &str| -> (Vec<Value>, Vec<(String, String)>, Vec<u8>) {
        let (code, headers, body) = http_get(addr, path, "secret-reg");
        assert_eq!(code, 200, "{path}");
        let rows = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        (rows, headers, body)
    };
    let (all, _, _) = ndjson(&format!("/v1/tenants/{TENANT}/export?format=ndjson"));
    let mut times: Vec<String> = all
        .iter()
        .map(|e| e["event_time"].as_str().unwrap().to_string())
        .collect();
    times.sort();
    let (from, to) = (&times[times.len() / 4], &times[times.len() * 3 / 4]);
    let path = format!("/v1/tenants/{TENANT}/export?format=ndjson&from={from}&to={to}");
    let (part, headers, body) = ndjson(&path);
    let mut manifest = manifest_of(&headers, ExportFormat::Ndjson);
    let tree_size = manifest.tree_size as i64;
    let within = |e: &Value| {
        let t = e["event_time"].as_str().unwrap();
        t >= from.as_str() && t < to.as_str() && e["seq"].as_i64().unwrap() < tree_size
    };
    let seqs = |rows: &[Value]| -> Vec<i64> {
        rows.iter()
            .filter(|e| within(e))
            .map(|e| e["seq"].as_i64().unwrap())
            .collect()
    };
    assert!(!part.is_empty());
    assert!(part.iter().all(within), "only the period's events");
    assert_eq!(seqs(&part), seqs(&all), "every event of the period");
    assert_eq!(manifest.from.as_deref(), Some(from.as_str()));
    assert_eq!(manifest.to.as_deref(), Some(to.as_str()));
    assert_eq!(manifest.events as usize, part.len());
    let key = std::fs::read_to_string(wh.join(format!("keys/{}.pub", manifest.key_id))).unwrap();
    let key = parse_public_key(key.trim()).unwrap();
    assert!(manifest.verify(&body, &key), "the period export verifies");
    manifest.from = None;
    assert!(!manifest.verify(&body, &key), "the period is signed");
}

/// An export's manifest, as its `x-custody-*` headers carry it (the period only if it has one).
fn manifest_of(headers: &[(String, String)], format: ExportFormat) -> ExportManifest {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let h = |name: &str| header(name).unwrap_or_else(|| panic!("header {name}"));
    ExportManifest {
        tenant_id: h("x-custody-tenant"),
        format,
        body_sha256: h("x-custody-body-sha256"),
        events: h("x-custody-events").parse().unwrap(),
        tree_size: h("x-custody-tree-size").parse().unwrap(),
        root: h("x-custody-root"),
        key_id: h("x-custody-key-id"),
        from: header("x-custody-from"),
        to: header("x-custody-to"),
        signature: h("x-custody-signature"),
    }
}
