//! The session-scoped views, kept only while their session is open: sessions, causal chains
//! and policy violations, and the tool calls' model attribution that feeds model versions.
//!
//! # Inputs
//! `((tenant_id, session_id), SessionEvent)` at each event's epoch, one per accepted event
//! (Custody's own events excepted), exchanged by session.
//!
//! # Outputs
//! - [`ViewUpdate::Row`] changes of [`ViewId::Sessions`] (key: session id),
//!   [`ViewId::CausalChains`] (key: tool call event id) and [`ViewId::PolicyViolations`] (key:
//!   `rule_id/event_id`), at the epoch of the events that changed them;
//! - [`ViewUpdate::Retired`] for every row of a session when it is retired;
//! - [`Attribution`] changes: a tool call attributed to (or moved away from) a model version,
//!   for [`super::model_versions`]. A retirement does not retract them: model use is counted
//!   for all time.
//!
//! Each session's rows are recomputed from its events when an epoch touches it (sessions hold
//! tens of events), with [`super::sessions::summarize`], [`walk`] (causal chains, walked
//! within the session) and [`super::policy_violations::evaluate`].
//!
//! # State and its bound
//! Per open session: its events ([`SessionEvent`]: the few fields the views read) and the rows
//! it last emitted. A session is retired `grace_epochs` after the epoch that ended it
//! (`TASK_COMPLETED` or `TASK_FAILED`), or `idle_epochs` after its last event if it never ends;
//! its key is then remembered (a tombstone, no events) for `tombstone_epochs`. So the state is
//! bounded by the sessions active within `max(grace, idle)` epochs, not by history.
//!
//! # Metrics
//! `custody_view_state{view="session_scoped",kind=…}`: open sessions, the events they hold,
//! tombstones; `custody_view_late_events_total{view="session_scoped"}`: events of a session
//! already retired (committed to the lake, not applied to its final rows).
//!
//! # Failure modes
//! An event of a retired session (later than its grace) is not applied: the session's final
//! rows stay as retired, and the event is counted. A parent outside the session ends a chain.

use std::collections::{BTreeMap, HashMap};

use custody_operators::Metrics;
use custody_operators::record::{ChainedEvent, Epoch, ViewId, ViewUpdate};
use custody_schemas::{EventType, PayloadFacts};
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;

use super::causal_chains::{CausalChain, Link, MAX_DEPTH, is_boundary};
use super::epoch_stash::{EpochStash, Ready};
use super::event_id::EventId;
use super::policy_violations::{PolicyFact, PolicyRule, Timed, evaluate};
use super::sessions::{SessionFact, summarize};

/// Retirement settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetireConfig {
    /// Epochs a session stays after the epoch that ended it (late events still apply).
    pub grace_epochs: u64,
    /// Epochs after its last event a session that never ends is retired.
    pub idle_epochs: u64,
    /// Epochs a retired session's key is remembered, so that its late events are counted
    /// instead of starting a new session.
    pub tombstone_epochs: u64,
}

impl Default for RetireConfig {
    fn default() -> Self {
        RetireConfig {
            grace_epochs: 2,
            idle_epochs: 500,
            tombstone_epochs: 500,
        }
    }
}

/// What the session-scoped views keep of one event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionEvent {
    /// The event.
    pub event_id: EventId,
    /// Its parent.
    pub parent: Option<EventId>,
    /// What the sessions view reads.
    pub fact: SessionFact,
    /// What the policy rules found.
    pub policy: Vec<PolicyFact>,
    /// `model_id@model_version`, for a `MODEL_DECISION`.
    pub model: Option<String>,
}

/// A session's key: `(tenant, session_id)`.
pub type SessionKey = (String, String);

impl SessionEvent {
    /// The session-scoped facts of `e`, keyed by session.
    pub fn from_event(e: &ChainedEvent, rules: &[PolicyRule]) -> (SessionKey, SessionEvent) {
        let (key, fact) = SessionFact::from_event(e);
        let ev = &e.event;
        let model = match &ev.facts {
            PayloadFacts::Model {
                model_id,
                model_version,
            } => Some(format!("{model_id}@{model_version}")),
            _ => None,
        };
        (
            key,
            SessionEvent {
                event_id: EventId::new(&ev.event_id),
                parent: ev.parent_event_id.as_deref().map(EventId::new),
                fact,
                policy: super::policy_violations::facts(rules, e)
                    .into_iter()
                    .map(|(_, f)| f)
                    .collect(),
                model,
            },
        )
    }
}

