//! Named crash points for recovery tests.
//!
//! `CUSTODY_FAILPOINT=NAME@EPOCH` makes the process halt (print a line to stderr, then sleep
//! forever, waiting for `kill -9`) when it reaches point `NAME` while handling epoch `EPOCH`;
//! `CUSTODY_FAILPOINT=NAME#N` when it reaches `NAME` for the `N`th time (from 1) in this
//! process. The points are listed in [`POINTS`]. Unset, a point costs one comparison.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::record::Epoch;

/// Every failpoint, in the order an epoch passes them.
pub const POINTS: &[&str] = &[
    "commit-start",
    "after-commit:events",
    "after-commit:quarantine",
    "after-commit:chain_heads",
    "after-commit:checkpoints",
    "after-commit:view_event_counts",
    "after-commit:view_hitl_latency",
    "after-commit:epochs",
    "before-ack",
];

enum When {
    Epoch(Epoch),
    Nth(u64),
}

fn armed() -> Option<&'static (String, When)> {
    static ARMED: OnceLock<Option<(String, When)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("CUSTODY_FAILPOINT").ok()?;
            if let Some((name, nth)) = spec.rsplit_once('#') {
                return Some((name.to_string(), When::Nth(nth.parse().ok()?)));
            }
            let (name, epoch) = spec.rsplit_once('@')?;
            Some((name.to_string(), When::Epoch(epoch.parse().ok()?)))
        })
        .as_ref()
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
        eprintln!("custody: failpoint {name}@{epoch} reached; halting for kill -9");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
