//! Retires drift facts whose windows are older than any baseline still needs, keeping what
//! the alerts need of them in a few banked facts, and computes each agent's alerts over the
//! facts it keeps: drift's state is bounded by windows kept per agent, not by event time.
//!
//! # Inputs
//! `((tenant_id, agent_id), DriftFact)` insertions (and, from a snapshot, the kept facts with
//! their multiplicities), exchanged by `(tenant, agent)`; the driver's ticks (live epochs).
//!
//! # Outputs ([`DriftOut`])
//! `Update`s: the same facts as a collection, less those of retired windows; for each agent whose
//! newest window is `m` and baseline `n`, windows before `m - 2n` are retired:
//! - `Event`, `ToolResult`, `Review` facts of those windows are retracted;
//! - a model's `Model` facts are retracted except at its first window;
//! - `Tool` facts are retracted into `RetiredCalls` (their count) and, at the tool's first
//!   window, a `FirstTool`;
//! - `First` (the agent's first window with events, results or reviews) is kept, and `Horizon(m - n)`: alerts are reported
//!   only for windows whose whole baseline is kept, so they equal those computed over every
//!   fact.
//!
//! `Alert`s: the changes of each agent's alerts ([`super::alerts::detect`] over its kept facts,
//! and its horizon), as a collection: recomputed for the agents whose facts changed at an
//! epoch, equal to the differential reduce [`super::alerts::alerts`] over the `Update`s (the
//! oracle tests check both), without arranging every fact once more.
//!
//! `State`s: at ticked snapshot epochs, every kept fact with its multiplicity (the output
//! collection's contents, which is what the operator keeps: no second copy to snapshot).
//!
//! # State and its bound
//! Per agent: its facts in `2n + 1` windows, its models' and tools' first windows, a few
//! counters, and its current alerts (those of the windows from its horizon on).
//!
//! # Metrics
//! `custody_view_state{view="drift",kind="facts"}`; `custody_view_late_events_total{view="drift"}`:
//! facts of a window already retired (not applied).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use custody_operators::Metrics;
use custody_operators::record::Epoch;
use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;

use super::alerts::{AgentKey as Key, AlertOut, DriftConfig, DriftFact, agent_alerts};
use super::epoch_stash::{EpochStash, Ready};
use super::name::Name;
use super::session_scoped::hash_key;

/// What the operator sends.
#[derive(Clone, Debug)]
pub enum DriftOut {
    /// A change of the kept facts, at its epoch.
    Update(((Key, DriftFact), Epoch, isize)),
    /// A kept fact and its multiplicity, at a snapshot epoch.
    State((Key, DriftFact), isize),
    /// A change of the agent's alerts, at its epoch.
    Alert(((Key, AlertOut), Epoch, isize)),
}

/// One agent's kept facts, and its alerts over them.
#[derive(Debug, Default)]
struct Agent {
    facts: HashMap<DriftFact, isize>,
    newest: Option<i64>,
    horizon: Option<i64>,
    /// [`current_alerts`] of `facts`, as last sent.
    alerts: Vec<AlertOut>,
}

/// An agent's alerts over `facts` ([`agent_alerts`] over them in order): what the
/// differential reduce [`super::alerts::alerts`] holds for the agent (the oracle tests compare
/// the two), without arranging every fact a second time.
fn current_alerts(
    cfg: &DriftConfig,
    agent: &str,
    facts: &HashMap<DriftFact, isize>,
) -> Vec<AlertOut> {
    let mut facts: Vec<(&DriftFact, isize)> = facts.iter().map(|(f, n)| (f, *n)).collect();
    facts.sort();
    agent_alerts(cfg, agent, &facts).collect()
}

/// The changes from `old` to `new` (multisets).
fn alert_changes(old: &[AlertOut], new: &[AlertOut]) -> Vec<(AlertOut, isize)> {
    let mut changes: Vec<(AlertOut, isize)> = old
        .iter()
        .map(|a| (a.clone(), -1))
        .chain(new.iter().map(|a| (a.clone(), 1)))
        .collect();
    differential_dataflow::consolidation::consolidate(&mut changes);
    changes
}

