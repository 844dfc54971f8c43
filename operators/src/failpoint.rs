//! Named crash points for recovery tests.
//!
//! `CUSTODY_FAILPOINT=NAME@EPOCH` makes the process halt (print a line to stderr, then sleep
//! forever, waiting for `kill -9`) when it reaches point `NAME` while handling epoch `EPOCH`.
//! The points are listed in [`POINTS`]. Unset, a point costs one comparison.

use std::sync::OnceLock;
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

fn armed() -> Option<&'static (String, Epoch)> {
    static ARMED: OnceLock<Option<(String, Epoch)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("CUSTODY_FAILPOINT").ok()?;
            let (name, epoch) = spec.rsplit_once('@')?;
            Some((name.to_string(), epoch.parse().ok()?))
        })
        .as_ref()
}

/// Halts the process if failpoint `name` is armed for `epoch`.
pub fn hit(name: &str, epoch: Epoch) {
    if let Some((armed, at)) = armed()
        && armed == name
        && *at == epoch
    {
        eprintln!("custody: failpoint {name}@{epoch} reached; halting for kill -9");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
