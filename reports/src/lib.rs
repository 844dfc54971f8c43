//! Custody's materialized compliance views, maintained incrementally with differential dataflow.
//!
//! Each view is one file under `views/`, a function from input collections to an output
//! collection, with an oracle test that the incremental result equals a from-scratch
//! recomputation at every epoch. [`render_views`] wires them to the chained event stream and
//! turns their changes into [`ViewUpdate`]s for the sink and the live serving state ([`live`]).
#![deny(missing_docs)]

pub mod document;
pub mod live;
pub mod period;
pub mod proofs;
pub mod query;
pub mod regulatory;
pub mod snapshot;
pub mod views;

use std::sync::Arc;

use custody_operators::record::{ChainedEvent, Epoch, SinkRecord, ViewId, ViewUpdate};
use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::vec::{Map, Partition};

use custody_operators::Metrics;
use snapshot::StatePart;
use views::alerts::DriftConfig;
use views::hitl_latency::{Decision, Escalation, FromEvent, HitlConfig};
use views::model_versions::ModelOut;
use views::model_versions::{ModelIn, ModelUse};
use views::name::Name;
use views::policy_violations::PolicyRule;
use views::review_sketches::{Row, SketchIn, SketchOut};
use views::reviews::{ReviewIn, ReviewOut};
use views::session_scoped::{RetireConfig, SessionEvent, SessionIn, SessionOut};

/// Turns everything `f` maps a record to (an `Option`, a `Vec`, … of `(record, diff)`) into
/// updates at the record's epoch.
pub fn updates<'scope, D, I, F>(
    stream: StreamVec<'scope, Epoch, SinkRecord>,
    name: &str,
    mut f: F,
) -> VecCollection<'scope, Epoch, D>
where
    D: Clone + 'static,
    I: IntoIterator<Item = (D, isize)>,
    F: FnMut(&SinkRecord) -> I + 'static,
{
    stream
        .unary::<CapacityContainerBuilder<Vec<(D, Epoch, isize)>>, _, _, _>(
            Pipeline,
            name,
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        // Panic: epochs are totally ordered, so every message has a least time.
                        let time = *cap.least().expect("a message has a time");
                        let mut session = output.session(&cap);
                        for record in data.iter() {
                            for (d, r) in f(record) {
                                session.give((d, time, r));
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// A stream of `(record, diff)` as a collection: each update at its message's epoch.
pub trait IntoUpdates<'scope, D> {
    /// The collection.
    fn into_updates(self) -> VecCollection<'scope, Epoch, D>;
}

impl<'scope, D: Clone + 'static> IntoUpdates<'scope, D> for StreamVec<'scope, Epoch, (D, isize)> {
    fn into_updates(self) -> VecCollection<'scope, Epoch, D> {
        self.unary::<CapacityContainerBuilder<Vec<(D, Epoch, isize)>>, _, _, _>(
            Pipeline,
            "IntoUpdates",
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        // Panic: epochs are totally ordered, so every message has a least time.
                        let time = *cap.least().expect("a message has a time");
                        output
                            .session(&cap)
                            .give_iterator(data.drain(..).map(|(d, r)| (d, time, r)));
                    });
                }
            },
        )
        .as_collection()
    }
}

/// Settings of every view.
#[derive(Clone, Debug, Default)]
pub struct ViewsConfig {
    /// HITL views.
    pub hitl: HitlConfig,
    /// Policy rules.
    pub rules: Arc<Vec<PolicyRule>>,
    /// Drift and anomaly alerts.
    pub drift: DriftConfig,
    /// When session-scoped state is retired.
    pub retire: RetireConfig,
    /// Live epochs between snapshots of the views' state (0: never).
    pub snapshot_every: u64,
}

/// The facts the views read, extracted from each event once (or read back from a snapshot).
#[derive(Clone, Debug)]
enum Fact {
    Type((Name, Name)),
    Review(ReviewIn),
    Sketch(SketchIn),
    Session(SessionIn),
    Model(((String, String), ModelIn)),
    Drift((views::alerts::AgentKey, views::alerts::DriftFact)),
}

