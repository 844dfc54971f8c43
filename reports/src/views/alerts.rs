//! Drift and anomaly alerts per tenant and agent, against a rolling baseline.
//!
//! Event time is cut into windows (`window`, default one hour). For each window of an agent,
//! the `baseline_windows` windows before it are its baseline:
//! - `tool_failure_rate`: the window's failed tool results over all results rose more than
//!   `rate_increase_permille` above the baseline's rate;
//! - `override_rate`: the same for human reviews that rejected or modified the agent's proposal;
//! - `volume_spike`: the window holds more than `volume_factor` times the baseline's mean
//!   events per window and four standard deviations above it (both at least `min_volume`);
//! - `model_version_change`: a model version the agent had not used before, after its first
//!   window;
//! - `unseen_tool`: a tool the agent first used after its baseline period, once it had made
//!   `2 × min_samples` tool calls (so that sparse agents do not page anyone).
//!
//! Rates need `min_samples` results (or reviews) both in the window and in the baseline.
//!
//! # Inputs
//! `((tenant_id, agent_id), DriftFact)`, one per event; facts carry their window, not their
//! time, so equal facts consolidate and the state is per window, not per event.
//!
//! The facts go to [`super::drift_windows`], which retires windows older than the baselines
//! need, sets the agent's horizon and runs [`detect`] over what it keeps: alerts are computed
//! for windows at or after the horizon, where they equal those computed over every fact.
//!
//! # Outputs
//! `((tenant_id, agent_id), AlertOut)`: every anomaly found, and the agent's horizon;
//! [`alert_rows`] makes them rows keyed `kind/agent_id/subject` (or window). An alert is raised
//! when its row is inserted and resolved when it is retracted (the window's rate went back
//! down as late events arrived); `pipeline` sends both to Alertmanager and the alerts topic.
//! An alert whose window falls below the horizon is retired: final, served from the
//! warehouse.
//!
//! # State
//! In [`super::drift_windows`]: per agent, the facts of the windows kept (counts per window
//! and kind, models and tools seen), its alerts of those windows, and the horizon;
//! [`alert_rows`] keeps each agent's horizon.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use custody_operators::record::{ChainedEvent, Epoch, ViewId, ViewUpdate};
use custody_schemas::PayloadFacts;
use differential_dataflow::VecCollection;

use super::name::Name;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

/// Alert settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftConfig {
    /// Window length, micros.
    pub window_us: i64,
    /// Windows in the baseline.
    pub baseline_windows: i64,
    /// Least results or reviews, in the window and in the baseline, for a rate alert.
    pub min_samples: i64,
    /// Rate rise that raises an alert, per mille.
    pub rate_increase_permille: i64,
    /// Volume multiple that raises an alert.
    pub volume_factor: f64,
    /// Least events in a window for a volume alert.
    pub min_volume: i64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window_us: 3_600_000_000,
            baseline_windows: 6,
            min_samples: 20,
            rate_increase_permille: 150,
            volume_factor: 3.0,
            min_volume: 50,
        }
    }
}

/// What the view keeps of an event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DriftFact {
    /// Any event.
    Event(i64),
    /// A tool result; whether it failed.
    ToolResult(i64, bool),
    /// A human review; whether it overrode the agent.
    Review(i64, bool),
    /// A model decision by `model_id@model_version`.
    Model(i64, Name),
    /// A tool call.
    Tool(i64, Name),
    /// The agent's first window (kept when older windows are retired).
    First(i64),
    /// Windows before this one are retired: no alert is reported for them.
    Horizon(i64),
    /// Tool calls in retired windows (its multiplicity is their number).
    RetiredCalls,
    /// A tool's first window, after that window was retired.
    FirstTool(i64, Name),
}

impl DriftFact {
    /// The window the fact belongs to, for those that retire with their window.
    pub fn window(&self) -> Option<i64> {
        match self {
            DriftFact::Event(w)
            | DriftFact::ToolResult(w, _)
            | DriftFact::Review(w, _)
            | DriftFact::Model(w, _)
            | DriftFact::Tool(w, _) => Some(*w),
            _ => None,
        }
    }
}

/// A drift key: `(tenant, agent)`.
pub type AgentKey = (Name, Name);

