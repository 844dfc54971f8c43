//! Data residency: a tenant pinned to a location (`[tenants.T] location = "eu"`) has its
//! events, quarantined records, vault, keys and exports in that location's warehouse and key
//! directory only. Two pipelines (the default location and `--location eu`) read the same
//! input; each keeps its own tenants' records and passes on the others. The test searches
//! every byte (and every decoded Parquet value and statistic) of each location for the other
//! location's data, and checks that the same search finds it where it belongs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use custody_tests::{custody_output, found_under, generate_ndjson, python, read_columns, rows};
use serde_json::Value;

const EU_TENANT: &str = "tenant-0001";

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tenants of the keystore under `keys` (its data keys' owners).
fn keystore_tenants(keys: &Path) -> BTreeSet<String> {
    let db = keys.join("keystore.db");
    if !db.exists() {
        return BTreeSet::new();
    }
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys,json; c=sqlite3.connect(sys.argv[1]); \
             print(json.dumps([r[0] for r in c.execute('SELECT DISTINCT tenant FROM data_keys')]))",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<String>>(&out.stdout)
        .unwrap()
        .into_iter()
        .collect()
}

/// What identifies the data of the events in `events` (ids, sessions, PII tokens).
fn needles(events: &[&Value]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for e in events {
        out.insert(e["event_id"].as_str().unwrap().to_string());
        out.insert(e["session_id"].as_str().unwrap().to_string());
        let payload = e["payload"].as_str().unwrap();
        for (i, _) in payload.match_indices("tok_") {
            let token: String = payload[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            if token.len() > 12 {
                out.insert(token);
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn a_pinned_tenant_lives_in_its_location_only() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    generate_ndjson(&input, 900, 3);
    // Two records to quarantine: one claiming the EU tenant, one claiming no one.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str(&format!(
        "{{\"tenant_id\":\"{EU_TENANT}\",\"event_id\":\"x\",\"note\":\"eu-only-marker-7f3a\"}}\n"
    ));
    text.push_str("home-garbage-marker-91c2 not json\n");
    std::fs::write(&input, &text).unwrap();
    let lines = text.lines().count();

    let home = dir.path().join("home");
    let eu = dir.path().join("eu");
    let cfg = dir.path().join("custody.toml");
    std::fs::write(
        &cfg,
        format!(
            "[serve]\nlisten = \"off\"\n[vault]\ntokens = true\ncontent = false\n\
             [warehouse]\npath = \"{}\"\n\
             [locations.eu]\nwarehouse = \"{}\"\n\
             [tenants.{EU_TENANT}]\nlocation = \"eu\"\n",
            home.join("wh").display(),
            eu.join("wh").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let input_s = input.to_str().unwrap();

    // Each location's pipeline over the same input.
    let at_home = ok(custody_output(&[
        "--config", cfg, "run", "--input", input_s,
    ]));
    let at_eu = ok(custody_output(&[
        "--config",
        cfg,
        "--location",
        "eu",
        "run",
        "--input",
        input_s,
    ]));
    let counts = |out: &str| -> (usize, usize, usize) {
        let line = out.lines().find(|l| l.contains(" in = ")).unwrap();
        let n: Vec<usize> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let away = out
            .lines()
            .find(|l| l.contains("passed on to other locations"))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (n[0], n[2], away)
    };
    let (home_in, home_quarantined, home_away) = counts(&at_home);
    let (eu_in, eu_quarantined, eu_away) = counts(&at_eu);
    assert!(at_home.contains("(eu: "), "{at_home}");
    assert!(at_eu.contains("(default: "), "{at_eu}");
    // Every input is kept by exactly one location.
    assert_eq!(home_in + home_away, lines, "{at_home}");
    assert_eq!(eu_in + eu_away, lines, "{at_eu}");
    assert_eq!(home_in, eu_away);
    assert_eq!(home_quarantined, 1, "the unattributed record: {at_home}");
    assert_eq!(eu_quarantined, 1, "the EU tenant's record: {at_eu}");

    let spec = [
        "events:tenant_id,event_id,session_id,payload",
        "quarantine:tenant_id,reason_kind,raw_redacted",
        "vault:tenant_id",
    ];
    let home_tables = read_columns(&home.join("wh"), &spec);
    let eu_tables = read_columns(&eu.join("wh"), &spec);
    let tenants_of = |tables: &Value, table: &str| -> BTreeSet<String> {
        rows(tables, table)
            .iter()
            .filter_map(|r| r["tenant_id"].as_str().map(str::to_string))
            .filter(|t| t != "_custody")
            .collect()
    };
    assert_eq!(
        tenants_of(&home_tables, "events"),
        BTreeSet::from(["tenant-0000".to_string(), "tenant-0002".to_string()])
    );
    assert_eq!(
        tenants_of(&eu_tables, "events"),
        BTreeSet::from([EU_TENANT.to_string()])
    );
    assert_eq!(
        tenants_of(&eu_tables, "quarantine"),
        BTreeSet::from([EU_TENANT.to_string()])
    );
    assert!(tenants_of(&home_tables, "quarantine").is_empty());
    assert!(!tenants_of(&home_tables, "vault").contains(EU_TENANT));
    assert_eq!(
        tenants_of(&eu_tables, "vault"),
        BTreeSet::from([EU_TENANT.to_string()])
    );
    // Keys: each location's keystore holds its own tenants' data keys only.
    assert!(!keystore_tenants(&home.join("wh/keys")).contains(EU_TENANT));
    assert_eq!(
        keystore_tenants(&eu.join("wh/keys")),
        BTreeSet::from([EU_TENANT.to_string()])
    );

    // Exports: the EU tenant's is made in the EU only; the default location's export of
    // everything it holds carries none of it.
    let eu_export = dir.path().join("eu-export");
    ok(custody_output(&[
        "--config",
        cfg,
        "--location",
        "eu",
        "export",
        "--tenant",
        EU_TENANT,
        "--out",
        eu_export.to_str().unwrap(),
    ]));
    let refused = custody_output(&[
        "--config",
        cfg,
        "export",
        "--tenant",
        EU_TENANT,
        "--out",
        dir.path().join("home-eu-export").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is kept in location \"eu\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let home_export = home.join("export");
    ok(custody_output(&[
        "--config",
        cfg,
        "export",
        "--out",
        home_export.to_str().unwrap(),
    ]));
    for args in [
        vec![
            "erase",
            "--tenant",
            EU_TENANT,
            "--requested-by",
            "x",
            "--reason",
            "y",
        ],
        vec![
            "hold",
            "place",
            "--tenant",
            EU_TENANT,
            "--reason",
            "y",
            "--requested-by",
            "x",
        ],
    ] {
        let mut all = vec!["--config", cfg];
        all.extend(args.iter().copied());
        let out = custody_output(&all);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is kept in location \"eu\""),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The byte search: nothing of the EU tenant anywhere in the default location (warehouse,
    // keys, export), and nothing of the others in the EU; the same search finds each
    // location's own data, so it can fail.
    let eu_events: Vec<&Value> = rows(&eu_tables, "events")
        .iter()
        .filter(|e| e["tenant_id"] == EU_TENANT)
        .collect();
    let home_events: Vec<&Value> = rows(&home_tables, "events")
        .iter()
        .filter(|e| e["tenant_id"] != "_custody")
        .collect();
    let mut eu_needles = needles(&eu_events);
    eu_needles.push("eu-only-marker-7f3a".into());
    let mut home_needles = needles(&home_events);
    home_needles.push("home-garbage-marker-91c2".into());
    assert!(eu_needles.len() > 300 && home_needles.len() > 600);
    assert_eq!(found_under(&home, &eu_needles), Vec::<String>::new());
    assert_eq!(found_under(&eu, &home_needles), Vec::<String>::new());
    assert_eq!(found_under(&eu, &eu_needles).len(), eu_needles.len());
    assert_eq!(found_under(&home, &home_needles).len(), home_needles.len());
    assert_eq!(found_under(&eu_export, &home_needles), Vec::<String>::new());

    // Both locations verify.
    ok(custody_output(&["--config", cfg, "verify"]));
    ok(custody_output(&[
        "--config",
        cfg,
        "--location",
        "eu",
        "verify",
    ]));

    // Locations keep apart: one sharing another's warehouse is refused.
    let shared = dir.path().join("shared.toml");
    std::fs::write(
        &shared,
        format!(
            "[serve]\nlisten = \"off\"\n[warehouse]\npath = \"{}\"\n\
             [locations.eu]\nwarehouse = \"{}\"\n",
            home.join("wh").display(),
            home.join("wh").join("eu").display()
        ),
    )
    .unwrap();
    let out = custody_output(&[
        "--config",
        shared.to_str().unwrap(),
        "--location",
        "eu",
        "verify",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlaps"));
}
