//! Regulatory reports, rendered live from the views.
//!
//! Each report is a list of rows, one per requirement (or part of one), each with its measured
//! value, a status, and its provenance: the signed checkpoint the figures are consistent with,
//! the epochs and source offsets the tenant's view state covers, and the definitions of the
//! views it was read from. A regulator can check a row by verifying the checkpoint
//! (`custody verify`, or the inclusion and consistency proofs) and recomputing the view over
//! the events up to it.
//!
//! Reports: `eu-ai-act-art12` (record-keeping), `eu-ai-act-art14` (human oversight),
//! `eu-ai-act-retention` (Art. 19 and 26(6): logs kept at least six months), `soc2-cc7.2`
//! (monitoring for anomalies), `iso-42001` (clause 8, operation).

use std::collections::BTreeMap;

use custody_operators::checkpoint::Checkpoint;
use custody_operators::record::{Epoch, HitlStats, ViewId};
use custody_schemas::time::format_rfc3339;
use serde::Serialize;
use serde_json::{Value, json};

use crate::live::{Coverage, LiveViews};
use crate::period::ReportScope;
use crate::views::alerts::Alert;
use crate::views::hitl_groups::HitlGroupStats;
use crate::views::model_versions::ModelUsage;
use crate::views::policy_violations::{
    ACTION_AFTER_REJECTION, BEFORE_CAUSE, CONTRADICTORY_DECISIONS, OVERSIGHT_RULES, PolicyRule,
    Violation,
};
use crate::views::reviewers::ReviewerStats;
use crate::views::sessions::{SessionStatus, SessionSummary};
use crate::views::sla_breaches::SlaBreach;

/// The reports, by URL name.
pub const REPORTS: [(&str, &str); 5] = [
    (
        "eu-ai-act-art12",
        "EU AI Act Article 12: record-keeping (automatic logging over the system's lifetime)",
    ),
    ("eu-ai-act-art14", "EU AI Act Article 14: human oversight"),
    (
        "eu-ai-act-retention",
        "EU AI Act Articles 19 and 26(6): retention of automatically generated logs",
    ),
    (
        "soc2-cc7.2",
        "SOC 2 CC7.2: monitoring of system components for anomalies",
    ),
    (
        "iso-42001",
        "ISO/IEC 42001 clause 8: operational planning and control of AI systems",
    ),
];

/// How a view is defined, for the provenance of report rows.
pub fn view_definition(view: &str) -> &'static str {
    match view {
        "event_counts" => "count() of accepted events by (tenant_id, event_type)",
        "hitl_latency" => {
            "HUMAN_ESCALATION_TRIGGERED join HUMAN_REVIEW_DECISION on (tenant_id, \
             escalation_event_id); latency = decided_at - presented_at; nearest-rank p50/p95, \
             max; rubber stamp = approve under views.rubber_stamp; over_sla = latency > sla_seconds"
        }
        "hitl_groups" => {
            "hitl_latency's join grouped by (agent_id, risk_tier); override = reject or modify"
        }
        "reviewers" => {
            "hitl_latency's join grouped by the decision's reviewer_id; rubber stamps per \
             approval and overrides per review"
        }
        "sla_breaches" => {
            "HUMAN_ESCALATION_TRIGGERED antijoin HUMAN_REVIEW_DECISION where presented_at + \
             sla_seconds < pipeline clock"
        }
        "sessions" => "reduce of every event by (tenant_id, session_id)",
        "causal_chains" => {
            "iterate parent_event_id from each TOOL_CALLED up to the previous tool call, tool \
             result or task start"
        }
        "policy_violations" => {
            "policy.rules over TOOL_CALLED; approval_required: no approve/modify \
             HUMAN_REVIEW_DECISION in the session, decided at or before the call, whose \
             escalation's proposed_action (or modification) is the same tool with the same \
             arguments and amounts at least the call's; oversight rules per session: a tool \
             call after a rejection of that action, an event before its parent_event_id or a \
             decision before its escalation was presented, an escalation both approved and \
             rejected"
        }
        "alerts" => {
            "per (tenant_id, agent_id): each event-time window against the mean of the \
             drift.baseline_windows before it (failure rate, override rate, volume); first use \
             of a model version or tool"
        }
        "model_versions" => {
            "MODEL_DECISION by model_id@model_version, with the tool calls whose nearest model \
             decision (causal_chains) it made"
        }
        _ => "",
    }
}

