//! Compaction keeps every row, every seal and every proof, bounds the files per table, and a
//! run resumes after it: a warehouse compacted continuously (every epoch) and one compacted by
//! `custody compact` between two runs both hold exactly the rows of a warehouse never
//! compacted, and all three verify.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use custody_tests::{
    custody, custody_command, generate_ndjson, manifest_dir, python, read_columns, rows,
};
use serde_json::Value;

const BATCH: &str = "400";

fn run(input: &Path, wh: &Path, compact_every: &str) -> String {
    let out = custody_command()
        .args(["run", "--input", input.to_str().unwrap()])
        .args(["--warehouse", wh.to_str().unwrap()])
        .env("CUSTODY__SERVE__LISTEN", "off")
        .env("RUST_LOG", "warn")
        .env("CUSTODY__PIPELINE__BATCH_SIZE", BATCH)
        .env("CUSTODY__VIEWS__SNAPSHOT_EVERY_EPOCHS", "3")
        .env("CUSTODY__VIEWS__CLOCK_TICK", "0s")
        .env("CUSTODY__WAREHOUSE__COMPACT_EVERY_EPOCHS", compact_every)
        .env("CUSTODY_SIGNING_KEY", "07".repeat(32))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("(balanced)"),
        "run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Live files per table, read by pyiceberg.
fn table_files(wh: &Path) -> Value {
    let out = Command::new(python())
        .arg(manifest_dir().join("py/table_files.py"))
        .arg(wh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const COMPARED: &[&str] = &[
    "events:tenant_id,seq,event_id,event_type,session_id,agent_id,user_id,event_time,\
     parent_event_id,payload,hash,source,source_offset",
    "chain_heads:tenant_id,seq,head_hash,epoch_events,merkle_range",
    "emitter_heads:tenant_id,agent_id,last_sha256",
    "checkpoints:tenant_id,tree_size,root,chain_head,key_id",
    "view_changes:view,tenant_id,key,row,diff",
];

/// Each table's rows as a sorted multiset (views netted to their current rows), and the last
/// checkpoint of each tenant (tree size, root, head).
fn contents(wh: &Path) -> BTreeMap<String, Vec<String>> {
    let tables = read_columns(wh, COMPARED);
    let mut out = BTreeMap::new();
    for spec in COMPARED {
        let table = spec.split(':').next().unwrap();
        let mut list: Vec<String> = if table == "view_changes" {
            let mut net: BTreeMap<String, i64> = BTreeMap::new();
            for r in rows(&tables, table) {
                let mut r = r.clone();
                let diff = r["diff"].as_i64().unwrap();
                r.as_object_mut().unwrap().remove("diff");
                *net.entry(r.to_string()).or_default() += diff;
            }
            net.into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|(r, n)| format!("{n} {r}"))
                .collect()
        } else if table == "checkpoints" {
            // A compaction epoch re-signs each tenant's checkpoint over the same log: compare
            // the logs' signed states.
            let distinct: std::collections::BTreeSet<String> =
                rows(&tables, table).iter().map(Value::to_string).collect();
            distinct.into_iter().collect()
        } else {
            rows(&tables, table).iter().map(Value::to_string).collect()
        };
        list.sort();
        out.insert(table.to_string(), list);
    }
    out
}

fn assert_same(got: &Path, want: &Path) {
    let (g, w) = (contents(got), contents(want));
    for (table, want_rows) in &w {
        let got_rows = &g[table];
        assert!(
            got_rows == want_rows,
            "{table}: {} rows, the uncompacted warehouse has {}",
            got_rows.len(),
            want_rows.len()
        );
    }
    assert!(!w["events"].is_empty());
}

/// `custody compact` under the runs' signing key.
fn compact(wh: &Path) -> String {
    let out = custody_command()
        .args(["compact", "--warehouse", wh.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env("CUSTODY_SIGNING_KEY", "07".repeat(32))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "compact failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// SHA-256 of every table metadata file of the warehouse, by path.
fn metadata_files(wh: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    use sha2::Digest;
    custody_tests::files_under(wh)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .map(|p| {
            let digest = sha2::Sha256::digest(std::fs::read(&p).unwrap()).to_vec();
            (p, digest)
        })
        .collect()
}

fn assert_verifies(wh: &Path) {
    let verified = custody(&["verify", "--warehouse", wh.to_str().unwrap()]);
    assert!(verified.contains("all ok"), "{verified}");
}

#[test]
fn compaction_keeps_every_row_seal_and_proof_and_bounds_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.ndjson");
    generate_ndjson(&full, 16_000, 12);
    let text = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let half = lines.len() / 2;

    // Never compacted: the reference.
    let plain = dir.path().join("plain");
    run(&full, &plain, "0");
    assert_verifies(&plain);
    let plain_files = table_files(&plain);

    // Compacted with every epoch's commit.
    let continuous = dir.path().join("continuous");
    run(&full, &continuous, "1");
    assert_verifies(&continuous);
    assert_same(&continuous, &plain);
    let files = table_files(&continuous);
    for table in [
        "events",
        "view_changes",
        "checkpoints",
        "chain_heads",
        "emitter_heads",
        "epochs",
    ] {
        let (n, before) = (
            files[table]["files"].as_u64().unwrap(),
            plain_files[table]["files"].as_u64().unwrap(),
        );
        let partitions = files[table]["partitions"].as_u64().unwrap().max(1);
        // Size tiers of four: at most three files per tier below the merge, a handful of
        // tiers at this size.
        assert!(
            n <= partitions * 8 && n < before,
            "custody.{table}: {n} files in {partitions} partitions ({before} uncompacted)"
        );
        assert!(
            files[table]["manifests"].as_u64().unwrap() <= 2 * 8,
            "custody.{table}: {}",
            files[table]
        );
    }
    assert!(
        files["events"]["spec"]
            .as_str()
            .unwrap()
            .contains("bucket[8]"),
        "{}",
        files["events"]
    );

    // Compacted offline between two runs of a growing input; the second run resumes after
    // the compaction's epoch.
    let input = dir.path().join("growing.ndjson");
    {
        let mut f = std::fs::File::create(&input).unwrap();
        for l in &lines[..half] {
            writeln!(f, "{l}").unwrap();
        }
    }
    let offline = dir.path().join("offline");
    run(&input, &offline, "0");
    let before = table_files(&offline);
    let metadata_before = metadata_files(&offline);
    let report = compact(&offline);
    assert!(report.contains("committed epoch"), "{report}");
    let after = table_files(&offline);
    // Every compacting commit writes a new metadata file: none is written over (a query
    // reading the current one would see it change under it).
    let metadata_after = metadata_files(&offline);
    for (path, digest) in &metadata_before {
        if let Some(now) = metadata_after.get(path) {
            assert_eq!(now, digest, "{} was written over", path.display());
        }
    }
    assert!(
        metadata_after
            .keys()
            .filter(|p| !metadata_before.contains_key(*p))
            .count()
            >= 2,
        "compaction's commits wrote no new metadata files"
    );
    assert!(
        after["events"]["files"].as_u64() < before["events"]["files"].as_u64(),
        "{report}\nbefore {before}\nafter {after}"
    );
    assert_verifies(&offline);
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        for l in &lines[half..] {
            writeln!(f, "{l}").unwrap();
        }
    }
    run(&input, &offline, "0");
    assert_verifies(&offline);
    // The same events, chains and views as the reference (which read the same lines from
    // another path: the source column differs, so compare without it).
    let tables = read_columns(&offline, COMPARED);
    let reference = read_columns(&plain, COMPARED);
    let events = |t: &Value| -> Vec<String> {
        let mut out: Vec<String> = rows(t, "events")
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("source");
                r.to_string()
            })
            .collect();
        out.sort();
        out
    };
    assert!(
        events(&tables) == events(&reference),
        "events after compact and resume differ from the reference"
    );
    let heads = |t: &Value| -> BTreeMap<String, (u64, String, String)> {
        let mut out: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
        for r in rows(t, "checkpoints") {
            let this = (
                r["tree_size"].as_u64().unwrap(),
                r["root"].to_string(),
                r["chain_head"].to_string(),
            );
            let e = out.entry(r["tenant_id"].to_string()).or_default();
            if this.0 >= e.0 {
                *e = this;
            }
        }
        out
    };
    assert_eq!(
        heads(&tables),
        heads(&reference),
        "the tenants' signed logs differ"
    );
    // Compacting twice in a row is fine, and a compacted warehouse serves every proof: the
    // verifier checked each event's inclusion in its tenant's signed tree above.
    let again = compact(&offline);
    assert!(again.contains("committed epoch"), "{again}");
    assert_verifies(&offline);
}