impl Fact {
    const KINDS: u64 = 6;

    /// Its output of the partition, in declaration order.
    fn kind(&self) -> u64 {
        match self {
            Fact::Type(_) => 0,
            Fact::Review(_) => 1,
            Fact::Sketch(_) => 2,
            Fact::Session(_) => 3,
            Fact::Model(_) => 4,
            Fact::Drift(_) => 5,
        }
    }

    fn of(record: &SinkRecord, rules: &[PolicyRule], drift: &DriftConfig) -> Vec<(Fact, isize)> {
        match record {
            SinkRecord::Event(e) => Fact::of_event(e, rules, drift)
                .into_iter()
                .map(|f| (f, 1))
                .collect(),
            SinkRecord::ViewState(lines) => lines
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .filter_map(|line| match serde_json::from_slice::<StatePart>(line) {
                    Ok(part) => Some(Fact::restored(part)),
                    Err(e) => {
                        tracing::error!(error = %e, "unreadable view state in the snapshot");
                        None
                    }
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A snapshot's part as the fact (and multiplicity) it restores.
    fn restored(part: StatePart) -> (Fact, isize) {
        match part {
            StatePart::Count(k, n) => (Fact::Type(k), n),
            StatePart::Pairing(p) => (Fact::Review(ReviewIn::Restore(p)), 1),
            StatePart::Sketch(k, sketch) => (Fact::Sketch(SketchIn::Restore(k, sketch)), 1),
            StatePart::Drift(d, n) => (Fact::Drift(d), n),
            StatePart::Session(s) => (Fact::Session(SessionIn::Restore(s)), 1),
            StatePart::Model(k, u) => (Fact::Model((k, ModelIn::Restore(u))), 1),
        }
    }

    fn of_event(e: &ChainedEvent, rules: &[PolicyRule], drift: &DriftConfig) -> Vec<Fact> {
        let mut out = vec![Fact::Type((
            Name::new(e.event.tenant_id.as_str()),
            Name::new(e.event.event_type.as_str()),
        ))];
        out.extend(Escalation::from_event(e).map(|x| Fact::Review(ReviewIn::Escalation(x))));
        out.extend(Decision::from_event(e).map(|x| Fact::Review(ReviewIn::Decision(x))));
        out.extend(ModelUse::from_event(e).map(Fact::Model));
        // Custody's own events (API access, erasure) are counted, not agent sessions or drift.
        if !e.event.event_type.is_custody_action() {
            let (key, event) = SessionEvent::from_event(e, rules);
            out.push(Fact::Session(SessionIn::Event(key, event)));
            out.extend(views::alerts::facts(drift, e).into_iter().map(Fact::Drift));
        }
        out
    }
}

/// The changes of `collection` mapped by `f`, each sent at its own time.
///
/// Differential may send an update in a message whose capability is earlier than the
/// update's time (a reduce's output batch spans times). The sink commits a message with the
/// epoch of its capability, so every change is re-sent at exactly its own epoch: a view change
/// is never committed with an earlier epoch than the events it comes from.
pub fn changes<'scope, D, T, F>(
    collection: VecCollection<'scope, Epoch, D>,
    name: &str,
    mut f: F,
) -> StreamVec<'scope, Epoch, T>
where
    D: Clone + 'static,
    T: Clone + 'static,
    F: FnMut(D, isize) -> T + 'static,
{
    collection
        .inner
        .unary::<CapacityContainerBuilder<Vec<T>>, _, _, _>(Pipeline, name, |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut by_time: std::collections::BTreeMap<Epoch, Vec<T>> =
                        std::collections::BTreeMap::new();
                    for (d, time, diff) in data.drain(..) {
                        by_time.entry(time).or_default().push(f(d, diff));
                    }
                    for (time, updates) in by_time {
                        // Panic-free: differential never sends an update before its
                        // message's capability, so `time` is at or after it.
                        let at = cap.delayed(&time, output.output_index());
                        let mut session = output.session(&at);
                        for update in updates {
                            session.give(update);
                        }
                    }
                });
            }
        })
}

