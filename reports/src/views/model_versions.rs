//! Model-version attribution: what each model version decided, and which tool calls it led
//! to.
//!
//! # Inputs
//! `((tenant_id, "model_id@model_version"), ModelIn)`, exchanged by that key:
//! - a [`ModelIn::Decision`] per `MODEL_DECISION`;
//! - [`ModelIn::ToolCalls`] changes from [`super::session_scoped`]: a tool call is attributed
//!   to the nearest model decision above it in its causal chain.
//!
//! # Outputs
//! [`ViewUpdate::Row`] changes of [`ViewId::ModelVersions`], key `model_id@model_version`:
//! decisions, attributed tool calls, distinct agents, first and last use.
//!
//! # State and its bound
//! Per tenant and model version: counts, first and last use, and its agents with their
//! decision counts; bounded by tenants × model versions × agents, not by events. Model use
//! is counted for all time: retiring a session does not retract its attribution.
//!
//! # Metrics
//! `custody_view_state{view="model_versions",kind="keys"}`.

use std::collections::{BTreeMap, HashMap};

use custody_operators::Metrics;
use custody_operators::record::{ChainedEvent, Epoch, ViewId, ViewUpdate};
use custody_schemas::PayloadFacts;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;

use super::epoch_stash::{EpochStash, Ready};

/// What the view keeps of a `MODEL_DECISION`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelUse {
    /// `model_id@model_version`.
    pub model: String,
    /// The agent.
    pub agent_id: String,
    /// Event time, UTC micros.
    pub ts_us: i64,
}

impl ModelUse {
    /// The use of `e`, keyed by `(tenant, model)`, if it is a model decision.
    pub fn from_event(e: &ChainedEvent) -> Option<((String, String), ModelIn)> {
        let ev = &e.event;
        let PayloadFacts::Model {
            model_id,
            model_version,
        } = &ev.facts
        else {
            return None;
        };
        let u = ModelUse {
            model: format!("{model_id}@{model_version}"),
            agent_id: ev.agent_id.clone(),
            ts_us: ev.timestamp_us,
        };
        Some((
            (ev.tenant_id.as_str().to_string(), u.model),
            ModelIn::Decision {
                agent_id: u.agent_id,
                ts_us: u.ts_us,
            },
        ))
    }
}

/// One row of the model versions view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelUsage {
    /// Model identifier.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Model decisions made with it.
    pub decisions: i64,
    /// Tool calls whose nearest model decision it made.
    pub tool_calls: i64,
    /// Distinct agents that used it.
    pub agents: i64,
    /// First use, UTC micros.
    pub first_seen_us: i64,
    /// Last use, UTC micros.
    pub last_seen_us: i64,
}

/// An input of the view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ModelIn {
    /// A model decision by this agent at this time.
    Decision {
        /// The agent.
        agent_id: String,
        /// Event time, UTC micros.
        ts_us: i64,
    },
    /// Tool calls attributed (+) or no longer attributed (-).
    ToolCalls(i64),
    /// The use as it was at the snapshot.
    Restore(Usage),
}

/// One model version's use so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Usage {
    agents: BTreeMap<String, i64>,
    decisions: i64,
    tool_calls: i64,
    first: Option<i64>,
    last: Option<i64>,
}

impl Usage {
    /// Adds one input.
    pub fn add(&mut self, input: &ModelIn) {
        match input {
            ModelIn::Decision { agent_id, ts_us } => {
                *self.agents.entry(agent_id.clone()).or_default() += 1;
                self.decisions += 1;
                self.first = Some(self.first.map_or(*ts_us, |f| f.min(*ts_us)));
                self.last = Some(self.last.map_or(*ts_us, |l| l.max(*ts_us)));
            }
            ModelIn::ToolCalls(n) => self.tool_calls += n,
            ModelIn::Restore(usage) => *self = usage.clone(),
        }
    }

    /// The view's row for `model`, if it has any use.
    pub fn row(&self, model: &str) -> Option<ModelUsage> {
        if self.decisions == 0 && self.tool_calls == 0 {
            return None;
        }
        let (id, version) = model.rsplit_once('@').unwrap_or((model, ""));
        Some(ModelUsage {
            model_id: id.to_string(),
            model_version: version.to_string(),
            decisions: self.decisions,
            tool_calls: self.tool_calls,
            agents: self.agents.len() as i64,
            first_seen_us: self.first.unwrap_or(0),
            last_seen_us: self.last.unwrap_or(0),
        })
    }
}

/// What the view sends: its changes, and its state at snapshot epochs.
#[derive(Clone, Debug)]
pub enum ModelOut {
    /// A row change.
    Update(ViewUpdate),
    /// A model version's use, at a snapshot epoch.
    State((String, String), Usage),
}