/// Where a report row comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Provenance {
    /// The tenant's latest signed checkpoint when the report was rendered.
    pub checkpoint: Option<CheckpointRef>,
    /// The committed epochs the view state covers.
    pub epochs: Option<(Epoch, Epoch)>,
    /// Source offsets the view state covers, per partition: `[first, last]`.
    pub offsets: BTreeMap<i32, (i64, i64)>,
    /// The views read, with their definitions.
    pub views: BTreeMap<&'static str, &'static str>,
}

/// A signed checkpoint, as cited by a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckpointRef {
    /// Events in the tenant's log.
    pub tree_size: u64,
    /// Merkle root, hex.
    pub root: String,
    /// Epoch it closed.
    pub epoch: Epoch,
    /// Signing key id.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

impl From<&Checkpoint> for CheckpointRef {
    fn from(c: &Checkpoint) -> Self {
        CheckpointRef {
            tree_size: c.tree_size,
            root: c.root.clone(),
            epoch: c.epoch,
            key_id: c.key_id.clone(),
            signature: c.signature.clone(),
        }
    }
}

/// Whether a requirement is met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Evidence shows it is met.
    Met,
    /// Met, with findings a person should look at.
    Attention,
    /// Evidence shows it is not met.
    NotMet,
    /// A figure with no pass/fail.
    Info,
    /// Nothing is configured to meet it: no evidence either way, a person must set it up.
    NotConfigured,
}

/// One report row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportRow {
    /// The requirement, e.g. `Art. 14(4)(b)`.
    pub requirement: &'static str,
    /// What is measured.
    pub metric: &'static str,
    /// The measurement.
    pub value: Value,
    /// The verdict.
    pub status: Status,
    /// Where it comes from.
    pub provenance: Provenance,
}

/// A rendered report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// URL name.
    pub report: &'static str,
    /// Title.
    pub title: &'static str,
    /// Tenant.
    pub tenant_id: String,
    /// Last committed epoch the views reflect.
    pub epoch: Option<Epoch>,
    /// What a reproducible report covers (a period, as of a checkpoint); absent for the live
    /// report of the whole log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ReportScope>,
    /// Rows.
    pub rows: Vec<ReportRow>,
}

/// Everything a report reads besides the views.
#[derive(Clone, Debug, Default)]
pub struct ReportContext {
    /// The tenant's latest checkpoint.
    pub checkpoint: Option<CheckpointRef>,
    /// The policy rules in force.
    pub rules: Vec<PolicyRule>,
    /// Every tenant's retention policy.
    pub retention: custody_operators::retention::Policies,
    /// The least retention the law asks for, in days (`0`: the EU AI Act's six months).
    pub legal_minimum_days: u64,
    /// Whether a continuous verifier checks every committed epoch.
    pub continuous_verification: bool,
    /// Whether the views cover a period (part of the log) rather than the whole log.
    pub period: bool,
    /// The views' settings, to recompute them over a period.
    pub views: crate::ViewsConfig,
}

struct Inputs<'a> {
    counts: BTreeMap<String, i64>,
    hitl: HitlStats,
    groups: Vec<HitlGroupStats>,
    reviewers: Vec<ReviewerStats>,
    breaches: Vec<SlaBreach>,
    sessions: Vec<SessionSummary>,
    violations: Vec<Violation>,
    alerts: Vec<Alert>,
    models: Vec<ModelUsage>,
    coverage: Option<&'a Coverage>,
    ctx: &'a ReportContext,
    tenant: &'a str,
}

impl Inputs<'_> {
    fn row(
        &self,
        requirement: &'static str,
        metric: &'static str,
        value: Value,
        status: Status,
        views: &[&'static str],
    ) -> ReportRow {
        ReportRow {
            requirement,
            metric,
            value,
            status,
            provenance: Provenance {
                checkpoint: self.ctx.checkpoint.clone(),
                epochs: self.coverage.map(|c| c.epochs),
                offsets: self.coverage.map(|c| c.offsets.clone()).unwrap_or_default(),
                views: views.iter().map(|v| (*v, view_definition(v))).collect(),
            },
        }
    }

    fn total(&self) -> i64 {
        self.counts.values().sum()
    }
}

