//! Session reconstruction: one summary row per agent session, maintained (and retired) by
//! [`super::session_scoped`].
//!
//! A row says who ran the session, when it started and last moved, how many events, tool
//! calls, failed tool results, escalations and reviews it holds, and whether it completed,
//! failed or is still open. The event-by-event timeline with its narrative is served from the
//! lake (`/v1/tenants/{t}/sessions/{s}`). Events arriving out of order only move `started`
//! and `last`.

use custody_operators::record::ChainedEvent;
use custody_schemas::{EventType, PayloadFacts};
use serde::{Deserialize, Serialize};

/// What the view keeps of each event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionFact {
    /// Event time, UTC micros.
    pub ts_us: i64,
    /// The event type.
    pub event_type: EventType,
    /// The agent and end user, on the session's `TASK_INITIATED` only (so that the per-event
    /// facts the view keeps hold no strings).
    pub started_by: Option<(String, Option<String>)>,
    /// A tool result with status `error`.
    pub tool_failed: bool,
}

impl SessionFact {
    /// The fact of `e`, keyed by `(tenant, session)`.
    pub fn from_event(e: &ChainedEvent) -> ((String, String), SessionFact) {
        let ev = &e.event;
        (
            (ev.tenant_id.as_str().to_string(), ev.session_id.clone()),
            SessionFact {
                ts_us: ev.timestamp_us,
                event_type: ev.event_type,
                started_by: (ev.event_type == EventType::TaskInitiated)
                    .then(|| (ev.agent_id.clone(), ev.user_id.clone())),
                tool_failed: matches!(ev.facts, PayloadFacts::ToolResult { error: true }),
            },
        )
    }
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// No `TASK_COMPLETED` or `TASK_FAILED` yet.
    Open,
    /// Ended with `TASK_COMPLETED`.
    Completed,
    /// Ended with `TASK_FAILED`.
    Failed,
}

/// One row of the sessions view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session.
    pub session_id: String,
    /// The agent that took the task (`TASK_INITIATED`; empty until it arrives).
    pub agent_id: String,
    /// The end user it acts for, if any.
    pub user_id: Option<String>,
    /// First event time, UTC micros.
    pub started_us: i64,
    /// Last event time, UTC micros.
    pub last_us: i64,
    /// Events.
    pub events: i64,
    /// `TOOL_CALLED` events.
    pub tool_calls: i64,
    /// Tool results with status `error`.
    pub tool_failures: i64,
    /// `HUMAN_ESCALATION_TRIGGERED` events.
    pub escalations: i64,
    /// `HUMAN_REVIEW_DECISION` events.
    pub reviews: i64,
    /// Where it stands.
    pub status: SessionStatus,
}

/// Summarizes a session's facts, in any order, each with its multiplicity.
pub fn summarize(session_id: &str, facts: &[(&SessionFact, isize)]) -> SessionSummary {
    let mut sorted: Vec<&(&SessionFact, isize)> = facts.iter().collect();
    sorted.sort();
    let count = |ty: EventType| -> i64 {
        facts
            .iter()
            .filter(|(f, _)| f.event_type == ty)
            .map(|(_, c)| *c as i64)
            .sum()
    };
    let status = if count(EventType::TaskFailed) > 0 {
        SessionStatus::Failed
    } else if count(EventType::TaskCompleted) > 0 {
        SessionStatus::Completed
    } else {
        SessionStatus::Open
    };
    SessionSummary {
        session_id: session_id.to_string(),
        agent_id: sorted
            .iter()
            .find_map(|(f, _)| f.started_by.as_ref().map(|(a, _)| a.clone()))
            .unwrap_or_default(),
        user_id: sorted
            .iter()
            .find_map(|(f, _)| f.started_by.as_ref().and_then(|(_, u)| u.clone())),
        started_us: sorted.first().map_or(0, |(f, _)| f.ts_us),
        last_us: sorted.last().map_or(0, |(f, _)| f.ts_us),
        events: facts.iter().map(|(_, c)| *c as i64).sum(),
        tool_calls: count(EventType::ToolCalled),
        tool_failures: facts
            .iter()
            .filter(|(f, _)| f.tool_failed)
            .map(|(_, c)| *c as i64)
            .sum(),
        escalations: count(EventType::HumanEscalationTriggered),
        reviews: count(EventType::HumanReviewDecision),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_counts() {
        let f = |ts, ty, failed| SessionFact {
            ts_us: ts,
            event_type: ty,
            started_by: (ty == EventType::TaskInitiated).then(|| ("a".into(), None)),
            tool_failed: failed,
        };
        let facts = [
            f(5, EventType::ToolResultReceived, true),
            f(1, EventType::TaskInitiated, false),
            f(9, EventType::TaskCompleted, false),
        ];
        let refs: Vec<(&SessionFact, isize)> = facts.iter().map(|x| (x, 1)).collect();
        let s = summarize("s", &refs);
        assert_eq!(
            (s.started_us, s.last_us, s.events, s.tool_failures, s.status),
            (1, 9, 3, 1, SessionStatus::Completed)
        );
    }
}