/// Usage per model version; see the module documentation. `ticks` marks live epochs, as in
/// [`super::session_scoped::session_scoped`].
pub fn model_versions<'scope>(
    input: StreamVec<'scope, Epoch, ((String, String), ModelIn)>,
    ticks: StreamVec<'scope, Epoch, ()>,
    snapshot_every: u64,
    metrics: &Metrics,
) -> StreamVec<'scope, Epoch, ModelOut> {
    let keys = metrics
        .view_state
        .with_label_values(&["model_versions", "keys"]);
    input.binary_frontier(
        ticks,
        Exchange::new(|(key, _): &((String, String), ModelIn)| {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            key.hash(&mut h);
            h.finish()
        }),
        Pipeline,
        "ModelVersions",
        move |_, _| {
            let mut stash: EpochStash<((String, String), ModelIn)> = EpochStash::default();
            let mut state: HashMap<(String, String), (Usage, Option<String>)> = HashMap::new();
            move |(input, input_frontier), (ticks, ticks_frontier), output| {
                stash.receive(input, ticks);
                while let Some(Ready {
                    time: t,
                    cap,
                    data: inputs,
                    ticked,
                }) = stash.next_ready(input_frontier, ticks_frontier)
                {
                    let mut touched: Vec<(String, String)> = Vec::new();
                    for (key, input) in inputs {
                        let (usage, _) = state.entry(key.clone()).or_insert_with(|| {
                            keys.inc();
                            Default::default()
                        });
                        usage.add(&input);
                        touched.push(key);
                    }
                    touched.sort();
                    touched.dedup();
                    let mut session = output.session(&cap);
                    for key in touched {
                        // Panic-free: every touched key was inserted above.
                        let (usage, emitted) = state.get_mut(&key).expect("touched");
                        // Panic-free: rows are plain structs of strings and integers.
                        let row = usage
                            .row(&key.1)
                            .map(|r| serde_json::to_string(&r).unwrap_or_default());
                        if row == *emitted {
                            continue;
                        }
                        for (r, diff) in [(emitted.take(), -1), (row.clone(), 1)] {
                            if let Some(row) = r {
                                session.give(ModelOut::Update(ViewUpdate::Row {
                                    view: ViewId::ModelVersions,
                                    tenant_id: key.0.clone(),
                                    key: key.1.clone(),
                                    row,
                                    diff,
                                }));
                            }
                        }
                        *emitted = row;
                    }
                    if ticked && crate::snapshot::is_snapshot_epoch(t, snapshot_every) {
                        for (key, (usage, _)) in &state {
                            session.give(ModelOut::State(key.clone(), usage.clone()));
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::capture::{Capture, Event};
    use timely::dataflow::operators::vec::Map;

    use super::*;
    use crate::views::oracle::lcg;

    type In = ((String, String), ModelIn);

    /// The rows at every epoch equal the usage recomputed from every input so far.
    #[test]
    fn oracle_matches_recomputation() {
        for seed in 1..=5u64 {
            let mut rng = lcg(seed);
            let inputs: Vec<(u64, In)> = (0..80)
                .map(|_| {
                    let key = (format!("t{}", rng() % 2), format!("m@{}", rng() % 3));
                    let input = if rng().is_multiple_of(3) {
                        ModelIn::ToolCalls(1)
                    } else {
                        ModelIn::Decision {
                            agent_id: format!("a{}", rng() % 3),
                            ts_us: (rng() % 100) as i64,
                        }
                    };
                    (rng() % 5, (key, input))
                })
                .collect();
            let feed = inputs.clone();
            let rx = timely::example(move |scope| {
                let (mut handle, stream) = scope.new_input::<Vec<In>>();
                let (_, ticks) = scope.new_input::<Vec<()>>();
                let rx = model_versions(stream, ticks, 0, &Metrics::new())
                    .flat_map(|o| match o {
                        ModelOut::Update(u) => Some(u),
                        ModelOut::State(..) => None,
                    })
                    .capture();
                for epoch in 0..5 {
                    handle.advance_to(epoch);
                    for (_, i) in feed.iter().filter(|(t, _)| *t == epoch) {
                        handle.send(i.clone());
                    }
                }
                rx
            });
            let updates: Vec<(u64, ViewUpdate)> = rx
                .try_iter()
                .flat_map(|e| match e {
                    Event::Messages(t, data) => {
                        let t = *t.least().unwrap();
                        data.into_iter().map(|d| (t, d)).collect()
                    }
                    Event::Progress(_) => Vec::new(),
                })
                .collect();
            for epoch in 0..5u64 {
                let mut rows: BTreeMap<(String, String, String), i64> = BTreeMap::new();
                for (_, u) in updates.iter().filter(|(t, _)| *t <= epoch) {
                    if let ViewUpdate::Row {
                        tenant_id,
                        key,
                        row,
                        diff,
                        ..
                    } = u
                    {
                        *rows
                            .entry((tenant_id.clone(), key.clone(), row.clone()))
                            .or_default() += diff;
                    }
                }
                rows.retain(|_, n| *n != 0);
                let mut want: BTreeMap<(String, String), Usage> = BTreeMap::new();
                for (_, (k, i)) in inputs.iter().filter(|(t, _)| *t <= epoch) {
                    want.entry(k.clone()).or_default().add(i);
                }
                let want: BTreeMap<(String, String, String), i64> = want
                    .iter()
                    .filter_map(|(k, u)| {
                        let row = serde_json::to_string(&u.row(&k.1)?).unwrap();
                        Some(((k.0.clone(), k.1.clone(), row), 1))
                    })
                    .collect();
                assert_eq!(rows, want, "seed {seed} epoch {epoch}");
            }
        }
    }
}