/// Renders report `name` for `tenant`; `None` for an unknown report or tenant.
pub fn render(name: &str, tenant: &str, live: &LiveViews, ctx: &ReportContext) -> Option<Report> {
    let (report, title) = REPORTS.iter().find(|(n, _)| *n == name)?;
    let counts = live.event_counts(tenant)?;
    let inputs = Inputs {
        counts: counts.by_type,
        hitl: live
            .hitl_latency(tenant)
            .map(|h| h.stats)
            .unwrap_or_default(),
        groups: live.rows_as(ViewId::HitlGroups, tenant),
        reviewers: live.rows_as(ViewId::Reviewers, tenant),
        breaches: live.rows_as(ViewId::SlaBreaches, tenant),
        sessions: live.rows_as(ViewId::Sessions, tenant),
        violations: live.rows_as(ViewId::PolicyViolations, tenant),
        alerts: live.rows_as(ViewId::Alerts, tenant),
        models: live.rows_as(ViewId::ModelVersions, tenant),
        coverage: live.coverage(tenant),
        ctx,
        tenant,
    };
    let rows = match *report {
        "eu-ai-act-art12" => art12(&inputs),
        "eu-ai-act-art14" => art14(&inputs),
        "eu-ai-act-retention" => retention(&inputs),
        "soc2-cc7.2" => soc2_cc72(&inputs),
        _ => iso42001(&inputs),
    };
    Some(Report {
        report,
        title,
        tenant_id: tenant.to_string(),
        epoch: live.epoch(),
        scope: None,
        rows,
    })
}

/// Renders report `name` for `tenant` from views recomputed over `scope`
/// ([`crate::period`]); the report's epoch is the cited checkpoint's.
pub fn render_scoped(
    name: &str,
    tenant: &str,
    live: &LiveViews,
    ctx: &ReportContext,
    scope: ReportScope,
) -> Option<Report> {
    let ctx = &ReportContext {
        period: scope.from.is_some() || scope.to.is_some(),
        ..ctx.clone()
    };
    let mut report = if live.has_tenant(tenant) {
        render(name, tenant, live, ctx)?
    } else {
        // A period with no events of the tenant: every view empty.
        let mut empty = LiveViews::default();
        empty.add_tenant(tenant);
        render(name, tenant, &empty, ctx)?
    };
    report.epoch = ctx.checkpoint.as_ref().map(|c| c.epoch);
    report.scope = Some(scope);
    Some(report)
}

fn integrity_row(i: &Inputs<'_>, requirement: &'static str) -> ReportRow {
    let total = i.total();
    // Events retention removed are still leaves of the log the checkpoint signs.
    let expired = i.coverage.map_or(0, |c| c.expired);
    let counted = |mut v: Value| {
        if expired > 0 {
            v["expired_events"] = json!(expired);
        }
        v
    };
    let (value, status) = match &i.ctx.checkpoint {
        // A period's events are a part of the log the checkpoint signs, read by position.
        Some(c) if i.ctx.period => (
            json!({"events_in_period": total, "checkpoint_tree_size": c.tree_size}),
            Status::Met,
        ),
        Some(c) if c.tree_size as i64 == total + expired => (
            counted(json!({"events": total, "checkpoint_tree_size": c.tree_size})),
            Status::Met,
        ),
        Some(c) => (
            counted(json!({"events": total, "checkpoint_tree_size": c.tree_size,
                   "note": "the views and the checkpoint disagree; verify the log"})),
            Status::Attention,
        ),
        None => (json!({"events": total, "checkpoint": null}), Status::NotMet),
    };
    i.row(
        requirement,
        "every recorded event is in the tenant's hash-chained Merkle log under a signed checkpoint",
        value,
        status,
        &["event_counts"],
    )
}