/// The facts of `e`: always `Event`, plus one for the types the alerts read.
pub fn facts(cfg: &DriftConfig, e: &ChainedEvent) -> Vec<(AgentKey, DriftFact)> {
    let ev = &e.event;
    let w = ev.timestamp_us.div_euclid(cfg.window_us.max(1));
    let key = (Name::new(ev.tenant_id.as_str()), Name::new(&ev.agent_id));
    let mut out = vec![(key, DriftFact::Event(w))];
    let extra = match &ev.facts {
        PayloadFacts::ToolResult { error } => Some(DriftFact::ToolResult(w, *error)),
        PayloadFacts::Review { decision, .. } => Some(DriftFact::Review(
            w,
            matches!(decision.as_str(), "reject" | "modify"),
        )),
        PayloadFacts::Model {
            model_id,
            model_version,
        } => Some(DriftFact::Model(
            w,
            Name::new(&format!("{model_id}@{model_version}")),
        )),
        PayloadFacts::ToolCall { tool_name, .. } => Some(DriftFact::Tool(w, Name::new(tool_name))),
        _ => None,
    };
    out.extend(extra.map(|f| (key, f)));
    out
}

/// The alert kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Tool failures rose.
    ToolFailureRate,
    /// Human overrides rose.
    OverrideRate,
    /// Event volume spiked.
    VolumeSpike,
    /// A new model version.
    ModelVersionChange,
    /// A tool never used before.
    UnseenTool,
}

impl AlertKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ToolFailureRate => "tool_failure_rate",
            AlertKind::OverrideRate => "override_rate",
            AlertKind::VolumeSpike => "volume_spike",
            AlertKind::ModelVersionChange => "model_version_change",
            AlertKind::UnseenTool => "unseen_tool",
        }
    }

    /// `warning` or `critical`.
    pub fn severity(self) -> &'static str {
        match self {
            AlertKind::ToolFailureRate | AlertKind::OverrideRate => "critical",
            _ => "warning",
        }
    }
}

/// One row of the alerts view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alert {
    /// What was found.
    pub kind: AlertKind,
    /// `warning` or `critical`.
    pub severity: String,
    /// The agent.
    pub agent_id: String,
    /// The window it was found in, start, UTC micros.
    pub window_start_us: i64,
    /// The measured value (per mille for rates, events for volume).
    pub value: i64,
    /// The baseline it was compared with, same unit.
    pub baseline: i64,
    /// The model version or tool, for those kinds.
    pub subject: Option<String>,
    /// For people.
    pub summary: String,
}

impl Alert {
    /// The window it was found in.
    pub fn window(&self, cfg: &DriftConfig) -> i64 {
        self.window_start_us.div_euclid(cfg.window_us.max(1))
    }

    /// The row key within the tenant.
    pub fn key(&self) -> String {
        match &self.subject {
            Some(s) => format!("{}/{}/{s}", self.kind.as_str(), self.agent_id),
            None => format!(
                "{}/{}/{}",
                self.kind.as_str(),
                self.agent_id,
                self.window_start_us
            ),
        }
    }
}

#[derive(Default)]
struct Window {
    events: i64,
    results: i64,
    failures: i64,
    reviews: i64,
    overrides: i64,
}