fn add(facts: &mut HashMap<DriftFact, isize>, fact: DriftFact, n: isize) {
    match facts.entry(fact) {
        Entry::Occupied(mut o) => {
            *o.get_mut() += n;
            if *o.get() == 0 {
                o.remove();
            }
        }
        Entry::Vacant(v) if n != 0 => {
            v.insert(n);
        }
        Entry::Vacant(_) => {}
    }
}

/// The drift facts with old windows retired; see the module documentation.
pub fn drift_windows<'scope>(
    input: VecCollection<'scope, Epoch, (Key, DriftFact)>,
    ticks: StreamVec<'scope, Epoch, ()>,
    cfg: DriftConfig,
    snapshot_every: u64,
    metrics: &Metrics,
) -> StreamVec<'scope, Epoch, DriftOut> {
    let held = metrics.view_state.with_label_values(&["drift", "facts"]);
    let late = metrics.view_late_events.with_label_values(&["drift"]);
    let n = cfg.baseline_windows.max(1);
    input
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Vec<DriftOut>>, _, _, _, _>(
            ticks,
            Exchange::new(|((key, _), _, _): &((Key, DriftFact), Epoch, isize)| hash_key(key)),
            Pipeline,
            "DriftWindows",
            move |_, _| {
                let mut stash: EpochStash<((Key, DriftFact), isize)> = EpochStash::default();
                let mut agents: HashMap<Key, Agent> = HashMap::new();
                let mut total: i64 = 0;
                move |(input, frontier), (ticks, ticks_frontier), output| {
                    stash.receive_updates(input, ticks);
                    while let Some(Ready {
                        time: t,
                        cap,
                        data: inputs,
                        ticked,
                    }) = stash.next_ready(frontier, ticks_frontier)
                    {
                        let mut out: Vec<((Key, DriftFact), Epoch, isize)> = Vec::new();
                        let mut touched: Vec<Key> = Vec::new();
                        // A fact is late against the horizon as of the epoch's start: horizons
                        // come in only from a snapshot, whose facts arrive in no particular
                        // order and include models banked at windows below the horizon, so they
                        // are applied after the epoch's other facts.
                        let (horizons, facts): (Vec<_>, Vec<_>) = inputs
                            .into_iter()
                            .partition(|((_, f), _)| matches!(f, DriftFact::Horizon(_)));
                        for ((key, fact), diff) in facts.into_iter().chain(horizons) {
                            let agent = agents.entry(key).or_default();
                            match &fact {
                                DriftFact::Horizon(h) => {
                                    agent.horizon = agent.horizon.max(Some(*h));
                                }
                                _ => {
                                    if let (Some(w), Some(h)) = (fact.window(), agent.horizon)
                                        && w < h - n
                                    {
                                        late.inc();
                                        continue;
                                    }
                                }
                            }
                            if let DriftFact::Event(w) = fact {
                                agent.newest = agent.newest.max(Some(w));
                            }
                            add(&mut agent.facts, fact.clone(), diff);
                            out.push(((key, fact), t, diff));
                            touched.push(key);
                        }
                        touched.sort();
                        touched.dedup();
                        for &key in &touched {
                            // Panic-free: touched agents were inserted above.
                            let agent = agents.get_mut(&key).expect("touched");
                            let Some(newest) = agent.newest else { continue };
                            let horizon = newest - n;
                            if agent.horizon.is_some_and(|h| h >= horizon) {
                                continue;
                            }
                            // Windows before `horizon - n` go.
                            let keep_from = horizon - n;
                            let mut first_model: BTreeMap<Name, i64> = BTreeMap::new();
                            let mut first_tool: BTreeMap<Name, i64> = BTreeMap::new();
                            let mut first = None::<i64>;
                            for f in agent.facts.keys() {
                                match f {
                                    DriftFact::Model(w, m) => {
                                        let e = first_model.entry(*m).or_insert(*w);
                                        *e = (*e).min(*w);
                                    }
                                    DriftFact::Tool(w, t) | DriftFact::FirstTool(w, t) => {
                                        let e = first_tool.entry(*t).or_insert(*w);
                                        *e = (*e).min(*w);
                                    }
                                    DriftFact::Event(w)
                                    | DriftFact::ToolResult(w, _)
                                    | DriftFact::Review(w, _)
                                    | DriftFact::First(w) => {
                                        first = Some(first.map_or(*w, |f| f.min(*w)));
                                    }
                                    _ => {}
                                }
                            }
                            let retired: Vec<(DriftFact, isize)> = agent
                                .facts
                                .iter()
                                .filter(|(f, _)| f.window().is_some_and(|w| w < keep_from))
                                .map(|(f, c)| (f.clone(), *c))
                                .collect();
                            let mut changes: Vec<(DriftFact, isize)> = Vec::new();
                            for (f, c) in retired {
                                match &f {
                                    DriftFact::Model(w, m) if first_model.get(m) == Some(w) => {
                                        continue;
                                    }
                                    DriftFact::Tool(w, t) => {
                                        changes.push((DriftFact::RetiredCalls, c));
                                        if first_tool.get(t) == Some(w) {
                                            changes.push((DriftFact::FirstTool(*w, *t), 1));
                                        }
                                    }
                                    _ => {}
                                }
                                changes.push((f, -c));
                            }
                            if let Some(first) = first
                                && !agent.facts.contains_key(&DriftFact::First(first))
                            {
                                let old: Vec<DriftFact> = agent
                                    .facts
                                    .keys()
                                    .filter(|f| matches!(f, DriftFact::First(_)))
                                    .cloned()
                                    .collect();
                                changes.extend(old.into_iter().map(|f| (f, -1)));
                                changes.push((DriftFact::First(first), 1));
                            }
                            if let Some(old) = agent.horizon {
                                changes.push((DriftFact::Horizon(old), -1));
                            }
                            changes.push((DriftFact::Horizon(horizon), 1));
                            agent.horizon = Some(horizon);
                            for (f, c) in changes {
                                add(&mut agent.facts, f.clone(), c);
                                out.push(((key, f), t, c));
                            }
                        }
                        // The alerts of the agents whose facts changed; horizons first, so that
                        // the rows know an alert below the horizon is retired, not resolved.
                        let mut alerts: Vec<((Key, AlertOut), Epoch, isize)> = Vec::new();
                        for key in &touched {
                            let Some(agent) = agents.get_mut(key) else {
                                continue;
                            };
                            let now = current_alerts(&cfg, key.1.as_str(), &agent.facts);
                            for (alert, diff) in alert_changes(&agent.alerts, &now) {
                                alerts.push(((*key, alert), t, diff));
                            }
                            agent.alerts = now;
                        }
                        alerts.sort_by_key(|((_, a), _, _)| !matches!(a, AlertOut::Horizon(_)));
                        let now: i64 = agents.values().map(|a| a.facts.len() as i64).sum();
                        held.add(now - total);
                        total = now;
                        let mut session = output.session(&cap);
                        session.give_iterator(alerts.into_iter().map(DriftOut::Alert));
                        session.give_iterator(out.into_iter().map(DriftOut::Update));
                        if ticked && crate::snapshot::is_snapshot_epoch(t, snapshot_every) {
                            for (key, agent) in &agents {
                                for (fact, n) in &agent.facts {
                                    session.give(DriftOut::State((*key, fact.clone()), *n));
                                }
                            }
                        }
                    }
                }
            },
        )
}

/// The kept facts of [`drift_windows`] as a collection.
pub fn kept_facts<'scope>(
    out: StreamVec<'scope, Epoch, DriftOut>,
) -> VecCollection<'scope, Epoch, (Key, DriftFact)> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Map;
    out.flat_map(|o| match o {
        DriftOut::Update(u) => Some(u),
        _ => None,
    })
    .as_collection()
}

/// The alerts of [`drift_windows`] as a collection: per agent, what [`current_alerts`] finds.
pub fn alerts<'scope>(
    out: StreamVec<'scope, Epoch, DriftOut>,
) -> VecCollection<'scope, Epoch, (Key, AlertOut)> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Map;
    out.flat_map(|o| match o {
        DriftOut::Alert(a) => Some(a),
        _ => None,
    })
    .as_collection()
}