fn art12(i: &Inputs<'_>) -> Vec<ReportRow> {
    let total = i.total();
    let missing: Vec<&str> = [
        "TASK_INITIATED",
        "MODEL_DECISION",
        "TOOL_CALLED",
        "TOOL_RESULT_RECEIVED",
        "TASK_COMPLETED",
    ]
    .into_iter()
    .filter(|t| !i.counts.contains_key(*t))
    .collect();
    let status_count = |s: SessionStatus| i.sessions.iter().filter(|x| x.status == s).count();
    vec![
        i.row(
            "Art. 12(1)",
            "events recorded automatically, by type",
            json!({"total": total, "by_type": i.counts}),
            if total > 0 {
                Status::Met
            } else {
                Status::NotMet
            },
            &["event_counts"],
        ),
        integrity_row(i, "Art. 12(1)"),
        i.row(
            "Art. 12(2)(a)",
            "situations that may present a risk: policy violations and open alerts",
            json!({"policy_violations": i.violations.len(), "alerts": i.alerts.len()}),
            clean(i.violations.is_empty() && i.alerts.is_empty()),
            &["policy_violations", "alerts"],
        ),
        i.row(
            "Art. 12(2)(b)",
            "post-market monitoring: drift alerts by kind",
            json!(by_kind(&i.alerts)),
            Status::Info,
            &["alerts"],
        ),
        i.row(
            "Art. 12(2)(c)",
            "operation monitored per session (task history)",
            json!({
                "sessions": i.sessions.len(),
                "completed": status_count(SessionStatus::Completed),
                "failed": status_count(SessionStatus::Failed),
                "open": status_count(SessionStatus::Open),
            }),
            Status::Info,
            &["sessions"],
        ),
        i.row(
            "Art. 12(2)",
            "event types expected of an agent that were never recorded",
            json!(missing),
            clean(missing.is_empty()),
            &["event_counts"],
        ),
    ]
}

/// Met when there are no findings, attention otherwise.
fn clean(no_findings: bool) -> Status {
    if no_findings {
        Status::Met
    } else {
        Status::Attention
    }
}

fn by_kind(alerts: &[Alert]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for a in alerts {
        *m.entry(a.kind.as_str()).or_default() += 1;
    }
    m
}

fn art14(i: &Inputs<'_>) -> Vec<ReportRow> {
    let h = &i.hitl;
    let escalations = i
        .counts
        .get("HUMAN_ESCALATION_TRIGGERED")
        .copied()
        .unwrap_or(0);
    let overrides: i64 = i.groups.iter().map(|g| g.rejected + g.modified).sum();
    let reviewed: i64 = i.groups.iter().map(|g| g.stats.reviews).sum();
    let mut tiers: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for g in &i.groups {
        let t = tiers.entry(g.risk_tier.as_str()).or_default();
        t.0 += g.stats.reviews;
        t.1 += g.rejected + g.modified;
        t.2 += g.stats.rubber_stamps;
    }
    let tiers: BTreeMap<&str, Value> = tiers
        .into_iter()
        .map(|(t, (n, o, r))| (t, json!({"reviews": n, "overrides": o, "rubber_stamps": r})))
        .collect();
    let permille = |x: i64, n: i64| if n == 0 { 0 } else { x * 1000 / n };
    let mut stampers: Vec<&ReviewerStats> = i
        .reviewers
        .iter()
        .filter(|r| r.stats.rubber_stamps > 0)
        .collect();
    stampers.sort_by(|a, b| {
        (b.stats.rubber_stamps, &a.reviewer_id).cmp(&(a.stats.rubber_stamps, &b.reviewer_id))
    });
    let stampers: Vec<Value> = stampers
        .iter()
        .map(|r| {
            json!({"reviewer_id": r.reviewer_id, "approvals": r.approved,
                   "rubber_stamps": r.stats.rubber_stamps,
                   "per_mille_of_approvals": r.rubber_stamp_permille,
                   "p50_ms": r.stats.p50_ms})
        })
        .collect();
    vec![
        i.row(
            "Art. 14(1)",
            "escalations to a human, and reviews completed",
            json!({"escalations": escalations, "reviews": h.reviews}),
            if escalations == 0 || h.reviews > 0 {
                Status::Met
            } else {
                Status::NotMet
            },
            &["event_counts", "hitl_latency"],
        ),
        i.row(
            "Art. 14(4)(a)",
            "review latency presented→decided (ms)",
            json!({"p50_ms": h.p50_ms, "p95_ms": h.p95_ms, "max_ms": h.max_ms}),
            Status::Info,
            &["hitl_latency"],
        ),
        i.row(
            "Art. 14(4)(a)",
            "reviews decided after their SLA, and escalations still undecided past it",
            json!({"late_decisions": h.over_sla, "pending_past_sla": i.breaches.len()}),
            clean(h.over_sla == 0 && i.breaches.is_empty()),
            &["hitl_latency", "sla_breaches"],
        ),
        i.row(
            "Art. 14(4)(b)",
            "automation bias: approvals faster than the rubber-stamp threshold",
            json!({"rubber_stamps": h.rubber_stamps, "per_mille": permille(h.rubber_stamps, h.reviews)}),
            clean(h.rubber_stamps == 0),
            &["hitl_latency"],
        ),
        i.row(
            "Art. 14(4)(b)",
            "rubber stamps per reviewer (reviewers with any, most first)",
            json!({"reviewers": i.reviewers.len(), "with_rubber_stamps": stampers}),
            clean(stampers.is_empty()),
            &["reviewers"],
        ),
        i.row(
            "Art. 14(4)(d)",
            "humans overrode the agent (rejected or modified)",
            json!({"overrides": overrides, "per_mille": permille(overrides, reviewed)}),
            Status::Info,
            &["hitl_groups"],
        ),
        i.row(
            "Art. 14(3)",
            "oversight by risk tier",
            json!(tiers),
            Status::Info,
            &["hitl_groups"],
        ),
        oversight_rule(
            i,
            "Art. 14(4)(d)",
            "no action taken after a human rejected it",
            ACTION_AFTER_REJECTION,
        ),
        oversight_rule(
            i,
            "Art. 12(2)",
            "no event recorded before its cause, no decision before its escalation",
            BEFORE_CAUSE,
        ),
        oversight_rule(
            i,
            "Art. 14(4)(d)",
            "no escalation both approved and rejected",
            CONTRADICTORY_DECISIONS,
        ),
    ]
}

