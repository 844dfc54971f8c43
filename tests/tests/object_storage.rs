//! The warehouse on S3-compatible object storage (`[warehouse] tables = "s3://…"`), end to
//! end against a real S3 server (s3s-fs, installed by `tests/run.sh`, started on loopback
//! with credentials): the pipeline writes every table's data and metadata files to the
//! bucket and none to the local directory (which keeps the catalog, state and keys);
//! pyiceberg reads the tables back from the bucket; `custody verify` passes; retention over a
//! 400-day span removes the expired events' bytes from the bucket (the server's files are
//! searched); the pipeline resumes from the bucket; a warehouse cannot be pointed at another
//! bucket, and wrong credentials fail loudly instead of writing nowhere. On a bucket under
//! S3 Object Lock (moto, which enforces it), every file Custody writes is locked and storage
//! refuses to delete any version of it early.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use custody_tests::{
    LockingS3Server, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, custody_command, files_under,
    found_under, read_columns_with, rows, spanned_workload,
};
use serde_json::{Value, json};

const DAY_US: i64 = 86_400_000_000;
const SIGNING_KEY: &str = "0808080808080808080808080808080808080808080808080808080808080808";
const BUCKET: &str = "custody-lake";

/// `custody ARGS` with the test's signing key and S3 credentials (`secret`).
fn custody(args: &[&str], secret: &str) -> Output {
    custody_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .env("CUSTODY_SIGNING_KEY", SIGNING_KEY)
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = custody(args, S3_SECRET_KEY);
    assert!(
        out.status.success(),
        "custody {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(dir: &Path, wh: &Path, tables: &str, endpoint: &str) -> String {
    config_with(dir, wh, tables, endpoint, "")
}

/// The test's configuration, with `warehouse_extra` lines in `[warehouse]`.
fn config_with(
    dir: &Path,
    wh: &Path,
    tables: &str,
    endpoint: &str,
    warehouse_extra: &str,
) -> String {
    let name = format!("{tables}{warehouse_extra}").replace(['/', ':', ' ', '=', '\n'], "_");
    let path = dir.join(format!("custody-{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[serve]
listen = "off"
[pipeline]
batch_size = 200
[vault]
tokens = true
content = true
[warehouse]
path = "{}"
tables = "{tables}"
s3_endpoint = "{endpoint}"
s3_path_style = true
{warehouse_extra}
[retention]
days = 180
interval = "0s"
"#,
            wh.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// The events of the `events` table (Custody's own events left out), by id.
fn stored_ids(wh: &Path) -> BTreeSet<String> {
    let tables = read_columns_with(
        wh,
        &["events:event_id,event_type"],
        &[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ],
    );
    rows(&tables, "events")
        .iter()
        .filter(|e| e["event_type"] != "RETENTION_APPLIED")
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect()
}

fn verify(cfg: &str, wh: &str) {
    let report: Value = serde_json::from_str(&ok(&[
        "--config",
        cfg,
        "verify",
        "--warehouse",
        wh,
        "--json",
    ]))
    .unwrap();
    let reports = report.as_array().unwrap();
    // Three tenants and the warehouse itself.
    assert_eq!(reports.len(), 4, "{report}");
    for r in reports {
        assert_eq!(r["problems"], json!([]), "{r}");
    }
}

#[test]
fn the_warehouse_lives_in_object_storage() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"), &[BUCKET, "other-bucket"]);
    // 400 days of events up to noon today; the last 200 arrive after retention.
    let (lines, now_us) = spanned_workload(dir.path(), 1200, 3, 400);
    let (first, _) = lines.split_at(lines.len() - 200);
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, first.join("\n") + "\n").unwrap();
    let wh = dir.path().join("wh");
    let whs = wh.to_str().unwrap();
    let tables = format!("s3://{BUCKET}/lake");
    let cfg = config(dir.path(), &wh, &tables, &s3.endpoint);

    ok(&["--config", &cfg, "run", "--input", input.to_str().unwrap()]);

    // Every table file is in the bucket; the local directory holds none.
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(wh.join("storage.json")).unwrap()).unwrap();
    assert_eq!(recorded["location"], tables.as_str());
    let local = files_under(&wh);
    assert!(
        local.iter().all(|f| {
            let name = f.to_string_lossy();
            !name.ends_with(".parquet") && !name.ends_with(".avro") && !name.contains("metadata")
        }),
        "table files on the local disk: {local:?}"
    );
    assert!(!wh.join("data").exists());
    let in_bucket: Vec<String> = files_under(&s3.root.join(BUCKET).join("lake"))
        .into_iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    for table in ["events", "epochs", "checkpoints", "quarantine", "vault"] {
        assert!(
            in_bucket
                .iter()
                .any(|f| f.contains(&format!("lake/custody/{table}/metadata/"))
                    && f.ends_with(".metadata.json")),
            "no metadata of custody.{table} in the bucket: {in_bucket:?}"
        );
    }
    assert!(
        in_bucket
            .iter()
            .any(|f| f.contains("lake/custody/events/data/") && f.ends_with(".parquet"))
    );

    // Another implementation reads the tables from the bucket; the chains verify.
    assert_eq!(stored_ids(&wh), events_ids(first));
    verify(&cfg, whs);

    // Retention at 180 days: the expired events leave the bucket, byte for byte.
    let cutoff = now_us.div_euclid(DAY_US) * DAY_US - 180 * DAY_US;
    let parsed: Vec<Value> = first
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let time =
        |e: &Value| custody_schemas::time::parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
    let (gone, kept): (Vec<&Value>, Vec<&Value>) = parsed.iter().partition(|e| time(e) < cutoff);
    assert!(gone.len() > 300 && kept.len() > 300);
    let out = ok(&[
        "--config",
        &cfg,
        "retention",
        "--now",
        &custody_schemas::time::format_rfc3339(now_us),
    ]);
    assert!(out.contains("recorded as RETENTION_APPLIED"), "{out}");
    let want: BTreeSet<String> = kept
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored_ids(&wh), want);
    let parents: BTreeSet<&str> = kept
        .iter()
        .filter_map(|e| e["parent_event_id"].as_str())
        .collect();
    let needles: Vec<String> = gone
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .filter(|id| !parents.contains(id))
        .map(str::to_string)
        .collect();
    assert!(needles.len() > 300);
    let left = found_under(&s3.root, &needles);
    assert!(
        left.is_empty(),
        "{} expired events remain in the bucket, e.g. {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
    let sample: Vec<String> = want.iter().take(20).cloned().collect();
    assert_eq!(
        found_under(&s3.root, &sample).len(),
        20,
        "the search can fail"
    );
    verify(&cfg, whs);

    // The pipeline resumes from the bucket with the rest of the input.
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    ok(&["--config", &cfg, "run", "--input", input.to_str().unwrap()]);
    let mut want = want;
    want.extend(events_ids(&lines[lines.len() - 200..]));
    assert_eq!(stored_ids(&wh), want);
    verify(&cfg, whs);

    // A warehouse's tables cannot be moved to another bucket under its catalog.
    let elsewhere = config(dir.path(), &wh, "s3://other-bucket/lake", &s3.endpoint);
    let moved = custody(
        &[
            "--config",
            &elsewhere,
            "run",
            "--input",
            input.to_str().unwrap(),
        ],
        S3_SECRET_KEY,
    );
    let why = String::from_utf8_lossy(&moved.stderr);
    assert!(
        !moved.status.success() && why.contains("cannot move"),
        "{why}"
    );
    assert!(files_under(&s3.root.join("other-bucket")).is_empty());

    // Wrong credentials: the server refuses, and so does Custody, loudly.
    let fresh = dir.path().join("fresh");
    let cfg_fresh = config(
        dir.path(),
        &fresh,
        &format!("s3://{BUCKET}/fresh"),
        &s3.endpoint,
    );
    let refused = custody(
        &[
            "--config",
            &cfg_fresh,
            "run",
            "--input",
            input.to_str().unwrap(),
        ],
        "not-the-secret",
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    let fresh_objects = s3.root.join(BUCKET).join("fresh");
    assert!(!fresh_objects.exists() || files_under(&fresh_objects).is_empty());
}

/// A bucket under S3 Object Lock (moto, which enforces it): with `s3_object_lock`, every table
/// file Custody writes is locked in COMPLIANCE mode by the bucket's default retention, and
/// storage refuses to delete any version of it early, whoever asks; Custody's own deletes
/// (retention, orphan files) leave delete markers over the locked versions, and the chains
/// still verify. Without the setting, the bucket refuses Custody's writes (S3 wants
/// Content-MD5 under Object Lock) and the run fails loudly, having committed nothing.
#[test]
fn object_lock_refuses_early_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = LockingS3Server::start();
    const LOCKED: &str = "custody-locked";
    s3.owner(&["create", LOCKED, "30"]);
    let (lines, now_us) = spanned_workload(dir.path(), 600, 3, 400);
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let tables = format!("s3://{LOCKED}/lake");

    // Not declared: the bucket refuses the writes, and Custody says so.
    let plain = dir.path().join("plain");
    let cfg_plain = config(
        dir.path(),
        &plain,
        &format!("s3://{LOCKED}/plain"),
        &s3.endpoint,
    );
    let refused = custody(
        &[
            "--config",
            &cfg_plain,
            "run",
            "--input",
            input.to_str().unwrap(),
        ],
        S3_SECRET_KEY,
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    assert!(why.contains("MD5"), "{why}");

    // Declared: the pipeline runs, the tables verify, another implementation reads them.
    let wh = dir.path().join("wh");
    let whs = wh.to_str().unwrap();
    let cfg = config_with(
        dir.path(),
        &wh,
        &tables,
        &s3.endpoint,
        "s3_object_lock = true",
    );
    ok(&["--config", &cfg, "run", "--input", input.to_str().unwrap()]);
    verify(&cfg, whs);
    let all = events_ids(&lines);
    assert_eq!(stored_ids(&wh), all);

    // Retention deletes the expired files: on a locked bucket, delete markers.
    let out = ok(&[
        "--config",
        &cfg,
        "retention",
        "--now",
        &custody_schemas::time::format_rfc3339(now_us),
    ]);
    assert!(out.contains("recorded as RETENTION_APPLIED"), "{out}");
    verify(&cfg, whs);
    assert!(stored_ids(&wh).len() < all.len());

    // Every version of every file is locked in COMPLIANCE mode for the bucket's 30 days,
    // and storage refuses to delete any of them (the probe tries each one).
    let report: Value = serde_json::from_str(&s3.owner(&["probe", LOCKED, "lake/"])).unwrap();
    let versions = report["versions"].as_array().unwrap();
    let files = |suffix: &str| {
        versions
            .iter()
            .filter(|v| v["key"].as_str().unwrap().ends_with(suffix))
            .count()
    };
    assert!(files(".parquet") > 10 && files(".avro") > 10 && files(".metadata.json") > 3);
    let soonest = custody_schemas::time::format_rfc3339(now_us + 29 * DAY_US);
    for v in versions {
        assert_eq!(v["mode"], "COMPLIANCE", "{v}");
        assert!(
            v["retain_until"].as_str().unwrap() > soonest.as_str(),
            "{v}"
        );
        assert_eq!(v["delete_refused"], "AccessDenied", "{v}");
        assert_eq!(v["still_there"], true, "{v}");
    }
    // Retention's deletes hid the expired files behind delete markers; their locked versions
    // wait for the lock to end (and a lifecycle rule to remove them).
    assert!(report["delete_markers"].as_u64().unwrap() > 0, "{report}");
    assert!(versions.iter().any(|v| v["latest"] == false));
    // After the probe's refused deletes, the tables are as they were.
    verify(&cfg, whs);
}

/// The `event_id`s of NDJSON `lines`.
fn events_ids(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}
