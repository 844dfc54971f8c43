//! Causal chains: for every tool call, the decisions that led to it.
//!
//! # Inputs
//! `((tenant_id, event_id), Node)`, one per accepted event: its type and `parent_event_id`.
//!
//! # Outputs
//! `((tenant_id, tool_event_id), CausalChain)`: the tool call's ancestors along
//! `parent_event_id`, nearest first, back to the previous tool call or result or the task's
//! start (those boundaries are included, not walked past), at most [`MAX_DEPTH`] steps. The
//! model decisions among them are listed apart: they are what an auditor asks for ("given this
//! tool invocation, show me the model decision that caused it").
//!
//! # State
//! The parent edges of every event, and the reached `(tool call, ancestor)` pairs inside the
//! iteration.
//!
//! # Failure modes
//! A parent that has not arrived yet ends the chain early; the chain grows when it arrives.
//! Parent cycles (a forged or broken producer) stop at [`MAX_DEPTH`].

use custody_operators::record::{ChainedEvent, Epoch};
use custody_schemas::EventType;
use differential_dataflow::VecCollection;
use differential_dataflow::operators::Iterate;
use serde::{Deserialize, Serialize};

/// The longest chain followed.
pub const MAX_DEPTH: u32 = 32;

/// An event as a node of the causal graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    /// Its type.
    pub event_type: EventType,
    /// The event that caused it.
    pub parent: Option<String>,
}

impl Node {
    /// The node of `e`, keyed by `(tenant, event_id)`.
    pub fn from_event(e: &ChainedEvent) -> ((String, String), Node) {
        (
            (
                e.event.tenant_id.as_str().to_string(),
                e.event.event_id.clone(),
            ),
            Node {
                event_type: e.event.event_type,
                parent: e.event.parent_event_id.clone(),
            },
        )
    }
}

/// Whether the walk stops at (and includes) an ancestor of this type.
pub fn is_boundary(t: EventType) -> bool {
    matches!(
        t,
        EventType::ToolCalled | EventType::ToolResultReceived | EventType::TaskInitiated
    )
}

/// One ancestor of a tool call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Link {
    /// Steps from the tool call (1 = its parent).
    pub depth: u32,
    /// The ancestor.
    pub event_id: String,
    /// Its type.
    pub event_type: EventType,
}

/// One row of the causal chains view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CausalChain {
    /// The tool call.
    pub tool_event_id: String,
    /// Its ancestors, nearest first.
    pub links: Vec<Link>,
    /// The `MODEL_DECISION` ancestors, nearest first.
    pub model_decisions: Vec<String>,
}

impl CausalChain {
    /// The chain of `tool` from its links, in any order.
    pub fn new(tool: &str, mut links: Vec<Link>) -> CausalChain {
        links.sort();
        CausalChain {
            tool_event_id: tool.to_string(),
            model_decisions: links
                .iter()
                .filter(|l| l.event_type == EventType::ModelDecision)
                .map(|l| l.event_id.clone())
                .collect(),
            links,
        }
    }
}

type Key = (String, String);

/// A 128-bit id of `(tenant, event_id)`: the graph is walked over these, so the arrangements
/// compare and copy integers, not strings.
fn node_id(tenant: &str, event_id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        tenant.hash(&mut h);
        event_id.hash(&mut h);
        h.finish() as u128
    };
    (half(1) << 64) | half(2)
}

/// A node as walked: its type and parent, and its event id for the output.
type Walked = (EventType, Option<u128>, String);

