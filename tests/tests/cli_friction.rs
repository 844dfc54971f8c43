//! The CLI as a new user meets it: every `custody …` command the documentation names exists;
//! a busy HTTP port is an error, not a demo that quietly serves nothing; `demo` and `run`
//! take `--listen`; `custody_tenants` counts each tenant once, however many runs the process
//! made (`demo --serve` runs twice); `/` and `/openapi.json` describe the API, and the
//! public key is served.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;

use custody_tests::{KillOnDrop, await_line, custody_command, free_addr, http_get, manifest_dir};

/// `custody demo --serve EXTRA --listen ADDR --warehouse WH`, once it serves (killed on drop).
fn serve_demo_with(addr: &str, wh: &Path, extra: &[&str]) -> KillOnDrop {
    let child = custody_command()
        .args(["demo", "--serve"])
        .args(extra)
        .args(["--listen", addr, "--warehouse"])
        .arg(wh)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    await_line(child, "serving until interrupted")
}

/// Every `` `custody SUBCOMMAND `` in the README, the default configuration and the docs
/// answers `--help` (it once named `custody keys rewrap`, which never existed).
#[test]
fn documented_commands_exist() {
    let root = manifest_dir().join("..");
    let mut named = BTreeSet::new();
    let mut files = vec![root.join("README.md"), root.join("pipeline/default.toml")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("`custody ") {
            let rest = &text[i + "`custody ".len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            // `custody --config …` and the like name options, not commands.
            if !word.is_empty() && !word.starts_with('-') {
                named.insert((
                    word,
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    assert!(named.len() > 10, "{named:?}");
    for (command, file) in &named {
        let out = custody_command()
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file} names `custody {command}`, which does not exist: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A busy port fails the demo before it runs, saying how to choose another.
#[test]
fn a_busy_port_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let wh = dir.path().join("wh");
    let out = custody_command()
        .args(["demo", "--events", "50", "--listen", &addr, "--warehouse"])
        .arg(&wh)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve HTTP on {addr}")) && stderr.contains("--listen"),
        "{stderr}"
    );
    // The same through `run`.
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, "").unwrap();
    let out = custody_command()
        .args(["run", "--input"])
        .arg(&input)
        .args(["--listen", &addr, "--warehouse"])
        .arg(dir.path().join("wh2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    // `demo --serve` without an address is refused rather than serving nothing.
    let out = custody_command()
        .args([
            "demo",
            "--serve",
            "--events",
            "50",
            "--listen",
            "off",
            "--warehouse",
        ])
        .arg(dir.path().join("wh3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

/// `demo --serve --listen ADDR` serves there, and `/metrics` counts 3 tenants as 3 after the
/// process's second run (the serving one) has started.
#[test]
fn demo_serves_where_asked_and_counts_tenants_once() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = serve_demo_with(
        &addr,
        &dir.path().join("wh"),
        &["--events", "300", "--tenants", "3"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, _, body) = http_get(&addr, "/metrics", "");
        assert_eq!(code, 200);
        let text = String::from_utf8_lossy(&body).into_owned();
        let tenants = text
            .lines()
            .find_map(|l| l.strip_prefix("custody_tenants "))
            .map(|v| v.trim().to_string());
        // The serving run has opened its chains once the gauge is back at 3.
        if tenants.as_deref() == Some("3") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && tenants.as_deref() != Some("6"),
            "custody_tenants = {tenants:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The root is an index of the endpoints, /openapi.json documents them, the public key
    // is served, and an unknown path says where to look instead of an empty 404.
    let (code, _, body) = http_get(&addr, "/", "");
    assert_eq!(code, 200);
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let paths: Vec<&str> = index["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/v1/tenants/{tenant}/events"), "{index}");
    let (code, _, body) = http_get(&addr, "/openapi.json", "");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["paths"].as_object().unwrap().len(), {
        let mut unique = paths.clone();
        unique.dedup();
        unique.len()
    });
    let (code, _, body) = http_get(&addr, "/v1/public-key", "");
    assert_eq!(code, 200);
    let key: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(key["algorithm"], "ed25519");
    assert_eq!(key["public_key"].as_str().unwrap().len(), 64);
    let (code, _, body) = http_get(&addr, "/v1/no-such-thing", "");
    assert_eq!(code, 404);
    let missing: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(missing["index"], "/");
    // Stays at 3 while serving.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (_, _, body) = http_get(&addr, "/metrics", "");
    assert!(
        String::from_utf8_lossy(&body).contains("\ncustody_tenants 3\n"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// A demo that raises many drift alerts says so in a short summary (alerts by kind, where to
/// look) instead of a log line per alert, and writes no terminal colour codes into a pipe.
#[test]
fn demo_summarises_alerts_and_writes_no_colour_codes_into_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let out = custody_command()
        .args(["demo", "--events", "6000", "--tenants", "12", "--warehouse"])
        .arg(&wh)
        .env_remove("RUST_LOG")
        // Short drift windows, so that this workload raises alerts (hundreds with defaults
        // over a million events).
        .env("CUSTODY__DRIFT__WINDOW", "2m")
        .env("CUSTODY__DRIFT__BASELINE_WINDOWS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains('\x1b'), "escape codes in {name}: {text:?}");
        assert!(!text.contains('\r'), "progress redraws in {name}: {text:?}");
    }
    assert!(!stderr.contains("alert raised"), "{stderr}");
    assert!(stderr.lines().count() < 15, "a quiet log:\n{stderr}");
    let alerts = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("alerts raised: "))
        .unwrap_or_else(|| panic!("no alert summary in\n{stdout}"));
    let total: usize = alerts
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 10, "{alerts}");
    // Counted by kind, and the kinds add up.
    let by_kind: usize = alerts
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(kinds, _)| {
            kinds
                .split(", ")
                .map(|k| k.rsplit_once(' ').unwrap().1.parse::<usize>().unwrap())
                .sum()
        })
        .unwrap_or_else(|| panic!("no kinds in {alerts}"));
    assert_eq!(by_kind, total, "{alerts}");
    assert!(alerts.contains("HITL SLA breaches: "), "{alerts}");
    assert!(
        stdout.contains(&format!(
            "verify: custody verify --warehouse {}",
            wh.display()
        )),
        "{stdout}"
    );
}

/// An export fetched with a plain HTTP client keeps its signature: `bundle=tar` answers one
/// archive (events, signed manifest, checkpoint, public key) that standard tar reads and
/// `custody verify-export` checks offline, and that fails once a byte of it changes;
/// `custody export --server` fetches, checks and unpacks it.
#[test]
fn export_bundles_keep_their_signature_and_export_works_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = serve_demo_with(
        &addr,
        &dir.path().join("wh"),
        &["--events", "600", "--tenants", "2"],
    );
    let (_, _, body) = http_get(&addr, "/v1/public-key", "");
    let key: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let key = key["public_key"].as_str().unwrap().to_string();
    let (_, _, body) = http_get(&addr, "/v1/checkpoints", "");
    let checkpoints: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tenant = checkpoints["checkpoints"][0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();

    let (code, headers, archive) = http_get(
        &addr,
        &format!("/v1/tenants/{tenant}/export?bundle=tar"),
        "",
    );
    assert_eq!(code, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/x-tar"),
        "{headers:?}"
    );
    let file = dir.path().join("export.tar");
    std::fs::write(&file, &archive).unwrap();
    // Standard tar reads it.
    let names = std::process::Command::new(custody_tests::python())
        .args([
            "-c",
            "import sys, tarfile; print(' '.join(sorted(tarfile.open(sys.argv[1]).getnames())))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&names.stdout).trim(),
        "README.txt checkpoint.json events.ndjson manifest.json public-key.json"
    );
    let verify = |path: &std::path::Path, key: &str| {
        custody_command()
            .args(["verify-export"])
            .arg(path)
            .args(["--trusted-key", key])
            .output()
            .unwrap()
    };
    let ok = verify(&file, &key);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains(&format!("OK: export of tenant {tenant}")),
        "{ok:?}"
    );
    // Another key, or one byte of an event changed, and it fails.
    let other = hex::encode(
        custody_operators::checkpoint::Signer::from_seed(&[9; 32])
            .public_key()
            .as_bytes(),
    );
    assert!(!verify(&file, &other).status.success());
    let at = archive
        .windows(8)
        .position(|w| w == b"event_id")
        .expect("an event in the archive");
    let mut tampered = archive.clone();
    tampered[at + 20] ^= 0x01;
    let bad = dir.path().join("tampered.tar");
    std::fs::write(&bad, &tampered).unwrap();
    let refused = verify(&bad, &key);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not verify"),
        "{refused:?}"
    );

    // `custody export --server` against the running server.
    let out = dir.path().join("fetched");
    let fetched = custody_command()
        .args(["export", "--server", &format!("http://{addr}")])
        .args(["--tenant", &tenant, "--trusted-key", &key, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{fetched:?}");
    let said = String::from_utf8_lossy(&fetched.stdout);
    assert!(said.contains("signature OK"), "{said}");
    for name in [
        "manifest.json",
        "checkpoint.json",
        "public-key.json",
        "events.ndjson",
    ] {
        assert!(out.join(name).is_file(), "{name} not unpacked");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let events = std::fs::read_to_string(out.join("events.ndjson")).unwrap();
    assert_eq!(
        manifest["events"].as_u64().unwrap() as usize,
        events.lines().count()
    );
    assert!(said.contains(&format!(
        "exported {} events of {tenant}",
        manifest["events"]
    )));
    let wrong = custody_command()
        .args(["export", "--server", &format!("http://{addr}")])
        .args(["--tenant", &tenant, "--trusted-key", &other, "--out"])
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}

/// Demo data is dated up to now and spread over the span asked for (three weeks by default
/// for big demos), so "last week" finds events; a rerun of the same demo dates its events as
/// the first run did (nothing new ingested, no emitter chain broken).
#[test]
fn demo_data_is_dated_up_to_now_over_weeks() {
    use custody_schemas::time::{format_rfc3339, now_us, parse_rfc3339};
    const DAY: i64 = 86_400_000_000;
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let addr = free_addr();
    let started = now_us();
    let server = serve_demo_with(
        &addr,
        &wh,
        &["--events", "3000", "--tenants", "2", "--span", "3w"],
    );
    let (_, _, body) = http_get(&addr, "/v1/checkpoints", "");
    let checkpoints: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tenant = checkpoints["checkpoints"][0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Every page of a query.
    let times = |query: &str| -> Vec<i64> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/v1/tenants/{tenant}/events?{query}{cursor}");
            let (code, _, body) = http_get(&addr, &path, "");
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            out.extend(
                page["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["event_type"] != "AUDIT_LOG_ACCESSED")
                    .map(|e| parse_rfc3339(e["event_time"].as_str().unwrap()).unwrap()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return out,
            }
        }
    };
    let all = times("limit=1000");
    let (first, last) = (*all.iter().min().unwrap(), *all.iter().max().unwrap());
    assert!(
        last <= now_us() && last > started - DAY,
        "last event {}",
        format_rfc3339(last)
    );
    assert!(
        first >= started - 23 * DAY && first < started - 18 * DAY,
        "first {}",
        format_rfc3339(first)
    );
    // "Last week" is a part of it, not all of it and not nothing.
    let week_ago = format_rfc3339(started - 7 * DAY);
    let last_week = times(&format!("from={week_ago}&limit=1000"));
    assert!(
        !last_week.is_empty() && last_week.len() < all.len(),
        "{} of {}",
        last_week.len(),
        all.len()
    );
    drop(server);

    // The same demo again, later: nothing new, the same dates.
    let again = custody_command()
        .args([
            "demo",
            "--events",
            "3000",
            "--tenants",
            "2",
            "--span",
            "3w",
            "--warehouse",
        ])
        .arg(&wh)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{said}");
    // Only the API accesses of the serving run are new (the access log is chained on the next
    // run); none of the workload again, and nothing quarantined as a broken emitter chain.
    let summary = said
        .lines()
        .find(|l| l.contains(" in = "))
        .unwrap_or_else(|| panic!("{said}"));
    let ins: u64 = summary
        .trim_start_matches("custody demo: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ins < 50, "{said}");
    assert!(
        summary.ends_with(&format!("{ins} accepted + 0 quarantined (balanced)")),
        "{said}"
    );
    // Dated as the first run was: its start is just before the first event.
    let start = said
        .split_once("dated from ")
        .and_then(|(_, r)| r.split_once(' '))
        .map(|(t, _)| parse_rfc3339(t).unwrap())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(start <= first && first - start < DAY, "{said}");
}
