//! `custody retention` and the retention job of `custody run`: applying every tenant's
//! retention policy ([`custody_operators::retention`]).
//!
//! An application plans what expired at `now` under the warehouse's writer lock, then runs
//! the pipeline over one `RETENTION_APPLIED` event per tenant with something to remove; the
//! sink commits the removal with that epoch. The views are rebuilt from the retained events in
//! that run (their snapshots and the rows served from them hold expired data, so they are
//! deleted first), and their changelog is rewritten from the rebuilt state.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use custody_operators::retention::{Job, Plan, Policies, TenantPlan, plan};
use custody_operators::sinks::iceberg::Warehouse;
use custody_schemas::time::format_rfc3339;
use serde_json::{Value, json};

use crate::config::Config;

/// What an application did (or, dry, would do).
#[derive(Debug)]
pub struct Applied {
    /// The plan.
    pub plan: Plan,
    /// Whether it was committed.
    pub committed: bool,
}

/// Plans the application of `config`'s policies at `now_us` and, unless `dry_run`, commits
/// it, recording one `RETENTION_APPLIED` event per tenant it touches (by `requested_by`).
pub fn apply(
    config: &Config,
    warehouse: &Path,
    now_us: i64,
    requested_by: &str,
    dry_run: bool,
) -> anyhow::Result<Applied> {
    let policies = config.retention_policies()?;
    let lock = Arc::new(crate::dataflow::lock_warehouse(warehouse)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plan = runtime.block_on(async {
        let warehouse = Warehouse::open(warehouse).await?;
        plan(&warehouse, &policies, now_us).await
    })?;
    drop(runtime);
    if dry_run || plan.is_empty() {
        return Ok(Applied {
            plan,
            committed: false,
        });
    }
    let events: Vec<Value> = plan
        .tenants
        .iter()
        .map(|(tenant, t)| {
            crate::admin::custody_event(
                tenant,
                requested_by,
                "RETENTION_APPLIED",
                payload(t, requested_by),
            )
            .1
        })
        .collect();
    forget_views(warehouse)?;
    let job = Job {
        plan,
        history: Default::default(),
    };
    crate::admin::append_events(config, warehouse, &events, Some(job.clone()), Some(lock))
        .context("applying retention")?;
    Ok(Applied {
        plan: job.plan,
        committed: true,
    })
}

/// The `RETENTION_APPLIED` payload of `t`.
fn payload(t: &TenantPlan, requested_by: &str) -> Value {
    json!({
        "retention_days": t.policy.days.unwrap_or(0),
        "event_type_days": t.policy.event_type_days,
        "cutoff": format_rfc3339(t.cutoff_us.max(0)),
        "expired_events": t.events,
        "expired_ranges": t.ranges,
        "expired_quarantine": t.quarantine.len(),
        "expired_vault": t.vault,
        "held_events": t.held,
        "requested_by": requested_by,
    })
}

/// Deletes what the views kept outside the tables: their state snapshots, the coverage saved
/// beside them, and the retired rows served from the warehouse. The next run rebuilds all of
/// it from the events (the retained ones).
fn forget_views(warehouse: &Path) -> anyhow::Result<()> {
    let snapshots = warehouse.join("snapshots");
    if let Ok(entries) = std::fs::read_dir(&snapshots) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // The heads files beside them hold hashes only, and a restart needs them.
            if name.starts_with("epoch-") || name.starts_with("coverage-") {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    let served = warehouse.join("served");
    if served.exists() {
        std::fs::remove_dir_all(&served)
            .with_context(|| format!("removing {}", served.display()))?;
    }
    Ok(())
}

/// One line per tenant of `plan`, for people.
pub fn describe(plan: &Plan, policies: &Policies) -> Vec<String> {
    let mut out = Vec::new();
    for (tenant, t) in &plan.tenants {
        out.push(format!(
            "{tenant}: {} events before {} ({} ranges), {} quarantined records, {} vault entries, \
             {} held events kept (policy: {})",
            t.events,
            format_rfc3339(t.cutoff_us.max(0)),
            t.ranges.len(),
            t.quarantine.len(),
            t.vault,
            t.held,
            policy_text(policies.of(tenant)),
        ));
    }
    if !plan.unowned_quarantine.is_empty() {
        out.push(format!(
            "(no tenant): {} quarantined records (policy: {})",
            plan.unowned_quarantine.len(),
            policy_text(&policies.default)
        ));
    }
    out
}

/// A policy for people: `400 days`, `forever; MODEL_DECISION 90 days`.
pub fn policy_text(p: &custody_operators::retention::Policy) -> String {
    let mut text = match p.days {
        Some(d) => format!("{d} days"),
        None => "forever".to_string(),
    };
    for (t, d) in &p.event_type_days {
        text.push_str(&format!("; {t} {d} days"));
    }
    text
}
