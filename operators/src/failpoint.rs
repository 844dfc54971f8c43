//! Named crash points for recovery tests.
//!
//! `CUSTODY_FAILPOINT=NAME@EPOCH` makes the process halt (print a line to stderr, then sleep
//! forever, waiting for `kill -9`) when it reaches point `NAME` while handling epoch `EPOCH`;
//! `CUSTODY_FAILPOINT=NAME#N` when it reaches `NAME` for the `N`th time (from 1) in this
//! process. With the suffix `!panic` (`NAME#N!panic`) the point panics instead of halting, to
//! test that a panicking thread ends the process. The points are listed by [`points`]. Unset, a point costs one comparison.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use custody_schemas::tables;

use crate::record::Epoch;

/// The tables an epoch's commit touches after its `custody.epochs` row, in order: every
/// table but the commit log itself, in [`tables::ALL_TABLES`] order.
pub fn committed_tables() -> impl Iterator<Item = &'static str> {
    tables::ALL_TABLES
        .into_iter()
        .filter(|t| *t != tables::EPOCHS)
}

/// Every failpoint, in the order an epoch passes them: `commit-start`, `files-written` (every
/// data file written, nothing committed), `after-commit:epochs` (the commit point), then
/// `before-commit:T` and `after-commit:T` for each table `T` of [`committed_tables`] (written to
/// or not), and `before-ack`.
pub fn points() -> Vec<String> {
    let mut out = vec![
        "commit-start".to_string(),
        "files-written".to_string(),
        "after-commit:epochs".to_string(),
    ];
    for t in committed_tables() {
        out.push(format!("before-commit:{t}"));
        out.push(format!("after-commit:{t}"));
    }
    out.push("before-ack".to_string());
    out
}

/// A point inside a timely worker: the hash chain, as it appends an epoch's events.
pub const IN_WORKER: &str = "hash-chain";

enum When {
    Epoch(Epoch),
    Nth(u64),
}

/// Whether an armed point panics rather than halts.
static PANICS: OnceLock<bool> = OnceLock::new();

fn armed() -> Option<&'static (String, When)> {
    static ARMED: OnceLock<Option<(String, When)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("CUSTODY_FAILPOINT").ok()?;
            let (spec, panics) = match spec.strip_suffix("!panic") {
                Some(s) => (s.to_string(), true),
                None => (spec, false),
            };
            let _ = PANICS.set(panics);
            if let Some((name, nth)) = spec.rsplit_once('#') {
                return Some((name.to_string(), When::Nth(nth.parse().ok()?)));
            }
            let (name, epoch) = spec.rsplit_once('@')?;
            Some((name.to_string(), When::Epoch(epoch.parse().ok()?)))
        })
        .as_ref()
}

/// [`hit`] for `STAGE:TABLE`, formatting the name only when a failpoint is armed.
pub fn hit_table(stage: &str, table: &str, epoch: Epoch) {
    if armed().is_some() {
        hit(&format!("{stage}:{table}"), epoch);
    }
}

/// Halts the process if failpoint `name` is armed for `epoch` (or for this hit).
pub fn hit(name: &str, epoch: Epoch) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((armed, when)) = armed() else {
        return;
    };
    if armed != name {
        return;
    }
    let fire = match when {
        When::Epoch(at) => *at == epoch,
        When::Nth(n) => HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n,
    };
    if fire {
        if PANICS.get().copied().unwrap_or(false) {
            // Panic: this is the failpoint's purpose (testing that panics end the process).
            panic!("custody: failpoint {name}@{epoch} reached; panicking");
        }
        eprintln!("custody: failpoint {name}@{epoch} reached; halting for kill -9");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