/// A row for one oversight rule: its findings (at most 20 listed) and whether there are none.
fn oversight_rule(
    i: &Inputs<'_>,
    article: &'static str,
    requirement: &'static str,
    rule: &str,
) -> ReportRow {
    let found: Vec<&Violation> = i.violations.iter().filter(|v| v.rule_id == rule).collect();
    i.row(
        article,
        requirement,
        json!({
            "rule": rule,
            "findings": found.len(),
            "first": found
                .iter()
                .take(20)
                .map(|v| json!({"event_id": v.event_id, "session_id": v.session_id, "detail": v.detail}))
                .collect::<Vec<_>>(),
        }),
        clean(found.is_empty()),
        &["policy_violations"],
    )
}

fn retention(i: &Inputs<'_>) -> Vec<ReportRow> {
    let oldest = i.sessions.iter().map(|s| s.started_us).min();
    let newest = i.sessions.iter().map(|s| s.last_us).max();
    let span_days = match (oldest, newest) {
        (Some(a), Some(b)) => (b - a) / 86_400_000_000,
        _ => 0,
    };
    let erasures = i.counts.get("DATA_ERASED").copied().unwrap_or(0);
    let applied = i.counts.get("RETENTION_APPLIED").copied().unwrap_or(0);
    let minimum = match i.ctx.legal_minimum_days {
        0 => custody_operators::retention::LEGAL_MINIMUM_DAYS,
        d => d,
    };
    let policy = i.ctx.retention.of(i.tenant);
    // Every period the policy keeps some events for, and those below the legal minimum.
    let short: BTreeMap<&str, u64> = policy
        .days
        .map(|d| ("(all events)", d))
        .into_iter()
        .chain(policy.event_type_days.iter().map(|(t, d)| (t.as_str(), *d)))
        .filter(|(_, d)| *d < minimum)
        .collect();
    let status = if !policy.expires() {
        // Keeping everything forever is not a retention policy: the report says so rather
        // than calling the requirement met.
        Status::NotConfigured
    } else if short.is_empty() && policy.days.is_some() {
        Status::Met
    } else {
        Status::NotMet
    };
    let kept = match policy.days {
        Some(d) => format!("{d} days"),
        None if policy.expires() => "forever, but for the event types listed".to_string(),
        None => "no retention policy configured (nothing expires)".to_string(),
    };
    vec![
        i.row(
            "Art. 19(1), Art. 26(6)",
            "logs kept at least six months",
            json!({
                "retention": kept,
                "retention_days": policy.days,
                "event_type_days": policy.event_type_days,
                "legal_minimum_days": minimum,
                "shorter_than_legal_minimum": short,
            }),
            status,
            &[],
        ),
        i.row(
            "Art. 19(1)",
            "retention applications recorded in the log (RETENTION_APPLIED)",
            json!({"retention_applied_events": applied}),
            Status::Info,
            &["event_counts"],
        ),
        i.row(
            "Art. 19(1)",
            "period the retained log covers",
            json!({
                "oldest_event": oldest.map(format_rfc3339),
                "newest_event": newest.map(format_rfc3339),
                "days": span_days,
            }),
            Status::Info,
            &["sessions"],
        ),
        integrity_row(i, "Art. 19(1)"),
        i.row(
            "Art. 26(6), GDPR Art. 17",
            "erasures (crypto-shredding) recorded in the log",
            json!({"data_erased_events": erasures}),
            Status::Info,
            &["event_counts"],
        ),
    ]
}