/// A tool call's attribution to a model version moved: `((tenant, model), +1 or -1)`.
pub type Attribution = ((String, String), i64);

/// What the operator sends.
#[derive(Clone, Debug)]
pub enum SessionOut {
    /// A view change or retirement.
    Update(ViewUpdate),
    /// A model attribution change.
    Attribution(Attribution),
    /// A session's state, at a snapshot epoch.
    State(SessionState),
}

/// The causal chain of the tool call `tool` among one session's events (`nodes`: event id →
/// (type, parent)): its ancestors along `parent_event_id`, nearest first, up to and including
/// the previous boundary, at most [`MAX_DEPTH`] steps.
pub fn walk(
    nodes: &HashMap<&EventId, (EventType, Option<&EventId>)>,
    tool: &EventId,
) -> CausalChain {
    let mut links = Vec::new();
    let mut current = nodes.get(tool);
    let mut depth = 0;
    while let Some((ty, parent)) = current {
        if depth > 0 && is_boundary(*ty) {
            break;
        }
        let Some(parent) = parent else { break };
        if depth == MAX_DEPTH {
            break;
        }
        depth += 1;
        current = nodes.get(parent);
        if let Some((pty, _)) = current {
            links.push(Link {
                depth,
                event_id: parent.to_string(),
                event_type: *pty,
            });
        }
    }
    CausalChain::new(&tool.to_string(), links)
}

/// An open session.
#[derive(Debug, Default)]
struct Open {
    events: Vec<SessionEvent>,
    last: Epoch,
    ended: Option<Epoch>,
    /// The rows last emitted, JSON, by view and key.
    rows: BTreeMap<(ViewId, String), String>,
    /// Tool call → the model version it is attributed to.
    attributed: BTreeMap<String, String>,
}

/// Every row of a session, from its events: `(view, key) -> JSON`, and its tool calls'
/// attribution.
pub fn session_rows(
    session_id: &str,
    events: &[SessionEvent],
) -> (BTreeMap<(ViewId, String), String>, BTreeMap<String, String>) {
    let mut rows = BTreeMap::new();
    let facts: Vec<(&SessionFact, isize)> = events.iter().map(|e| (&e.fact, 1)).collect();
    let json = |r: &dyn erased::Row| r.to_json();
    rows.insert(
        (ViewId::Sessions, session_id.to_string()),
        json(&summarize(session_id, &facts)),
    );
    let nodes: HashMap<&EventId, (EventType, Option<&EventId>)> = events
        .iter()
        .map(|e| (&e.event_id, (e.fact.event_type, e.parent.as_ref())))
        .collect();
    let models: HashMap<&EventId, &str> = events
        .iter()
        .filter_map(|e| Some((&e.event_id, e.model.as_deref()?)))
        .collect();
    let mut attributed = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.fact.event_type == EventType::ToolCalled)
    {
        let chain = walk(&nodes, &e.event_id);
        if let Some(model) = chain
            .model_decisions
            .first()
            .and_then(|d| models.get(&EventId::new(d)))
        {
            attributed.insert(e.event_id.to_string(), (*model).to_string());
        }
        rows.insert((ViewId::CausalChains, e.event_id.to_string()), json(&chain));
    }
    let policy: Vec<&PolicyFact> = events.iter().flat_map(|e| &e.policy).collect();
    let ids: Vec<(String, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e.event_id.to_string(),
                e.parent.as_ref().map(|p| p.to_string()),
            )
        })
        .collect();
    let timed: Vec<Timed<'_>> = events
        .iter()
        .zip(&ids)
        .map(|(e, (id, parent))| Timed {
            event_id: id,
            ts_us: e.fact.ts_us,
            parent: parent.as_deref(),
        })
        .collect();
    for v in evaluate(session_id, &policy, &timed) {
        rows.insert(
            (
                ViewId::PolicyViolations,
                format!("{}/{}", v.rule_id, v.event_id),
            ),
            json(&v),
        );
    }
    (rows, attributed)
}

