//! Policy rules, evaluated in the stream, and the violations they find.
//!
//! Rules are configuration (`[[policy.rules]]`, see [`PolicyRule`]):
//! - `approval_required`: a matching tool call (by tool name pattern, optionally only above an
//!   amount, optionally only elevated calls) needs a human approval (`approve` or `modify`)
//!   decided earlier in the same session;
//! - `deny`: a matching tool call is a violation by itself.
//!
//! # Inputs
//! `((tenant_id, session_id), PolicyFact)`: the tool calls some rule applies to (matched when
//! the event enters the view, so the collection holds only what rules care about) and the
//! session's approvals.
//!
//! # Outputs
//! `((tenant_id, "rule_id/event_id"), Violation)`. A tool call that has no approval before it
//! stays a violation even if an approval arrives later; an approval that arrives late in the
//! stream but was decided before the call retracts the violation.
//!
//! # State
//! The tool calls rules apply to and the approvals, per session.
//!
//! # Failure modes
//! A rule with an amount threshold fails closed: if the amount cannot be read (the input was
//! vaulted, or the field is not a number), the call needs an approval.

use custody_operators::record::ChainedEvent;
use custody_schemas::{EventType, PayloadFacts};
use serde::{Deserialize, Serialize};

/// What a rule asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A human approval earlier in the session.
    ApprovalRequired,
    /// Never allowed.
    Deny,
}

/// One policy rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Stable id, shown in every violation.
    pub id: String,
    /// What the rule requires, for people.
    pub description: String,
    /// What it asks.
    pub kind: RuleKind,
    /// Tool name patterns (`*` matches any run of characters).
    pub tools: Vec<String>,
    /// The tool input field holding an amount.
    #[serde(default)]
    pub amount_field: Option<String>,
    /// Applies only above this amount.
    #[serde(default)]
    pub above: Option<f64>,
    /// Applies only to calls made with elevated permissions.
    #[serde(default)]
    pub elevated_only: bool,
    /// Applies only to these tenants (all when absent).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
}

/// Whether `pattern` (with `*` wildcards) matches all of `s`.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// A tool call a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Applies {
    /// The rule.
    pub rule_id: String,
    /// Its kind.
    pub deny: bool,
    /// The tool call.
    pub event_id: String,
    /// Its time, UTC micros.
    pub ts_us: i64,
    /// The tool.
    pub tool_name: String,
    /// The agent.
    pub agent_id: String,
    /// Why the rule applies, for people.
    pub detail: String,
}

/// What the view keeps of events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyFact {
    /// A rule applies to a tool call.
    Applies(Applies),
    /// A human approved something at this time (UTC micros).
    Approval(i64),
}

/// The policy facts of `e` under `rules`.
pub fn facts(rules: &[PolicyRule], e: &ChainedEvent) -> Vec<((String, String), PolicyFact)> {
    let ev = &e.event;
    let key = || (ev.tenant_id.as_str().to_string(), ev.session_id.clone());
    match ev.event_type {
        EventType::HumanReviewDecision => match &ev.facts {
            PayloadFacts::Review {
                decided_us: Some(at),
                decision,
                ..
            } if matches!(decision.as_str(), "approve" | "modify") => {
                vec![(key(), PolicyFact::Approval(*at))]
            }
            _ => Vec::new(),
        },
        EventType::ToolCalled => {
            let (tool, elevated, amounts) = match &ev.facts {
                PayloadFacts::ToolCall {
                    tool_name,
                    elevated,
                    amounts,
                } => (tool_name.as_str(), *elevated, amounts.as_slice()),
                _ => ("", false, &[][..]),
            };
            rules
                .iter()
                .filter(|r| {
                    r.tenants
                        .as_ref()
                        .is_none_or(|ts| ts.iter().any(|t| t == ev.tenant_id.as_str()))
                        && r.tools.iter().any(|pat| glob_match(pat, tool))
                        && (!r.elevated_only || elevated)
                })
                .filter_map(|r| {
                    let detail = match (&r.amount_field, r.above) {
                        (Some(field), Some(above)) => {
                            match amounts.iter().find(|(k, _)| k == field).map(|(_, a)| *a) {
                                Some(amount) if amount > above => {
                                    format!("{tool} with {field} {amount} above {above}")
                                }
                                Some(_) => return None,
                                None => format!("{tool} with unreadable {field} (fails closed)"),
                            }
                        }
                        _ => tool.to_string(),
                    };
                    Some((
                        key(),
                        PolicyFact::Applies(Applies {
                            rule_id: r.id.clone(),
                            deny: r.kind == RuleKind::Deny,
                            event_id: ev.event_id.clone(),
                            ts_us: ev.timestamp_us,
                            tool_name: tool.to_string(),
                            agent_id: ev.agent_id.clone(),
                            detail,
                        }),
                    ))
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// One row of the violations view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// The rule broken.
    pub rule_id: String,
    /// The offending tool call.
    pub event_id: String,
    /// Its session.
    pub session_id: String,
    /// Its agent.
    pub agent_id: String,
    /// The tool.
    pub tool_name: String,
    /// When, UTC micros.
    pub at_us: i64,
    /// What happened, for people.
    pub detail: String,
}

/// The violations among one session's facts.
pub fn evaluate(session: &str, facts: &[&PolicyFact]) -> Vec<Violation> {
    let approvals: Vec<i64> = facts
        .iter()
        .filter_map(|f| match f {
            PolicyFact::Approval(at) => Some(*at),
            _ => None,
        })
        .collect();
    facts
        .iter()
        .filter_map(|f| match f {
            PolicyFact::Applies(a) if a.deny || !approvals.iter().any(|at| *at <= a.ts_us) => {
                Some(Violation {
                    rule_id: a.rule_id.clone(),
                    event_id: a.event_id.clone(),
                    session_id: session.to_string(),
                    agent_id: a.agent_id.clone(),
                    tool_name: a.tool_name.clone(),
                    at_us: a.ts_us,
                    detail: if a.deny {
                        format!("denied: {}", a.detail)
                    } else {
                        format!("no prior human approval: {}", a.detail)
                    },
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("payments.*", "payments.refund"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("payments.*", "crm.update"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("db.query", "db.query"));
    }
}
