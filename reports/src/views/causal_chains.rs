//! Causal chains: for every tool call, the decisions that led to it; maintained (and
//! retired) by [`super::session_scoped`].
//!
//! A row (key: the tool call's event id) holds the tool call's ancestors along
//! `parent_event_id` within its session, nearest first, back to the previous tool call or
//! result or the task's start (those boundaries are included, not walked past), at most
//! [`MAX_DEPTH`] steps. The model decisions among them are listed apart: they are what an
//! auditor asks for ("given this tool invocation, show me the model decision that caused it").
//! A parent that has not arrived yet ends the chain early; the chain grows when it arrives.
//! Parent cycles (a forged or broken producer) stop at [`MAX_DEPTH`].

use custody_schemas::EventType;
use serde::{Deserialize, Serialize};

/// The longest chain followed.
pub const MAX_DEPTH: u32 = 32;

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