mod erased {
    /// A row that serializes to JSON.
    pub trait Row {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Row for T {
        fn to_json(&self) -> String {
            // Panic-free: rows are plain structs of strings and integers.
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// Gauges of the operator's state.
struct Gauges {
    sessions: IntGauge,
    events: IntGauge,
    tombstones: IntGauge,
    late: prometheus::IntCounter,
}

impl Gauges {
    fn new(metrics: &Metrics) -> Gauges {
        let g = |kind| {
            metrics
                .view_state
                .with_label_values(&["session_scoped", kind])
        };
        Gauges {
            sessions: g("open_sessions"),
            events: g("events"),
            tombstones: g("tombstones"),
            late: metrics
                .view_late_events
                .with_label_values(&["session_scoped"]),
        }
    }
}

/// The exchange hash of a key (a `(tenant, key)` pair).
pub(crate) fn hash_key<K: std::hash::Hash + ?Sized>(key: &K) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// What the operator reads: an event, or a session's state from a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SessionIn {
    /// An event of a session.
    Event(SessionKey, SessionEvent),
    /// A session as it was at the snapshot.
    Restore(SessionState),
}

impl SessionIn {
    fn key(&self) -> &SessionKey {
        match self {
            SessionIn::Event(key, _) => key,
            SessionIn::Restore(s) => &s.key,
        }
    }
}

/// A session in a snapshot: open (its events, last and ending epochs) or retired (its
/// tombstone's end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The session.
    pub key: SessionKey,
    /// Its events (none for a tombstone).
    pub events: Vec<SessionEvent>,
    /// The epoch of its last event.
    pub last: Epoch,
    /// The epoch that ended it.
    pub ended: Option<Epoch>,
    /// For a retired session: until when its key is remembered.
    pub tombstone: Option<Epoch>,
}

/// Inputs waiting for their epoch to complete: its capability, the inputs, and whether the
/// clock ticked at it (a live epoch, which may snapshot).
/// The session-scoped views over `input`; see the module documentation. `ticks` (the
/// pipeline's clock, broadcast) marks live epochs: at those that are snapshot epochs
/// (`snapshot_every`), the state is sent as [`SessionOut::State`].
pub fn session_scoped<'scope>(
    input: StreamVec<'scope, Epoch, SessionIn>,
    ticks: StreamVec<'scope, Epoch, ()>,
    cfg: RetireConfig,
    snapshot_every: u64,
    metrics: &Metrics,
) -> StreamVec<'scope, Epoch, SessionOut> {
    let gauges = Gauges::new(metrics);
    input.binary_frontier(
        ticks,
        Exchange::new(|x: &SessionIn| hash_key(x.key())),
        Pipeline,
        "SessionScoped",
        move |_, _| {
            let mut stash: EpochStash<SessionIn> = EpochStash::default();
            let mut open: HashMap<SessionKey, Open> = HashMap::new();
            let mut tombstones: HashMap<SessionKey, Epoch> = HashMap::new();
            move |(input, input_frontier), (ticks, ticks_frontier), output| {
                stash.receive(input, ticks);
                while let Some(Ready {
                    time: t,
                    cap,
                    data: inputs,
                    ticked,
                }) = stash.next_ready(input_frontier, ticks_frontier)
                {
                    let mut session = output.session(&cap);
                    let mut touched: Vec<SessionKey> = Vec::new();
                    let mut restored: Vec<SessionKey> = Vec::new();
                    for input in inputs {
                        let (key, event) = match input {
                            SessionIn::Restore(state) => {
                                if let Some(until) = state.tombstone {
                                    tombstones.insert(state.key, until);
                                } else {
                                    gauges.sessions.inc();
                                    gauges.events.add(state.events.len() as i64);
                                    restored.push(state.key.clone());
                                    open.insert(
                                        state.key,
                                        Open {
                                            events: state.events,
                                            last: state.last,
                                            ended: state.ended,
                                            ..Open::default()
                                        },
                                    );
                                }
                                continue;
                            }
                            SessionIn::Event(key, event) => (key, event),
                        };
                        if tombstones.contains_key(&key) {
                            gauges.late.inc();
                            continue;
                        }
                        let s = open.entry(key.clone()).or_insert_with(|| {
                            gauges.sessions.inc();
                            Open::default()
                        });
                        if s.events.is_empty() || s.last != t {
                            touched.push(key);
                        }
                        s.last = t;
                        if matches!(
                            event.fact.event_type,
                            EventType::TaskCompleted | EventType::TaskFailed
                        ) && s.ended.is_none()
                        {
                            s.ended = Some(t);
                        }
                        s.events.push(event);
                        gauges.events.inc();
                    }
                    // A restored session's rows are served again; its attribution is already
                    // in the restored model use.
                    for key in restored {
                        if let Some(s) = open.get_mut(&key) {
                            let (rows, attributed) = session_rows(&key.1, &s.events);
                            s.attributed = attributed;
                            s.rows = BTreeMap::new();
                            for out in changes_to(&key, s, rows, false) {
                                session.give(out);
                            }
                        }
                    }
                    touched.sort();
                    touched.dedup();
                    for key in touched {
                        // Panic-free: every touched key was inserted above.
                        let s = open.get_mut(&key).expect("touched sessions are open");
                        let (rows, attributed) = session_rows(&key.1, &s.events);
                        for (tool, model) in &s.attributed {
                            if attributed.get(tool) != Some(model) {
                                session.give(SessionOut::Attribution((
                                    (key.0.clone(), model.clone()),
                                    -1,
                                )));
                            }
                        }
                        for (tool, model) in &attributed {
                            if s.attributed.get(tool) != Some(model) {
                                session.give(SessionOut::Attribution((
                                    (key.0.clone(), model.clone()),
                                    1,
                                )));
                            }
                        }
                        s.attributed = attributed;
                        for out in changes_to(&key, s, rows, true) {
                            session.give(out);
                        }
                    }
                    // Retire what is finished.
                    let due: Vec<SessionKey> = open
                        .iter()
                        .filter(|(_, s)| {
                            s.ended.is_some_and(|e| e + cfg.grace_epochs <= t)
                                || s.last + cfg.idle_epochs <= t
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in due {
                        let Some(s) = open.remove(&key) else { continue };
                        gauges.sessions.dec();
                        gauges.events.sub(s.events.len() as i64);
                        for ((view, k), row) in s.rows {
                            session.give(SessionOut::Update(ViewUpdate::Retired {
                                view,
                                tenant_id: key.0.clone(),
                                key: k,
                                row,
                            }));
                        }
                        tombstones.insert(key, t + cfg.tombstone_epochs);
                    }
                    tombstones.retain(|_, until| *until > t);
                    gauges.tombstones.set(tombstones.len() as i64);
                    if ticked && crate::snapshot::is_snapshot_epoch(t, snapshot_every) {
                        for (key, s) in &open {
                            session.give(SessionOut::State(SessionState {
                                key: key.clone(),
                                events: s.events.clone(),
                                last: s.last,
                                ended: s.ended,
                                tombstone: None,
                            }));
                        }
                        for (key, until) in &tombstones {
                            session.give(SessionOut::State(SessionState {
                                key: key.clone(),
                                events: Vec::new(),
                                last: t,
                                ended: None,
                                tombstone: Some(*until),
                            }));
                        }
                    }
                }
            }
        },
    )
}

/// The changes from a session's last emitted rows to `rows` (only insertions when `retract`
/// is false: the session was just restored, nothing emitted yet); keeps `rows` as emitted.
fn changes_to(
    key: &SessionKey,
    s: &mut Open,
    rows: BTreeMap<(ViewId, String), String>,
    retract: bool,
) -> Vec<SessionOut> {
    let mut out = Vec::new();
    let row = |view: ViewId, k: &str, row: &str, diff| {
        SessionOut::Update(ViewUpdate::Row {
            view,
            tenant_id: key.0.clone(),
            key: k.to_string(),
            row: row.to_string(),
            diff,
        })
    };
    if retract {
        for ((view, k), r) in &s.rows {
            if rows.get(&(*view, k.clone())) != Some(r) {
                out.push(row(*view, k, r, -1));
            }
        }
    }
    for ((view, k), r) in &rows {
        if s.rows.get(&(*view, k.clone())) != Some(r) {
            out.push(row(*view, k, r, 1));
        }
    }
    s.rows = rows;
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::capture::{Capture, Event};

    use super::*;
    use crate::views::oracle::lcg;
    use crate::views::policy_violations::{Action, Amount, Applies, Call, Decided, Escalated};

    const TYPES: [EventType; 6] = [
        EventType::ModelDecision,
        EventType::DecisionPoint,
        EventType::ToolCalled,
        EventType::ToolResultReceived,
        EventType::HumanReviewDecision,
        EventType::TaskInitiated,
    ];

    /// Random sessions (parents within the session, sometimes missing or forward: cycles),
    /// some ending, arriving over epochs; then the state at every epoch — the rows served
    /// (live rows, with retired rows kept as final) — equals the rows recomputed from every
    /// event, and the retired sessions are exactly those ended `grace` epochs before the end.
    #[test]
    fn oracle_matches_recomputation_with_retirement() {
        for seed in 1..=8u64 {
            let mut rng = lcg(seed);
            let epochs = 12u64;
            let cfg = RetireConfig {
                grace_epochs: 2,
                idle_epochs: 6,
                tombstone_epochs: 100,
            };
            // Sessions live for a few epochs; events of a session arrive in epochs before
            // it ends plus at most its grace (so none is late).
            let mut inputs: Vec<(u64, SessionKey, SessionEvent)> = Vec::new();
            for s in 0..12u64 {
                let key = (format!("t{}", s % 2), format!("s{s}"));
                let start = rng() % 6;
                let n = 3 + rng() % 9;
                let ends = !rng().is_multiple_of(3);
                let mut end_epoch = None;
                // The end is sometimes followed by one late event, within the grace.
                let end_at = n - 1 - rng() % 2;
                for i in 0..n {
                    let last = ends && i == end_at;
                    let ty = if last {
                        if rng().is_multiple_of(2) {
                            EventType::TaskCompleted
                        } else {
                            EventType::TaskFailed
                        }
                    } else {
                        TYPES[(rng() % 6) as usize]
                    };
                    // Half the sessions with canonical UUIDs (held as 128 bits), half with
                    // other ids (held as text).
                    let id = |i: u64| {
                        if s % 2 == 0 {
                            format!("{s:08x}-0000-4000-8000-{i:012x}")
                        } else {
                            format!("s{s}e{i}")
                        }
                    };
                    let parent = match rng() % 8 {
                        0 => None,
                        1 => Some(id(i + 1)),
                        2 => Some("missing".to_string()),
                        _ if i > 0 => Some(id(i - 1 - rng() % i.min(3))),
                        _ => None,
                    };
                    let epoch = (start + i / 3).min(epochs - 1);
                    let epoch = match end_epoch {
                        Some(e) => e + rng() % cfg.grace_epochs,
                        None => epoch,
                    };
                    if last {
                        end_epoch = Some(epoch);
                    }
                    let ts = (rng() % 1000) as i64;
                    let policy = match ty {
                        EventType::ToolCalled if rng().is_multiple_of(2) => {
                            vec![
                                PolicyFact::Call(Call {
                                    event_id: id(i),
                                    ts_us: ts,
                                    agent_id: "a".into(),
                                    action: Action {
                                        tool_name: "pay".into(),
                                        amounts: vec![(
                                            "amount".into(),
                                            Amount::new((rng() % 100) as f64),
                                        )],
                                        args: Vec::new(),
                                    },
                                }),
                                PolicyFact::Applies(Applies {
                                    rule_id: "r".into(),
                                    deny: false,
                                    event_id: id(i),
                                    ts_us: ts,
                                    tool_name: "pay".into(),
                                    agent_id: "a".into(),
                                    detail: "pay".into(),
                                }),
                            ]
                        }
                        EventType::HumanReviewDecision => {
                            vec![PolicyFact::Decided(Decided {
                                event_id: id(i),
                                escalation_id: id(i.saturating_sub(1)),
                                decision: ["approve", "reject", "modify"][(rng() % 3) as usize]
                                    .into(),
                                decided_us: ts,
                                reviewer_id: format!("r{}", rng() % 3),
                                agent_id: "a".into(),
                                modification: None,
                            })]
                        }
                        EventType::ModelDecision if rng().is_multiple_of(2) => {
                            vec![PolicyFact::Escalated(Escalated {
                                event_id: id(i),
                                presented_us: ts,
                                action: Some(Action {
                                    tool_name: "pay".into(),
                                    amounts: vec![(
                                        "amount".into(),
                                        Amount::new((rng() % 100) as f64),
                                    )],
                                    args: Vec::new(),
                                }),
                            })]
                        }
                        _ => Vec::new(),
                    };
                    inputs.push((
                        epoch.min(epochs - 1),
                        key.clone(),
                        SessionEvent {
                            event_id: EventId::new(&id(i)),
                            parent: parent.as_deref().map(EventId::new),
                            fact: SessionFact {
                                ts_us: ts,
                                event_type: ty,
                                started_by: (ty == EventType::TaskInitiated)
                                    .then(|| ("a".into(), None)),
                                tool_failed: false,
                            },
                            policy,
                            model: (ty == EventType::ModelDecision)
                                .then(|| format!("m@{}", rng() % 2)),
                        },
                    ));
                }
            }
            let feed = inputs.clone();
            let rx = timely::example(move |scope| {
                let (mut handle, stream) = scope.new_input::<Vec<SessionIn>>();
                let (_, ticks) = scope.new_input::<Vec<()>>();
                let rx = session_scoped(stream, ticks, cfg, 0, &Metrics::new()).capture();
                for epoch in 0..epochs {
                    handle.advance_to(epoch);
                    for (_, k, e) in feed.iter().filter(|(t, _, _)| *t == epoch) {
                        handle.send(SessionIn::Event(k.clone(), e.clone()));
                    }
                }
                rx
            });
            let mut updates: Vec<(u64, SessionOut)> = Vec::new();
            for event in rx.try_iter() {
                if let Event::Messages(t, data) = event {
                    let t = *t.least().unwrap();
                    updates.extend(data.into_iter().map(|d| (t, d)));
                }
            }
            for epoch in 0..epochs {
                // Served = live rows (accumulated changes) + retired rows.
                let mut live: BTreeMap<(ViewId, String, String), (String, i64)> = BTreeMap::new();
                let mut retired: BTreeMap<(ViewId, String, String), String> = BTreeMap::new();
                let mut attributions: BTreeMap<(String, String), i64> = BTreeMap::new();
                let mut retired_sessions = BTreeSet::new();
                for (t, u) in updates.iter().filter(|(t, _)| *t <= epoch) {
                    match u {
                        SessionOut::Update(ViewUpdate::Row {
                            view,
                            tenant_id,
                            key,
                            row,
                            diff,
                        }) => {
                            let e = live
                                .entry((*view, tenant_id.clone(), key.clone()))
                                .or_insert((String::new(), 0));
                            if *diff > 0 {
                                e.0 = row.clone();
                            }
                            e.1 += diff;
                        }
                        SessionOut::Update(ViewUpdate::Retired {
                            view,
                            tenant_id,
                            key,
                            row,
                        }) => {
                            assert_eq!(
                                live.remove(&(*view, tenant_id.clone(), key.clone())),
                                Some((row.clone(), 1)),
                                "retired rows are the live ones"
                            );
                            if *view == ViewId::Sessions {
                                retired_sessions.insert((tenant_id.clone(), key.clone(), *t));
                            }
                            retired.insert((*view, tenant_id.clone(), key.clone()), row.clone());
                        }
                        SessionOut::Attribution((k, d)) => {
                            *attributions.entry(k.clone()).or_default() += d;
                        }
                        _ => {}
                    }
                }
                live.retain(|_, (_, n)| *n != 0);
                let mut served: BTreeMap<(ViewId, String, String), String> = retired;
                for (k, (row, n)) in live {
                    assert_eq!(n, 1, "{k:?}");
                    served.insert(k, row);
                }
                // The oracle: every session's rows from all its events so far.
                let mut by_session: BTreeMap<SessionKey, Vec<SessionEvent>> = BTreeMap::new();
                for (_, k, e) in inputs.iter().filter(|(t, _, _)| *t <= epoch) {
                    by_session.entry(k.clone()).or_default().push(e.clone());
                }
                let mut want = BTreeMap::new();
                let mut want_attr: BTreeMap<(String, String), i64> = BTreeMap::new();
                for ((tenant, session), events) in &by_session {
                    let (rows, attributed) = session_rows(session, events);
                    for ((view, key), row) in rows {
                        want.insert((view, tenant.clone(), key), row);
                    }
                    for model in attributed.into_values() {
                        *want_attr.entry((tenant.clone(), model)).or_default() += 1;
                    }
                }
                assert_eq!(served, want, "seed {seed} epoch {epoch}");
                attributions.retain(|_, n| *n != 0);
                assert_eq!(attributions, want_attr, "seed {seed} epoch {epoch}");
                // Retired exactly when due.
                for (tenant, session, t) in &retired_sessions {
                    let events: Vec<&(u64, SessionKey, SessionEvent)> = inputs
                        .iter()
                        .filter(|(_, k, _)| k.0 == *tenant && k.1 == *session)
                        .collect();
                    let last = events.iter().map(|(t, _, _)| *t).max().unwrap();
                    let ended = events
                        .iter()
                        .filter(|(_, _, e)| {
                            matches!(
                                e.fact.event_type,
                                EventType::TaskCompleted | EventType::TaskFailed
                            )
                        })
                        .map(|(t, _, _)| *t)
                        .min();
                    assert!(
                        ended.is_some_and(|e| e + cfg.grace_epochs <= *t)
                            || last + cfg.idle_epochs <= *t,
                        "seed {seed}: {session} retired at {t}"
                    );
                }
            }
        }
    }
}