/// The alerts of one agent from its facts.
pub fn detect(cfg: &DriftConfig, agent: &str, facts: &[(&DriftFact, isize)]) -> Vec<Alert> {
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    let mut models: BTreeMap<&str, i64> = BTreeMap::new();
    let mut tools: BTreeMap<&str, i64> = BTreeMap::new();
    let mut calls_per_window: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut banked_first, mut retired_calls) = (None::<i64>, 0i64);
    for (fact, n) in facts {
        let n = *n as i64;
        match fact {
            DriftFact::First(w) => banked_first = Some(banked_first.map_or(*w, |f| f.min(*w))),
            DriftFact::Horizon(_) => {}
            DriftFact::RetiredCalls => retired_calls += n,
            DriftFact::FirstTool(w, t) => {
                let first = tools.entry(t.as_str()).or_insert(*w);
                *first = (*first).min(*w);
            }
            DriftFact::Event(w) => windows.entry(*w).or_default().events += n,
            DriftFact::ToolResult(w, failed) => {
                let x = windows.entry(*w).or_default();
                x.results += n;
                x.failures += if *failed { n } else { 0 };
            }
            DriftFact::Review(w, overridden) => {
                let x = windows.entry(*w).or_default();
                x.reviews += n;
                x.overrides += if *overridden { n } else { 0 };
            }
            DriftFact::Model(w, m) => {
                let first = models.entry(m.as_str()).or_insert(*w);
                *first = (*first).min(*w);
            }
            DriftFact::Tool(w, t) => {
                *calls_per_window.entry(*w).or_default() += n;
                let first = tools.entry(t.as_str()).or_insert(*w);
                *first = (*first).min(*w);
            }
        }
    }
    let Some(&first) = windows.keys().next() else {
        return Vec::new();
    };
    let first = banked_first.map_or(first, |f| f.min(first));
    let n = cfg.baseline_windows.max(1);
    let mut alerts = Vec::new();
    let alert =
        |kind: AlertKind, w: i64, value, baseline, subject: Option<String>, summary| Alert {
            kind,
            severity: kind.severity().to_string(),
            agent_id: agent.to_string(),
            window_start_us: w * cfg.window_us,
            value,
            baseline,
            subject,
            summary,
        };
    for (&w, cur) in windows.range(first + n..) {
        let base: Vec<&Window> = windows.range(w - n..w).map(|(_, x)| x).collect();
        let sum = |f: fn(&Window) -> i64| base.iter().map(|x| f(x)).sum::<i64>();
        let mean_events = sum(|x| x.events) as f64 / n as f64;
        // The baseline's spread, counting windows with no events as zero.
        let spread = ((w - n..w)
            .map(|b| {
                let e = windows.get(&b).map_or(0, |x| x.events) as f64 - mean_events;
                e * e
            })
            .sum::<f64>()
            / n as f64)
            .sqrt();
        // Only against an established baseline, and beyond its usual spread: a sparse or
        // bursty agent's busy hour is not a spike.
        if cur.events >= cfg.min_volume
            && sum(|x| x.events) >= cfg.min_volume
            && cur.events as f64 > cfg.volume_factor * mean_events
            && cur.events as f64 > mean_events + 4.0 * spread
        {
            alerts.push(alert(
                AlertKind::VolumeSpike,
                w,
                cur.events,
                mean_events.round() as i64,
                None,
                format!(
                    "{agent}: {} events in the window against a baseline of {:.0} per window",
                    cur.events, mean_events
                ),
            ));
        }
        for (kind, num, den, what) in [
            (
                AlertKind::ToolFailureRate,
                (cur.failures, sum(|x| x.failures)),
                (cur.results, sum(|x| x.results)),
                "tool failure rate",
            ),
            (
                AlertKind::OverrideRate,
                (cur.overrides, sum(|x| x.overrides)),
                (cur.reviews, sum(|x| x.reviews)),
                "human override rate",
            ),
        ] {
            if den.0 < cfg.min_samples || den.1 < cfg.min_samples {
                continue;
            }
            let (rate, base_rate) = (num.0 * 1000 / den.0, num.1 * 1000 / den.1);
            if rate - base_rate > cfg.rate_increase_permille {
                alerts.push(alert(
                    kind,
                    w,
                    rate,
                    base_rate,
                    None,
                    format!(
                        "{agent}: {what} {:.1}% against a baseline of {:.1}%",
                        rate as f64 / 10.0,
                        base_rate as f64 / 10.0
                    ),
                ));
            }
        }
    }
    let mut by_window: Vec<(i64, &str)> = models.iter().map(|(m, w)| (*w, *m)).collect();
    by_window.sort();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (w, model) in by_window {
        if w > first {
            let before: Vec<&str> = seen.iter().copied().collect();
            alerts.push(alert(
                AlertKind::ModelVersionChange,
                w,
                0,
                0,
                Some(model.to_string()),
                format!(
                    "{agent} started using {model} (before: {})",
                    if before.is_empty() {
                        "none".to_string()
                    } else {
                        before.join(", ")
                    }
                ),
            ));
        }
        seen.insert(model);
    }
    for (tool, w) in tools {
        // Only once the agent's tool use is established (enough calls before that a tool
        // it uses routinely would have shown up).
        let calls_before: i64 =
            retired_calls + calls_per_window.range(..w).map(|(_, c)| c).sum::<i64>();
        if w >= first + n && calls_before >= 2 * cfg.min_samples {
            alerts.push(alert(
                AlertKind::UnseenTool,
                w,
                0,
                0,
                Some(tool.to_string()),
                format!("{agent} called {tool} for the first time, after its baseline period"),
            ));
        }
    }
    // Windows before the horizon lack part of their baseline: their alerts are not reported
    // (the changelog keeps those it reported while they were current).
    if let Some(h) = horizon(facts) {
        alerts.retain(|a| a.window(cfg) >= h);
    }
    alerts
}