fn soc2_cc72(i: &Inputs<'_>) -> Vec<ReportRow> {
    vec![
        i.row(
            "CC7.2",
            "anomaly detection over agent behaviour: alerts by kind",
            json!(by_kind(&i.alerts)),
            clean(i.alerts.is_empty()),
            &["alerts"],
        ),
        i.row(
            "CC7.2",
            "integrity of the audit log monitored continuously",
            json!({"continuous_verification": i.ctx.continuous_verification,
                   "signed_checkpoint": i.ctx.checkpoint.is_some()}),
            if i.ctx.continuous_verification && i.ctx.checkpoint.is_some() {
                Status::Met
            } else {
                Status::NotMet
            },
            &[],
        ),
        integrity_row(i, "CC7.2"),
        violations_row(i, "CC7.2", "policy violations detected"),
        i.row(
            "CC7.2",
            "human reviews overdue",
            json!({"pending_past_sla": i.breaches.len()}),
            clean(i.breaches.is_empty()),
            &["sla_breaches"],
        ),
    ]
}

fn violations_row(i: &Inputs<'_>, requirement: &'static str, metric: &'static str) -> ReportRow {
    i.row(
        requirement,
        metric,
        json!({"violations": i.violations.len(), "by_rule": by_rule(&i.violations)}),
        clean(i.violations.is_empty()),
        &["policy_violations"],
    )
}

fn by_rule(violations: &[Violation]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for v in violations {
        *m.entry(v.rule_id.as_str()).or_default() += 1;
    }
    m
}