/// The changes of a keyed view as [`ViewUpdate::Row`]s.
fn rows<'scope, R: serde::Serialize + Clone + 'static>(
    view: ViewId,
    collection: VecCollection<'scope, Epoch, ((String, String), R)>,
) -> StreamVec<'scope, Epoch, ViewUpdate> {
    changes(
        collection,
        view.name(),
        move |((tenant_id, key), row), diff| ViewUpdate::Row {
            view,
            tenant_id,
            key,
            // Panic-free: the rows are plain structs of strings and integers.
            row: serde_json::to_string(&row).unwrap_or_default(),
            diff: diff as i64,
        },
    )
}

/// What the views read of a stream of records: every view's small facts, extracted once
/// per record (the records themselves, with their payloads, are never copied for the views).
pub struct ViewFacts<'scope>(VecCollection<'scope, Epoch, Fact>);

impl<'scope> ViewFacts<'scope> {
    /// The facts of both.
    pub fn concat(self, other: ViewFacts<'scope>) -> ViewFacts<'scope> {
        ViewFacts(self.0.concat(other.0))
    }
}

/// The views' facts of `records` (the `Event` records of the hash chain's output, and
/// `ViewState` records read back from a snapshot), which the views alone consume.
pub fn view_facts<'scope>(
    records: StreamVec<'scope, Epoch, SinkRecord>,
    cfg: &ViewsConfig,
) -> ViewFacts<'scope> {
    let (rules, drift) = (Arc::clone(&cfg.rules), cfg.drift);
    ViewFacts(updates(records, "ViewFacts", move |r| {
        Fact::of(r, &rules, &drift)
    }))
}

/// Splits `records` into themselves, moved on (to the sink), and the views' facts of them:
/// no record is cloned, as it would be for two consumers of one stream.
pub fn split_view_facts<'scope>(
    records: StreamVec<'scope, Epoch, SinkRecord>,
    cfg: &ViewsConfig,
) -> (StreamVec<'scope, Epoch, SinkRecord>, ViewFacts<'scope>) {
    use timely::dataflow::operators::OkErr;
    let (rules, drift) = (Arc::clone(&cfg.rules), cfg.drift);
    // Both sides move by value into their own streams; boxing would add an allocation per fact.
    #[allow(clippy::result_large_err)]
    let (records, facts) = records
        .flat_map(move |r| {
            let facts = Fact::of(&r, &rules, &drift);
            std::iter::once(Ok(r)).chain(facts.into_iter().map(Err))
        })
        .ok_err(|x| x);
    (records, ViewFacts(facts.into_updates()))
}