/// What the view holds per agent: its alerts, and the window below which they are retired.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlertOut {
    /// An alert of a window at or after the horizon.
    Raised(Alert),
    /// The agent's horizon ([`DriftFact::Horizon`]).
    Horizon(i64),
}

/// The agent's horizon among its facts ([`DriftFact::Horizon`]), if windows were retired.
pub fn horizon(facts: &[(&DriftFact, isize)]) -> Option<i64> {
    facts
        .iter()
        .filter_map(|(f, _)| match f {
            DriftFact::Horizon(h) => Some(*h),
            _ => None,
        })
        .max()
}

/// Alerts per `(tenant, agent)`, and each agent's horizon, as a differential reduce over the
/// facts: the reference that [`super::drift_windows`]'s own alerts are tested against (it
/// computes the same without arranging the facts again).
pub fn alerts<'scope>(
    facts: VecCollection<'scope, Epoch, (AgentKey, DriftFact)>,
    cfg: DriftConfig,
) -> VecCollection<'scope, Epoch, (AgentKey, AlertOut)> {
    facts.reduce_named("Alerts", move |(_tenant, agent), input, output| {
        output.extend(agent_alerts(&cfg, agent.as_str(), input).map(|a| (a, 1)));
    })
}

/// What the view holds for an agent with `facts`: the alerts [`detect`] finds, and its
/// horizon.
pub fn agent_alerts(
    cfg: &DriftConfig,
    agent: &str,
    facts: &[(&DriftFact, isize)],
) -> impl Iterator<Item = AlertOut> {
    detect(cfg, agent, facts)
        .into_iter()
        .map(AlertOut::Raised)
        .chain(horizon(facts).map(AlertOut::Horizon))
}