fn iso42001(i: &Inputs<'_>) -> Vec<ReportRow> {
    let models: Vec<Value> = i
        .models
        .iter()
        .map(|m| {
            json!({"model": format!("{}@{}", m.model_id, m.model_version), "decisions": m.decisions,
                   "tool_calls": m.tool_calls, "first_seen": format_rfc3339(m.first_seen_us),
                   "last_seen": format_rfc3339(m.last_seen_us)})
        })
        .collect();
    let rules: Vec<Value> = i
        .ctx
        .rules
        .iter()
        .map(|r| json!({"id": r.id, "description": r.description}))
        .chain(
            OVERSIGHT_RULES
                .iter()
                .map(|(id, description)| json!({"id": id, "description": description})),
        )
        .collect();
    vec![
        i.row(
            "8.1",
            "operational controls in force (policy rules evaluated in the stream)",
            json!(rules),
            if rules.is_empty() {
                Status::Attention
            } else {
                Status::Met
            },
            &[],
        ),
        violations_row(i, "8.1", "violations of the operational controls"),
        i.row(
            "8.1, A.6.2.6",
            "AI system versions in operation, with the actions attributed to each",
            json!(models),
            Status::Info,
            &["model_versions", "causal_chains"],
        ),
        i.row(
            "A.6.2.6",
            "changes in operation detected (model versions, new tools, drift)",
            json!(by_kind(&i.alerts)),
            Status::Info,
            &["alerts"],
        ),
        i.row(
            "A.6.2.8",
            "event logs recorded and protected",
            json!({"events": i.total()}),
            if i.ctx.checkpoint.is_some() {
                Status::Met
            } else {
                Status::NotMet
            },
            &["event_counts"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use custody_operators::record::{ChainedEvent, ViewUpdate, WrittenEvent};
    use custody_schemas::decode_event;

    use super::*;
    use crate::views::alerts::AlertKind;

    fn row<T: Serialize>(view: ViewId, key: &str, row: &T) -> ViewUpdate {
        ViewUpdate::Row {
            view,
            tenant_id: "acme".into(),
            key: key.into(),
            row: serde_json::to_string(row).unwrap(),
            diff: 1,
        }
    }

    fn event(offset: i64) -> ChainedEvent {
        let event = decode_event(
            br#"{"event_id":"e1","schema_version":"1.0","tenant_id":"acme","session_id":"s1",
            "agent_id":"agent-1","event_type":"TASK_FAILED","timestamp":"2026-03-08T00:00:00Z",
            "parent_event_id":null,"payload":{"reason":"r","last_state":"x"}}"#,
        )
        .unwrap();
        ChainedEvent {
            offset,
            ..ChainedEvent::unchained(event)
        }
    }

    /// A fixed view state with something to report in every row.
    fn fixture() -> (LiveViews, ReportContext) {
        let mut live = LiveViews::default();
        let t = 1_772_928_000_000_000;
        let mut updates = vec![];
        for (ty, n) in [
            ("TASK_INITIATED", 2),
            ("MODEL_DECISION", 5),
            ("TOOL_CALLED", 4),
            ("TOOL_RESULT_RECEIVED", 4),
            ("HUMAN_ESCALATION_TRIGGERED", 3),
            ("HUMAN_REVIEW_DECISION", 2),
            ("TASK_COMPLETED", 1),
        ] {
            updates.push(ViewUpdate::EventCount {
                tenant_id: "acme".into(),
                event_type: ty.into(),
                count: n,
                diff: 1,
            });
        }
        let stats = HitlStats {
            reviews: 2,
            p50_ms: 3_000,
            p95_ms: 1_200_000,
            max_ms: 1_200_000,
            rubber_stamps: 1,
            over_sla: 1,
        };
        updates.push(ViewUpdate::HitlLatency {
            tenant_id: "acme".into(),
            stats: stats.clone(),
            diff: 1,
        });
        updates.push(row(
            ViewId::HitlGroups,
            "agent-1/high",
            &HitlGroupStats {
                agent_id: "agent-1".into(),
                risk_tier: "high".into(),
                stats,
                approved: 1,
                rejected: 1,
                modified: 0,
                escalated: 0,
                override_permille: 500,
                rejection_permille: 500,
            },
        ));
        for (reviewer, reviews, approved, stamps, p50) in [
            ("reviewer-4", 1, 1, 1, 800),
            ("reviewer-7", 1, 0, 0, 1_200_000),
        ] {
            let stats = HitlStats {
                reviews,
                p50_ms: p50,
                p95_ms: p50,
                max_ms: p50,
                rubber_stamps: stamps,
                over_sla: 1 - stamps,
            };
            updates.push(row(
                ViewId::Reviewers,
                reviewer,
                &ReviewerStats::new(reviewer, stats, [approved, 1 - approved, 0, 0]),
            ));
        }
        updates.push(row(
            ViewId::SlaBreaches,
            "esc-3",
            &SlaBreach {
                escalation_event_id: "esc-3".into(),
                agent_id: "agent-1".into(),
                risk_tier: "critical".into(),
                presented_us: t,
                deadline_us: t + 300_000_000,
            },
        ));
        for (s, status, start) in [
            ("s1", SessionStatus::Completed, t),
            ("s2", SessionStatus::Open, t + 86_400_000_000 * 200),
        ] {
            updates.push(row(
                ViewId::Sessions,
                s,
                &SessionSummary {
                    session_id: s.into(),
                    agent_id: "agent-1".into(),
                    user_id: None,
                    started_us: start,
                    last_us: start + 60_000_000,
                    events: 10,
                    tool_calls: 2,
                    tool_failures: 0,
                    escalations: 1,
                    reviews: 1,
                    status,
                },
            ));
        }
        updates.push(row(
            ViewId::PolicyViolations,
            "payments-approval-over-500/e9",
            &Violation {
                rule_id: "payments-approval-over-500".into(),
                event_id: "e9".into(),
                session_id: "s2".into(),
                agent_id: "agent-1".into(),
                tool_name: "payments.refund".into(),
                at_us: t,
                detail: "no prior human approval: payments.refund with amount 900 above 500".into(),
            },
        ));
        updates.push(row(
            ViewId::PolicyViolations,
            "oversight.action-after-rejection/e12",
            &Violation {
                rule_id: ACTION_AFTER_REJECTION.into(),
                event_id: "e12".into(),
                session_id: "s3".into(),
                agent_id: "agent-2".into(),
                tool_name: "payments.refund".into(),
                at_us: t,
                detail: "payments.refund(amount=900, card=tok_1) made after reviewer-4 rejected \
                         it (decision e11, escalation e10)"
                    .into(),
            },
        ));
        updates.push(row(
            ViewId::Alerts,
            "model_version_change/agent-1/gpt-5@2026-09-15",
            &Alert {
                kind: AlertKind::ModelVersionChange,
                severity: "warning".into(),
                agent_id: "agent-1".into(),
                window_start_us: t,
                value: 0,
                baseline: 0,
                subject: Some("gpt-5@2026-09-15".into()),
                summary: "agent-1 started using gpt-5@2026-09-15 (before: gpt-5@2026-06-01)".into(),
            },
        ));
        updates.push(row(
            ViewId::ModelVersions,
            "gpt-5@2026-09-15",
            &ModelUsage {
                model_id: "gpt-5".into(),
                model_version: "2026-09-15".into(),
                decisions: 5,
                tool_calls: 4,
                agents: 1,
                first_seen_us: t,
                last_seen_us: t + 1_000_000,
            },
        ));
        live.apply(7, &updates);
        live.observe(3, &[WrittenEvent::of(&event(10))]);
        live.observe(7, &[WrittenEvent::of(&event(41))]);
        let ctx = ReportContext {
            checkpoint: Some(CheckpointRef {
                tree_size: 21,
                root: "ab".repeat(32),
                epoch: 7,
                key_id: "k1".into(),
                signature: "cd".repeat(64),
            }),
            rules: vec![crate::views::policy_violations::refund_approval_rule()],
            // The tenant keeps its events a year, but its API access records only 90 days:
            // under the legal minimum, which the retention report flags.
            retention: custody_operators::retention::Policies {
                default: custody_operators::retention::Policy {
                    days: Some(400),
                    ..Default::default()
                },
                tenants: [(
                    "acme".to_string(),
                    custody_operators::retention::Policy {
                        days: Some(365),
                        event_type_days: [("AUDIT_LOG_ACCESSED".to_string(), 90)].into(),
                    },
                )]
                .into(),
            },
            continuous_verification: true,
            ..ReportContext::default()
        };
        (live, ctx)
    }

    /// Nothing configured is not "met": the six-month minimum is met only by a policy that
    /// keeps logs at least that long, the tenant's own over the default, every event type's
    /// period included.
    #[test]
    fn retention_is_met_only_by_a_configured_policy_of_six_months() {
        use custody_operators::retention::Policy;
        let (live, mut ctx) = fixture();
        let policy = |days: Option<u64>, types: &[(&str, u64)]| Policy {
            days,
            event_type_days: types.iter().map(|(t, d)| (t.to_string(), *d)).collect(),
        };
        for (own, default, want) in [
            (None, policy(None, &[]), Status::NotConfigured),
            (None, policy(Some(30), &[]), Status::NotMet),
            (None, policy(Some(182), &[]), Status::NotMet),
            (None, policy(Some(183), &[]), Status::Met),
            (
                Some(policy(Some(90), &[])),
                policy(Some(400), &[]),
                Status::NotMet,
            ),
            (
                Some(policy(Some(400), &[])),
                policy(Some(90), &[]),
                Status::Met,
            ),
            (
                None,
                policy(Some(3650), &[("MODEL_DECISION", 30)]),
                Status::NotMet,
            ),
            (
                None,
                policy(None, &[("MODEL_DECISION", 400)]),
                Status::NotMet,
            ),
            (
                None,
                policy(Some(3650), &[("MODEL_DECISION", 200)]),
                Status::Met,
            ),
        ] {
            ctx.retention.default = default.clone();
            ctx.retention.tenants = own
                .clone()
                .map(|p| ("acme".to_string(), p))
                .into_iter()
                .collect();
            let report = render("eu-ai-act-retention", "acme", &live, &ctx).unwrap();
            assert_eq!(report.rows[0].status, want, "{own:?} over {default:?}");
        }
    }

    /// Each report equals its golden file (`UPDATE_GOLDEN=1` rewrites them after a deliberate
    /// change; review the diff).
    #[test]
    fn reports_match_golden_files() {
        let (live, ctx) = fixture();
        // At run time: a test binary built in a shared target dir from another clone of the
        // same sources carries that clone's path.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(
                || env!("CARGO_MANIFEST_DIR").into(),
                std::path::PathBuf::from,
            )
            .join("tests/golden");
        for (name, _) in REPORTS {
            let report = render(name, "acme", &live, &ctx).unwrap();
            let got = serde_json::to_string_pretty(&report).unwrap() + "\n";
            let path = dir.join(format!("{name}.json"));
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(got, want, "{name} differs from {}", path.display());
            assert!(
                report
                    .rows
                    .iter()
                    .all(|r| r.provenance.checkpoint.is_some())
            );
        }
        assert!(render("nope", "acme", &live, &ctx).is_none());
        assert!(render("iso-42001", "other", &live, &ctx).is_none());
    }
}