/// Builds every view over their facts ([`view_facts`], [`split_view_facts`]) and the
/// pipeline's clock; returns their changes, and their state at snapshot epochs (JSON lines of
/// [`StatePart`]s).
pub fn render_views<'scope>(
    facts: ViewFacts<'scope>,
    clock: VecCollection<'scope, Epoch, i64>,
    cfg: &ViewsConfig,
    metrics: &Metrics,
) -> (
    StreamVec<'scope, Epoch, ViewUpdate>,
    StreamVec<'scope, Epoch, Vec<u8>>,
) {
    use timely::dataflow::operators::vec::Broadcast;
    use timely::dataflow::operators::{Concat, Concatenate};
    let hitl = cfg.hitl;
    let every = cfg.snapshot_every;
    let drift = cfg.drift;
    // The clock moves at every live epoch (never at replayed ones): the views snapshot at
    // those, on every worker.
    let ticks = clock.inner.clone().map(|_| ()).broadcast();
    let mut parts = facts
        .0
        .inner
        .partition(Fact::KINDS, |(f, t, r)| (f.kind(), (f, t, r)));
    let mut next = || parts.remove(0);
    macro_rules! part {
        ($variant:ident) => {
            next()
                .flat_map(|(f, t, r)| match f {
                    Fact::$variant(x) => Some((x, t, r)),
                    _ => None,
                })
                .as_collection()
        };
    }
    macro_rules! stream {
        ($variant:ident) => {
            next().flat_map(|(f, _, _)| match f {
                Fact::$variant(x) => Some(x),
                _ => None,
            })
        };
    }
    let typed = part!(Type);
    let reviews = views::reviews::reviews(
        stream!(Review),
        ticks.clone(),
        hitl,
        cfg.retire,
        every,
        metrics,
    );
    let sketches = views::review_sketches::review_sketches(
        stream!(Sketch).concat(reviews.clone().flat_map(|o| match o {
            ReviewOut::Sketch(s) => Some(s),
            _ => None,
        })),
        ticks.clone(),
        every,
        metrics,
    );
    let latency_rows = sketches
        .clone()
        .flat_map(|o| match o {
            SketchOut::Row(Row::Tenant(tenant, stats), n) => Some(((tenant, stats), n)),
            _ => None,
        })
        .into_updates();
    let groups = sketches
        .clone()
        .flat_map(|o| match o {
            SketchOut::Row(Row::Group(key, stats), n) => Some(((key, stats), n)),
            _ => None,
        })
        .into_updates();
    let reviewers = sketches
        .clone()
        .flat_map(|o| match o {
            SketchOut::Row(Row::Reviewer(key, stats), n) => Some(((key, stats), n)),
            _ => None,
        })
        .into_updates();
    let sketch_states = sketches.flat_map(|o| match o {
        SketchOut::State(k, s) => Some(StatePart::Sketch(k, s)),
        SketchOut::Row(..) => None,
    });
    let pending = reviews
        .clone()
        .flat_map(|o| match o {
            ReviewOut::Pending(e, n) => Some((e, n)),
            _ => None,
        })
        .into_updates();
    let review_states = reviews.flat_map(|o| match o {
        ReviewOut::State(p) => Some(StatePart::Pairing(p)),
        _ => None,
    });
    let scoped = views::session_scoped::session_scoped(
        stream!(Session),
        ticks.clone(),
        cfg.retire,
        every,
        metrics,
    );
    let model_decisions = stream!(Model);
    let drift_out =
        views::drift_windows::drift_windows(part!(Drift), ticks.clone(), drift, every, metrics);
    let alerts = views::drift_windows::alerts(drift_out.clone());
    let drift_states = drift_out.flat_map(|o| match o {
        views::drift_windows::DriftOut::State(d, n) => Some(StatePart::Drift(d, n)),
        _ => None,
    });

    use snapshot::mirror;
    let states = [
        mirror(
            typed.clone(),
            ticks.clone(),
            every,
            "CountsState",
            |k, n| StatePart::Count(*k, n),
        ),
        drift_states,
        review_states,
        sketch_states,
    ];

    let breaches = views::sla_breaches::sla_breaches(pending, clock);

    let session_rows = scoped.clone().flat_map(|o| match o {
        SessionOut::Update(u) => Some(u),
        _ => None,
    });
    let session_states = scoped.clone().flat_map(|o| match o {
        SessionOut::State(s) => Some(StatePart::Session(s)),
        _ => None,
    });
    let attributions = scoped.flat_map(|o| match o {
        SessionOut::Attribution((key, diff)) => Some((key, ModelIn::ToolCalls(diff))),
        _ => None,
    });
    let models = views::model_versions::model_versions(
        model_decisions.concat(attributions),
        ticks,
        every,
        metrics,
    );
    let model_rows = models.clone().flat_map(|o| match o {
        ModelOut::Update(u) => Some(u),
        ModelOut::State(..) => None,
    });
    let model_states = models.flat_map(|o| match o {
        ModelOut::State(k, u) => Some(StatePart::Model(k, u)),
        ModelOut::Update(_) => None,
    });
    let counts = changes(
        views::event_counts::event_counts(typed),
        "EventCountChanges",
        |((tenant_id, event_type), count), diff| ViewUpdate::EventCount {
            tenant_id: tenant_id.to_string(),
            event_type: event_type.to_string(),
            count: count as i64,
            diff: diff as i64,
        },
    );
    let latency = changes(
        latency_rows,
        "HitlLatencyChanges",
        |(tenant_id, stats), diff| ViewUpdate::HitlLatency {
            tenant_id,
            stats,
            diff: diff as i64,
        },
    );
    let scope = counts.scope();
    let view_updates = scope.concatenate([
        counts,
        latency,
        session_rows,
        model_rows,
        rows(ViewId::HitlGroups, groups),
        rows(ViewId::Reviewers, reviewers),
        rows(ViewId::SlaBreaches, breaches),
        views::alerts::alert_rows(alerts, drift),
    ]);
    // Each message's parts as one chunk of JSON lines: a few large buffers on their way to
    // the sink rather than one per part.
    let state_lines = scope
        .concatenate(states.into_iter().chain([session_states, model_states]))
        .unary::<CapacityContainerBuilder<Vec<Vec<u8>>>, _, _, _>(
            Pipeline,
            "StateLines",
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, parts| {
                        let mut chunk = Vec::with_capacity(parts.len() * 96);
                        for part in parts.drain(..) {
                            // Panic-free: state parts are plain data.
                            if serde_json::to_writer(&mut chunk, &part).is_ok() {
                                chunk.push(b'\n');
                            }
                        }
                        output.session(&cap).give(chunk);
                    });
                }
            },
        );
    (view_updates, state_lines)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use custody_schemas::decode_event;
    use differential_dataflow::input::Input as _;
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::capture::{Capture, Event};

    use super::*;

    fn event(tenant: &str, id: usize, ty: &str) -> ChainedEvent {
        let json = format!(
            r#"{{"event_id":"e{id}","schema_version":"1.0","tenant_id":"{tenant}",
            "session_id":"s{id}","agent_id":"agent-1","event_type":"{ty}",
            "timestamp":"2026-03-08T00:00:00Z","parent_event_id":null,
            "payload":{{"reason":"r","last_state":"x"}}}}"#
        );
        ChainedEvent {
            offset: id as i64,
            ..ChainedEvent::unchained(decode_event(json.as_bytes()).unwrap())
        }
    }

    /// Several epochs complete at once (as when the sink lags): a reduce then emits the changes
    /// of all of them in one message whose capability is the earliest. Every change must still
    /// reach the sink at its own epoch, or an epoch's commit would hold a later epoch's counts.
    #[test]
    fn every_view_change_is_sent_at_its_own_epoch() {
        let epochs = 6u64;
        let per_epoch = |e: u64| (e as usize % 3) + 1;
        let rx = timely::example(move |scope| {
            let (mut input, stream) = scope.new_input::<Vec<SinkRecord>>();
            let (mut clock, now) = scope.new_collection::<i64, isize>();
            let cfg = ViewsConfig::default();
            let rx = render_views(view_facts(stream, &cfg), now, &cfg, &Metrics::new())
                .0
                .capture();
            // Everything is sent before the dataflow runs at all.
            let mut id = 0;
            for epoch in 0..epochs {
                input.advance_to(epoch);
                clock.advance_to(epoch);
                for _ in 0..per_epoch(epoch) {
                    id += 1;
                    input.send(SinkRecord::Event(Box::new(event("t", id, "TASK_FAILED"))));
                }
            }
            rx
        });
        let mut net: BTreeMap<u64, i64> = BTreeMap::new();
        for event in rx.try_iter() {
            if let Event::Messages(stamp, data) = event {
                let time = *stamp.least().unwrap();
                for update in data {
                    if let ViewUpdate::EventCount { count, diff, .. } = update {
                        *net.entry(time).or_default() += count * diff;
                    }
                }
            }
        }
        let mut expected = 0i64;
        let mut counted = 0i64;
        for epoch in 0..epochs {
            expected += per_epoch(epoch) as i64;
            counted += net.get(&epoch).copied().unwrap_or_default();
            assert_eq!(counted, expected, "the count committed with epoch {epoch}");
        }
    }
}