/// The alerts' changes as rows of the view: an alert that leaves because its window fell
/// below the agent's horizon is retired ([`ViewUpdate::Retired`]: it stays in the lake and is
/// served from the warehouse), not resolved; every other change is a row change.
///
/// State: each agent's horizon (one integer per agent).
pub fn alert_rows<'scope>(
    alerts: VecCollection<'scope, Epoch, (AgentKey, AlertOut)>,
    cfg: DriftConfig,
) -> StreamVec<'scope, Epoch, ViewUpdate> {
    crate::changes(alerts, "AlertChanges", |x, diff| (x, diff)).unary::<CapacityContainerBuilder<
        Vec<ViewUpdate>,
    >, _, _, _>(
        Pipeline,
        "AlertRows",
        move |_, _| {
            let mut horizons: HashMap<AgentKey, i64> = HashMap::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    // A message holds one epoch's changes (`changes` sends each epoch
                    // apart), and horizons only move forward: learn them first.
                    for ((agent, out), diff) in data.iter() {
                        if let (AlertOut::Horizon(h), 1..) = (out, diff) {
                            let at = horizons.entry(*agent).or_insert(*h);
                            *at = (*at).max(*h);
                        }
                    }
                    let mut session = output.session(&cap);
                    for (((tenant_id, agent), out), diff) in data.drain(..) {
                        let AlertOut::Raised(alert) = out else {
                            continue;
                        };
                        let key = alert.key();
                        // Panic-free: an alert is plain strings and integers.
                        let row = serde_json::to_string(&alert).unwrap_or_default();
                        let window = alert.window(&cfg);
                        let below = horizons.get(&(tenant_id, agent));
                        let tenant_id = tenant_id.to_string();
                        session.give(if diff < 0 && below.is_some_and(|h| window < *h) {
                            ViewUpdate::Retired {
                                view: ViewId::Alerts,
                                tenant_id,
                                key,
                                row,
                            }
                        } else {
                            ViewUpdate::Row {
                                view: ViewId::Alerts,
                                tenant_id,
                                key,
                                row,
                                diff: diff as i64,
                            }
                        });
                    }
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::views::oracle::{lcg, run};

    type Keyed<V> = (AgentKey, V);

    fn key(tenant: &str, agent: &str) -> AgentKey {
        (Name::new(tenant), Name::new(agent))
    }

    fn cfg() -> DriftConfig {
        DriftConfig {
            window_us: 1,
            baseline_windows: 3,
            min_samples: 4,
            rate_increase_permille: 150,
            volume_factor: 2.0,
            min_volume: 5,
        }
    }

    #[test]
    fn finds_each_kind() {
        let mut facts = Vec::new();
        for w in 0..4 {
            for i in 0..10 {
                facts.push(DriftFact::Event(w));
                facts.push(DriftFact::ToolResult(w, i == 0));
                facts.push(DriftFact::Review(w, i == 0));
            }
            facts.push(DriftFact::Model(w, "m@1".into()));
            for _ in 0..3 {
                facts.push(DriftFact::Tool(w, "crm".into()));
            }
        }
        for i in 0..30 {
            facts.push(DriftFact::Event(4));
            facts.push(DriftFact::ToolResult(4, i % 2 == 0));
        }
        facts.push(DriftFact::Model(4, "m@2".into()));
        facts.push(DriftFact::Tool(4, "payments".into()));
        let refs: Vec<(&DriftFact, isize)> = facts.iter().map(|f| (f, 1)).collect();
        let kinds: BTreeSet<AlertKind> = detect(&cfg(), "a", &refs)
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                AlertKind::ToolFailureRate,
                AlertKind::VolumeSpike,
                AlertKind::ModelVersionChange,
                AlertKind::UnseenTool
            ])
        );
        // A steady agent raises nothing.
        let steady: Vec<(&DriftFact, isize)> =
            facts[..facts.len() - 62].iter().map(|f| (f, 1)).collect();
        assert!(detect(&cfg(), "a", &steady).is_empty());
    }

    #[test]
    fn oracle_matches_recomputation() {
        for seed in 1..=5u64 {
            let mut rng = lcg(seed);
            let inputs: Vec<(u64, Keyed<DriftFact>)> = (0..400)
                .map(|_| {
                    let w = (rng() % 8) as i64;
                    let fact = match rng() % 5 {
                        0 => DriftFact::Event(w),
                        1 => DriftFact::ToolResult(w, rng().is_multiple_of(2 + w as u64)),
                        2 => DriftFact::Review(w, rng().is_multiple_of(3)),
                        3 => DriftFact::Model(w, Name::new(&format!("m@{}", rng() % 3))),
                        _ => DriftFact::Tool(w, Name::new(&format!("tool{}", rng() % 4))),
                    };
                    (
                        rng() % 6,
                        (
                            key(&format!("t{}", rng() % 2), &format!("a{}", rng() % 2)),
                            fact,
                        ),
                    )
                })
                .collect();
            let states = run(inputs.clone(), 6, |c| alerts(c, cfg()));
            let mut raised = 0;
            for epoch in 0..6u64 {
                let mut by: BTreeMap<AgentKey, BTreeMap<&DriftFact, isize>> = BTreeMap::new();
                for (_, (k, f)) in inputs.iter().filter(|(t, _)| *t <= epoch) {
                    *by.entry(*k).or_default().entry(f).or_default() += 1;
                }
                let want: BTreeMap<_, isize> = by
                    .iter()
                    .flat_map(|((t, a), facts)| {
                        let refs: Vec<(&DriftFact, isize)> =
                            facts.iter().map(|(f, n)| (*f, *n)).collect();
                        detect(&cfg(), a.as_str(), &refs)
                            .into_iter()
                            .map(|al| (((*t, *a), AlertOut::Raised(al)), 1))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                raised += want.len();
                assert_eq!(states[&epoch], want, "seed {seed} epoch {epoch}");
            }
            assert!(raised > 0);
        }
    }

    /// An alert whose window falls below the horizon is retired, not resolved; one whose
    /// rate went back down is resolved.
    #[test]
    fn alerts_below_the_horizon_are_retired() {
        use differential_dataflow::input::Input as _;
        use timely::dataflow::operators::capture::{Capture, Event};
        let alert = |w: i64| Alert {
            kind: AlertKind::VolumeSpike,
            severity: "warning".into(),
            agent_id: "a".into(),
            window_start_us: w * cfg().window_us,
            value: 9,
            baseline: 1,
            subject: None,
            summary: String::new(),
        };
        let agent = || key("t", "a");
        let rx = timely::example(move |scope| {
            let (mut input, alerts) = scope.new_collection();
            let rx = alert_rows(alerts, cfg()).capture();
            input.insert((agent(), AlertOut::Raised(alert(1))));
            input.insert((agent(), AlertOut::Raised(alert(5))));
            input.insert((agent(), AlertOut::Horizon(0)));
            input.advance_to(1);
            input.remove((agent(), AlertOut::Raised(alert(1))));
            input.remove((agent(), AlertOut::Raised(alert(5))));
            input.remove((agent(), AlertOut::Horizon(0)));
            input.insert((agent(), AlertOut::Horizon(2)));
            rx
        });
        let mut seen: Vec<(u64, String, i64)> = Vec::new();
        for event in rx.try_iter() {
            if let Event::Messages(t, data) = event {
                for u in data {
                    let (what, diff) = match &u {
                        ViewUpdate::Retired { key, .. } => (format!("retired {key}"), 0),
                        ViewUpdate::Row { key, diff, .. } => (format!("row {key}"), *diff),
                        _ => unreachable!(),
                    };
                    seen.push((*t.least().unwrap(), what, diff));
                }
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (0, "row volume_spike/a/1".into(), 1),
                (0, "row volume_spike/a/5".into(), 1),
                (1, "retired volume_spike/a/1".into(), 0),
                (1, "row volume_spike/a/5".into(), -1),
            ]
        );
    }

    /// Drift facts through window retirement: at every epoch the alerts equal those computed
    /// over every fact (less the late ones, dropped) at the windows from the horizon on, and
    /// a run restored from the retained facts at any epoch goes on to the same alerts.
    #[test]
    fn retired_windows_oracle() {
        use crate::views::drift_windows::{self, DriftOut, drift_windows, kept_facts};
        use custody_operators::Metrics;
        use timely::dataflow::StreamVec;
        let n = cfg().baseline_windows;
        let epochs = 14u64;
        fn operator(c: VecCollection<'_, u64, Keyed<DriftFact>>) -> StreamVec<'_, u64, DriftOut> {
            use timely::dataflow::operators::ToStream;
            // No ticks: no snapshots (the stream closes at once, so no epoch waits on it).
            let ticks = Vec::<()>::new().to_stream(c.inner.scope());
            drift_windows(c, ticks, cfg(), 0, &Metrics::new())
        }
        fn retained(
            c: VecCollection<'_, u64, Keyed<DriftFact>>,
        ) -> VecCollection<'_, u64, Keyed<DriftFact>> {
            kept_facts(operator(c))
        }
        // The alerts the operator computes itself, and the differential reduce over the facts
        // it keeps: both must equal the oracle.
        fn own(
            c: VecCollection<'_, u64, Keyed<DriftFact>>,
        ) -> VecCollection<'_, u64, Keyed<AlertOut>> {
            drift_windows::alerts(operator(c))
        }
        fn reduced(
            c: VecCollection<'_, u64, Keyed<DriftFact>>,
        ) -> VecCollection<'_, u64, Keyed<AlertOut>> {
            alerts(retained(c), cfg())
        }
        let mut raised = 0;
        let mut retired_any = false;
        for seed in 1..=6u64 {
            let mut rng = lcg(seed);
            // Windows move forward with the epochs (two per epoch), a few arrive late.
            let inputs: Vec<(u64, Keyed<DriftFact>)> = (0..900)
                .map(|_| {
                    let epoch = rng() % epochs;
                    let late = rng().is_multiple_of(10);
                    let w = 2 * epoch as i64 + (rng() % 3) as i64
                        - if late { (rng() % 12) as i64 } else { 0 };
                    let fact = match rng() % 5 {
                        0 | 1 => DriftFact::Event(w),
                        2 => DriftFact::ToolResult(w, rng().is_multiple_of(2 + (w as u64 % 5))),
                        3 => DriftFact::Model(
                            w,
                            Name::new(&format!("m@{}", w.max(0) as u64 / 6 + rng() % 2)),
                        ),
                        _ => DriftFact::Tool(
                            w,
                            Name::new(&format!("tool{}", rng() % (2 + w.max(0) as u64 / 5))),
                        ),
                    };
                    (epoch, (key(&format!("t{}", rng() % 2), "a"), fact))
                })
                .collect();
            // The oracle: which facts are late (their window was retired before they came),
            // then `detect` over the rest, at the windows from the horizon on.
            let mut kept: Vec<(u64, Keyed<DriftFact>)> = Vec::new();
            let mut newest: BTreeMap<AgentKey, i64> = BTreeMap::new();
            for epoch in 0..epochs {
                let before = newest.clone();
                for (t, (k, f)) in inputs.iter().filter(|(t, _)| *t == epoch) {
                    let horizon = before.get(k).map(|m| m - n);
                    if let (Some(w), Some(h)) = (f.window(), horizon)
                        && w < h - n
                    {
                        continue;
                    }
                    if let DriftFact::Event(w) = f {
                        let m = newest.entry(*k).or_insert(*w);
                        *m = (*m).max(*w);
                    }
                    kept.push((*t, (*k, f.clone())));
                }
            }
            let want_at = |epoch: u64| {
                let mut by: BTreeMap<AgentKey, BTreeMap<&DriftFact, isize>> = BTreeMap::new();
                for (_, (k, f)) in kept.iter().filter(|(t, _)| *t <= epoch) {
                    *by.entry(*k).or_default().entry(f).or_default() += 1;
                }
                let mut want: BTreeMap<Keyed<AlertOut>, isize> = BTreeMap::new();
                for (k, facts) in &by {
                    let refs: Vec<(&DriftFact, isize)> =
                        facts.iter().map(|(f, n)| (*f, *n)).collect();
                    let horizon = facts
                        .keys()
                        .filter_map(|f| match f {
                            DriftFact::Event(w) => Some(*w - n),
                            _ => None,
                        })
                        .max();
                    for al in detect(&cfg(), k.1.as_str(), &refs) {
                        if horizon.is_none_or(|h| al.window_start_us >= h * cfg().window_us) {
                            want.insert((*k, AlertOut::Raised(al)), 1);
                        }
                    }
                    if let Some(h) = horizon {
                        want.insert((*k, AlertOut::Horizon(h)), 1);
                    }
                }
                want
            };
            let states = run(inputs.clone(), epochs, reduced);
            let operator_states = run(inputs.clone(), epochs, own);
            for epoch in 0..epochs {
                let want = want_at(epoch);
                raised += want.len();
                assert_eq!(states[&epoch], want, "seed {seed} epoch {epoch}");
                assert_eq!(operator_states[&epoch], want, "seed {seed} epoch {epoch}");
            }
            // Restored at `at` from what the operator retains (as a snapshot holds it).
            for at in [3u64, 8] {
                let facts = run(inputs.clone(), at + 1, retained);
                retired_any |= facts[&at]
                    .keys()
                    .any(|(_, f)| *f == DriftFact::RetiredCalls);
                // In reverse order: a snapshot's facts arrive in no particular order, so the
                // agent's horizon may come before the models banked at windows below it.
                let mut restored: Vec<(u64, Keyed<DriftFact>)> = Vec::new();
                for (fact, count) in facts[&at].iter().rev() {
                    restored.extend((0..*count).map(|_| (0, fact.clone())));
                }
                restored.extend(
                    inputs
                        .iter()
                        .filter(|(t, _)| *t > at)
                        .map(|(t, f)| (t - at, f.clone())),
                );
                let again = run(restored.clone(), epochs - at, reduced);
                let again_own = run(restored, epochs - at, own);
                for epoch in at..epochs {
                    assert_eq!(
                        again[&(epoch - at)],
                        want_at(epoch),
                        "seed {seed} restored at {at}, epoch {epoch}"
                    );
                    assert_eq!(
                        again_own[&(epoch - at)],
                        want_at(epoch),
                        "seed {seed} restored at {at}, epoch {epoch} (the operator's alerts)"
                    );
                }
            }
        }
        assert!(raised > 0 && retired_any);
    }
}