/// The causal chain of every tool call.
pub fn causal_chains<'scope>(
    nodes: VecCollection<'scope, Epoch, (Key, Node)>,
) -> VecCollection<'scope, Epoch, (Key, CausalChain)> {
    let graph = nodes.clone().map(|((tenant, id), n)| {
        let parent = n.parent.as_deref().map(|p| node_id(&tenant, p));
        (node_id(&tenant, &id), (n.event_type, parent, id))
    });
    let tools = nodes
        .filter(|(_, n)| n.event_type == EventType::ToolCalled)
        .map(|(key, _)| (node_id(&key.0, &key.1), key));
    // node -> (tool, depth): node is `depth` steps above tool.
    let roots = tools.clone().map(|(id, _)| (id, (id, 0u32)));
    let reached = roots.clone().iterate(|scope, reached| {
        let graph = graph.clone().enter(scope);
        let roots = roots.clone().enter(scope);
        reached
            .join_map(graph, |_node, (tool, depth), (ty, parent, _): &Walked| {
                let expand = *depth == 0 || !is_boundary(*ty);
                match parent {
                    Some(parent) if expand && *depth < MAX_DEPTH => {
                        Some((*parent, (*tool, depth + 1)))
                    }
                    _ => None,
                }
            })
            .flat_map(|x| x)
            .concat(roots)
            .distinct()
    });
    reached
        .filter(|(_, (_, depth))| *depth > 0)
        .join_map(graph, |_node, (tool, depth), (ty, _, event_id): &Walked| {
            (
                *tool,
                Link {
                    depth: *depth,
                    event_id: event_id.clone(),
                    event_type: *ty,
                },
            )
        })
        .concat(tools.clone().map(|(id, _)| (id, Link::placeholder())))
        .reduce_named("CausalChains", |_tool, input, output| {
            let links: Vec<Link> = input
                .iter()
                .filter(|(l, _)| l.depth > 0)
                .map(|(l, _)| (*l).clone())
                .collect();
            output.push((links, 1));
        })
        .join_map(tools, |_id, links, (tenant, tool)| {
            (
                (tenant.clone(), tool.clone()),
                CausalChain::new(tool, links.clone()),
            )
        })
}

impl Link {
    /// The tool call itself, so that a call with no ancestors yet still has a row.
    fn placeholder() -> Link {
        Link {
            depth: 0,
            event_id: String::new(),
            event_type: EventType::ToolCalled,
        }
    }
}

/// The chain of `tool` computed directly from every node: the reference the oracle test
/// checks the incremental view against.
pub fn walk(
    nodes: &std::collections::BTreeMap<Key, Node>,
    tenant: &str,
    tool: &str,
) -> CausalChain {
    let mut links = Vec::new();
    let mut current = nodes.get(&(tenant.to_string(), tool.to_string()));
    let mut depth = 0;
    while let Some(node) = current {
        if depth > 0 && is_boundary(node.event_type) {
            break;
        }
        let Some(parent) = &node.parent else { break };
        if depth == MAX_DEPTH {
            break;
        }
        depth += 1;
        let key = (tenant.to_string(), parent.clone());
        current = nodes.get(&key);
        if let Some(p) = current {
            links.push(Link {
                depth,
                event_id: parent.clone(),
                event_type: p.event_type,
            });
        }
    }
    CausalChain::new(tool, links)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::views::oracle::{lcg, run};

    const TYPES: [EventType; 5] = [
        EventType::ModelDecision,
        EventType::DecisionPoint,
        EventType::ToolCalled,
        EventType::ToolResultReceived,
        EventType::HumanReviewDecision,
    ];

    /// Random forests (parents point at earlier ids, sometimes at ids that never arrive, and
    /// sometimes form cycles), arriving in random epochs.
    #[test]
    fn oracle_matches_recomputation() {
        for seed in 1..=6u64 {
            let mut rng = lcg(seed);
            let inputs: Vec<(u64, (Key, Node))> = (0..80u64)
                .map(|i| {
                    let parent = match rng() % 10 {
                        0 => None,
                        1 => Some(format!("e{}", i + 1 + rng() % 3)), // forward: cycles
                        2 => Some("missing".to_string()),
                        _ if i > 0 => Some(format!("e{}", i - 1 - rng() % i.min(3))),
                        _ => None,
                    };
                    (
                        rng() % 5,
                        (
                            (format!("t{}", rng() % 2), format!("e{i}")),
                            Node {
                                event_type: TYPES[(rng() % 5) as usize],
                                parent,
                            },
                        ),
                    )
                })
                .collect();
            let states = run(inputs.clone(), 5, causal_chains);
            for epoch in 0..5u64 {
                let nodes: BTreeMap<Key, Node> = inputs
                    .iter()
                    .filter(|(t, _)| *t <= epoch)
                    .map(|(_, kv)| kv.clone())
                    .collect();
                let want: BTreeMap<(Key, CausalChain), isize> = nodes
                    .iter()
                    .filter(|(_, n)| n.event_type == EventType::ToolCalled)
                    .map(|((t, id), _)| (((t.clone(), id.clone()), walk(&nodes, t, id)), 1))
                    .collect();
                assert_eq!(states[&epoch], want, "seed {seed} epoch {epoch}");
            }
        }
    }
}
