//! Model-version attribution: what each model version decided, and which tool calls it led
//! to.
//!
//! # Inputs
//! - `((tenant_id, event_id), ModelUse)`, one per `MODEL_DECISION`;
//! - the causal chains view: a tool call is attributed to the nearest model decision above it.
//!
//! # Outputs
//! `((tenant_id, "model_id@model_version"), ModelUsage)`: decisions, attributed tool calls,
//! distinct agents, first and last use.
//!
//! # State
//! Every model decision (the join's arrangement) and, per model version, its decisions and
//! attributed tool calls.

use std::collections::BTreeSet;

use custody_operators::record::{ChainedEvent, Epoch};
use custody_schemas::EventType;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::causal_chains::CausalChain;

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
    /// The use of `e`, keyed by `(tenant, event_id)`, if it is a model decision.
    pub fn from_event(e: &ChainedEvent) -> Option<((String, String), ModelUse)> {
        let ev = &e.event;
        if ev.event_type != EventType::ModelDecision {
            return None;
        }
        Some((
            (ev.tenant_id.as_str().to_string(), ev.event_id.clone()),
            ModelUse {
                model: format!(
                    "{}@{}",
                    ev.payload["model_id"].as_str()?,
                    ev.payload["model_version"].as_str()?
                ),
                agent_id: ev.agent_id.clone(),
                ts_us: ev.timestamp_us,
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

/// A decision or an attributed tool call of one model version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Attributed {
    /// A decision: its time and agent.
    Decision(i64, String),
    /// A tool call (its event id).
    ToolCall(String),
}

/// Summarizes one model version.
pub fn usage(model: &str, input: &[(&Attributed, isize)]) -> ModelUsage {
    let (id, version) = model.rsplit_once('@').unwrap_or((model, ""));
    let decisions: Vec<(i64, &str, isize)> = input
        .iter()
        .filter_map(|(a, n)| match a {
            Attributed::Decision(ts, agent) => Some((*ts, agent.as_str(), *n)),
            Attributed::ToolCall(_) => None,
        })
        .collect();
    ModelUsage {
        model_id: id.to_string(),
        model_version: version.to_string(),
        decisions: decisions.iter().map(|d| d.2 as i64).sum(),
        tool_calls: input
            .iter()
            .filter(|(a, _)| matches!(a, Attributed::ToolCall(_)))
            .map(|(_, n)| *n as i64)
            .sum(),
        agents: decisions.iter().map(|d| d.1).collect::<BTreeSet<_>>().len() as i64,
        first_seen_us: decisions.iter().map(|d| d.0).min().unwrap_or(0),
        last_seen_us: decisions.iter().map(|d| d.0).max().unwrap_or(0),
    }
}

/// Usage per model version.
pub fn model_versions<'scope>(
    decisions: VecCollection<'scope, Epoch, ((String, String), ModelUse)>,
    chains: VecCollection<'scope, Epoch, ((String, String), CausalChain)>,
) -> VecCollection<'scope, Epoch, ((String, String), ModelUsage)> {
    let tools = chains
        .flat_map(|((tenant, tool), chain)| {
            chain
                .model_decisions
                .first()
                .map(|d| ((tenant, d.clone()), tool))
        })
        .join_map(decisions.clone(), |(tenant, _), tool, u| {
            (
                (tenant.clone(), u.model.clone()),
                Attributed::ToolCall(tool.clone()),
            )
        });
    decisions
        .map(|((tenant, _), u)| ((tenant, u.model), Attributed::Decision(u.ts_us, u.agent_id)))
        .concat(tools)
        .reduce_named("ModelVersions", |(_tenant, model), input, output| {
            output.push((usage(model, input), 1));
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::views::causal_chains::Link;
    use crate::views::oracle::{lcg, run};

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    enum In {
        Model(String, String, ModelUse),
        Chain(String, CausalChain),
    }

    #[test]
    fn oracle_matches_recomputation() {
        for seed in 1..=5u64 {
            let mut rng = lcg(seed);
            let mut inputs = Vec::new();
            for i in 0..60 {
                let tenant = format!("t{}", rng() % 2);
                if rng().is_multiple_of(2) {
                    let u = ModelUse {
                        model: format!("m@{}", rng() % 3),
                        agent_id: format!("a{}", rng() % 3),
                        ts_us: (rng() % 100) as i64,
                    };
                    inputs.push((rng() % 5, In::Model(tenant, format!("d{i}"), u)));
                } else {
                    let parent = format!("d{}", rng() % 60);
                    let chain = CausalChain::new(
                        &format!("tool{i}"),
                        vec![Link {
                            depth: 1,
                            event_id: parent,
                            event_type: EventType::ModelDecision,
                        }],
                    );
                    inputs.push((rng() % 5, In::Chain(tenant, chain)));
                }
            }
            let states = run(inputs.clone(), 5, |c| {
                let d = c.clone().flat_map(|i| match i {
                    In::Model(t, id, u) => Some(((t, id), u)),
                    In::Chain(..) => None,
                });
                let ch = c.flat_map(|i| match i {
                    In::Chain(t, ch) => Some(((t, ch.tool_event_id.clone()), ch)),
                    In::Model(..) => None,
                });
                model_versions(d, ch)
            });
            for epoch in 0..5u64 {
                let seen: Vec<&In> = inputs
                    .iter()
                    .filter(|(t, _)| *t <= epoch)
                    .map(|(_, i)| i)
                    .collect();
                let mut by: BTreeMap<(String, String), Vec<Attributed>> = BTreeMap::new();
                for i in &seen {
                    match i {
                        In::Model(t, _, u) => by
                            .entry((t.clone(), u.model.clone()))
                            .or_default()
                            .push(Attributed::Decision(u.ts_us, u.agent_id.clone())),
                        In::Chain(t, ch) => {
                            for j in &seen {
                                if let In::Model(t2, id, u) = j
                                    && t2 == t
                                    && Some(id) == ch.model_decisions.first()
                                {
                                    by.entry((t.clone(), u.model.clone()))
                                        .or_default()
                                        .push(Attributed::ToolCall(ch.tool_event_id.clone()));
                                }
                            }
                        }
                    }
                }
                let want: BTreeMap<_, isize> = by
                    .iter()
                    .map(|(k, xs)| {
                        let mut counted: BTreeMap<&Attributed, isize> = BTreeMap::new();
                        for x in xs {
                            *counted.entry(x).or_default() += 1;
                        }
                        let refs: Vec<(&Attributed, isize)> = counted.into_iter().collect();
                        ((k.clone(), usage(&k.1, &refs)), 1)
                    })
                    .collect();
                assert_eq!(states[&epoch], want, "seed {seed} epoch {epoch}");
            }
        }
    }
}
