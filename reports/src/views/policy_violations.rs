//! Policy rules and the oversight rules, evaluated in the stream, and the violations they find:
//! the evidence that humans were meaningfully in the loop.
//!
//! Policy rules are configuration (`[[policy.rules]]`, see [`PolicyRule`]):
//! - `approval_required`: a matching tool call (by tool name pattern, optionally only above an
//!   amount, optionally only elevated calls) needs a human approval (`approve`, or `modify`)
//!   decided before it in the same session *for that action*: the escalation's
//!   `proposed_action` (or the decision's `modification`) names the same tool with the same
//!   arguments, and every amount of the call is at most the approved one. An approval of
//!   another action, of a smaller amount, or of an action described only in words does not
//!   count (a 9,000 refund after approving a 10 refund is a violation);
//! - `deny`: a matching tool call is a violation by itself.
//!
//! The oversight rules hold for every tenant, with no configuration ([`OVERSIGHT_RULES`]):
//! - `oversight.action-after-rejection`: a tool call made after a human rejected that action
//!   (same tool, same string arguments; any amount), unless a later approval covers it;
//! - `oversight.before-cause`: an event timestamped before the event it names as its cause
//!   (`parent_event_id`), and a decision dated before its escalation was presented;
//! - `oversight.contradictory-decisions`: an escalation decided both ways (approve or modify,
//!   and reject), flagged on each decision after the first.
//!
//! # Inputs
//! `((tenant_id, session_id), PolicyFact)`: every tool call (its tool and arguments), the
//! calls some rule applies to, the session's escalations and decisions.
//!
//! # Outputs
//! `((tenant_id, "rule_id/event_id"), Violation)`. A tool call that has no approval before it
//! stays a violation even if an approval arrives later; an approval that arrives late in the
//! stream but was decided before the call retracts the violation.
//!
//! # State
//! The facts above, per open session (see [`super::session_scoped`]).
//!
//! # Failure modes
//! A rule with an amount threshold fails closed: if the amount cannot be read (the input was
//! vaulted, or the field is not a number), the call needs an approval. An escalation and its
//! decision in different sessions are not paired here (the call is unapproved).

use std::collections::HashMap;

use custody_operators::record::ChainedEvent;
use custody_schemas::{ActionFacts, EventType, PayloadFacts};
use serde::{Deserialize, Serialize};

/// A tool call after a human rejected that action.
pub const ACTION_AFTER_REJECTION: &str = "oversight.action-after-rejection";
/// An event timestamped before its cause.
pub const BEFORE_CAUSE: &str = "oversight.before-cause";
/// An escalation decided both ways.
pub const CONTRADICTORY_DECISIONS: &str = "oversight.contradictory-decisions";
/// The oversight rules, which hold for every tenant.
pub const OVERSIGHT_RULES: [(&str, &str); 3] = [
    (
        ACTION_AFTER_REJECTION,
        "A tool call a human rejected (same tool and arguments) is not made afterwards, \
         unless a later approval covers it",
    ),
    (
        BEFORE_CAUSE,
        "No event is timestamped before its cause, and no decision before its escalation was \
         presented",
    ),
    (
        CONTRADICTORY_DECISIONS,
        "An escalation is not both approved and rejected",
    ),
];

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

/// An amount, held as the bits of its `f64` (so that facts are `Eq`, `Ord` and `Hash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Amount(u64);

impl Amount {
    /// `v` as an amount.
    pub fn new(v: f64) -> Amount {
        Amount(v.to_bits())
    }

    /// The value.
    pub fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

/// A tool call as a human saw it (an escalation's `proposed_action`, a decision's
/// `modification`) or as an agent made it: the tool and its input's members.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Action {
    /// The tool.
    pub tool_name: String,
    /// The numeric members of the input.
    pub amounts: Vec<(String, Amount)>,
    /// The string members of the input.
    pub args: Vec<(String, String)>,
}

impl Action {
    fn of(tool_name: &str, amounts: &[(String, f64)], args: &[(String, String)]) -> Action {
        Action {
            tool_name: tool_name.to_string(),
            amounts: amounts
                .iter()
                .map(|(k, v)| (k.clone(), Amount::new(*v)))
                .collect(),
            args: args.to_vec(),
        }
    }

    fn from_facts(a: &ActionFacts) -> Action {
        Action::of(&a.tool_name, &a.amounts, &a.args)
    }

    /// Whether an approval of `self` covers `call`: the same tool, the same arguments (the
    /// same members, strings equal), and each amount at most the approved one.
    pub fn covers(&self, call: &Action) -> bool {
        self.tool_name == call.tool_name
            && self.args.len() == call.args.len()
            && self.amounts.len() == call.amounts.len()
            && call
                .args
                .iter()
                .all(|(k, v)| self.args.iter().any(|(k2, v2)| k2 == k && v2 == v))
            && call.amounts.iter().all(|(k, v)| {
                self.amounts
                    .iter()
                    .any(|(k2, max)| k2 == k && v.value() <= max.value())
            })
    }

    /// Whether `call` is the action `self` (same tool, same string arguments), whatever its
    /// amounts.
    pub fn is_same_action(&self, call: &Action) -> bool {
        self.tool_name == call.tool_name
            && self
                .args
                .iter()
                .all(|(k, v)| call.args.iter().any(|(k2, v2)| k2 == k && v2 == v))
    }

    /// For people: `payments.refund(amount=10, card=…)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .amounts
            .iter()
            .map(|(k, v)| format!("{k}={}", v.value()))
            .chain(self.args.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        parts.sort();
        format!("{}({})", self.tool_name, parts.join(", "))
    }
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

/// A tool call made.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Call {
    /// The event.
    pub event_id: String,
    /// Its time, UTC micros.
    pub ts_us: i64,
    /// The agent.
    pub agent_id: String,
    /// The call.
    pub action: Action,
}

/// An escalation to a human.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Escalated {
    /// The event.
    pub event_id: String,
    /// When it was presented (its `presented_at`), else the event's time, UTC micros.
    pub presented_us: i64,
    /// The proposed action, when it is a tool call (none when described in words).
    pub action: Option<Action>,
}

/// A human's decision on an escalation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Decided {
    /// The event.
    pub event_id: String,
    /// The escalation decided.
    pub escalation_id: String,
    /// `approve`, `reject`, `modify` or `escalate`.
    pub decision: String,
    /// When it was decided (its `decided_at`), else the event's time, UTC micros.
    pub decided_us: i64,
    /// The reviewer.
    pub reviewer_id: String,
    /// The agent of the session.
    pub agent_id: String,
    /// The modified action, for `modify`, when it is a tool call.
    pub modification: Option<Action>,
}

impl Decided {
    fn approves(&self) -> bool {
        matches!(self.decision.as_str(), "approve" | "modify")
    }
}

/// What the view keeps of events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyFact {
    /// A rule applies to a tool call.
    Applies(Applies),
    /// A tool call.
    Call(Call),
    /// An escalation.
    Escalated(Escalated),
    /// A decision.
    Decided(Decided),
}

/// The policy facts of `e` under `rules`.
pub fn facts(rules: &[PolicyRule], e: &ChainedEvent) -> Vec<((String, String), PolicyFact)> {
    let ev = &e.event;
    let key = || (ev.tenant_id.as_str().to_string(), ev.session_id.clone());
    match ev.event_type {
        EventType::HumanEscalationTriggered => match &ev.facts {
            PayloadFacts::Escalation {
                presented_us,
                action,
                ..
            } => vec![(
                key(),
                PolicyFact::Escalated(Escalated {
                    event_id: ev.event_id.clone(),
                    presented_us: presented_us.unwrap_or(ev.timestamp_us),
                    action: action.as_ref().map(Action::from_facts),
                }),
            )],
            _ => Vec::new(),
        },
        EventType::HumanReviewDecision => match &ev.facts {
            PayloadFacts::Review {
                escalation_event_id,
                decided_us,
                decision,
                reviewer_id,
                modification,
            } => vec![(
                key(),
                PolicyFact::Decided(Decided {
                    event_id: ev.event_id.clone(),
                    escalation_id: escalation_event_id.clone(),
                    decision: decision.clone(),
                    decided_us: decided_us.unwrap_or(ev.timestamp_us),
                    reviewer_id: reviewer_id.clone(),
                    agent_id: ev.agent_id.clone(),
                    modification: modification.as_ref().map(Action::from_facts),
                }),
            )],
            _ => Vec::new(),
        },
        EventType::ToolCalled => {
            let (tool, elevated, amounts, args) = match &ev.facts {
                PayloadFacts::ToolCall {
                    tool_name,
                    elevated,
                    amounts,
                    args,
                } => (
                    tool_name.as_str(),
                    *elevated,
                    amounts.as_slice(),
                    args.as_slice(),
                ),
                _ => ("", false, &[][..], &[][..]),
            };
            let mut out = vec![(
                key(),
                PolicyFact::Call(Call {
                    event_id: ev.event_id.clone(),
                    ts_us: ev.timestamp_us,
                    agent_id: ev.agent_id.clone(),
                    action: Action::of(tool, amounts, args),
                }),
            )];
            out.extend(
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
                                    None => {
                                        format!("{tool} with unreadable {field} (fails closed)")
                                    }
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
                    }),
            );
            out
        }
        _ => Vec::new(),
    }
}

/// One row of the violations view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// The rule broken.
    pub rule_id: String,
    /// The offending event (a tool call, or a decision).
    pub event_id: String,
    /// Its session.
    pub session_id: String,
    /// Its agent.
    pub agent_id: String,
    /// The tool ("" for an event that is not a tool call).
    pub tool_name: String,
    /// When, UTC micros.
    pub at_us: i64,
    /// What happened, for people.
    pub detail: String,
}

/// An event of a session as the cause-order rule reads it: id, time, parent, agent and tool
/// (if a tool call).
pub struct Timed<'a> {
    /// The event.
    pub event_id: &'a str,
    /// Its time, UTC micros.
    pub ts_us: i64,
    /// Its cause.
    pub parent: Option<&'a str>,
}

/// The violations among one session's facts; `events` are all its events (for the
/// cause-order rule).
pub fn evaluate(session: &str, facts: &[&PolicyFact], events: &[Timed<'_>]) -> Vec<Violation> {
    let mut calls: HashMap<&str, &Call> = HashMap::new();
    let mut escalations: HashMap<&str, &Escalated> = HashMap::new();
    let mut decisions: Vec<&Decided> = Vec::new();
    for f in facts {
        match f {
            PolicyFact::Call(c) => {
                calls.insert(c.event_id.as_str(), c);
            }
            PolicyFact::Escalated(e) => {
                escalations.insert(e.event_id.as_str(), e);
            }
            PolicyFact::Decided(d) => decisions.push(d),
            PolicyFact::Applies(_) => {}
        }
    }
    decisions.sort_by(|a, b| (a.decided_us, &a.event_id).cmp(&(b.decided_us, &b.event_id)));
    // What each decision decided on: the approved (or rejected) action, if a tool call.
    let decided_action = |d: &Decided| -> Option<Action> {
        match (d.decision.as_str(), &d.modification) {
            ("modify", Some(m)) => Some(m.clone()),
            ("modify", None) => None,
            _ => escalations.get(d.escalation_id.as_str())?.action.clone(),
        }
    };
    // An approval covering `call` decided in [after, at].
    let approved = |call: &Action, after: i64, at: i64| -> Option<&Decided> {
        decisions.iter().copied().find(|d| {
            d.approves()
                && d.decided_us >= after
                && d.decided_us <= at
                && decided_action(d).is_some_and(|a| a.covers(call))
        })
    };
    let mut out = Vec::new();
    for f in facts {
        let PolicyFact::Applies(a) = f else { continue };
        let call = calls.get(a.event_id.as_str()).map(|c| &c.action);
        let violation = |detail: String| Violation {
            rule_id: a.rule_id.clone(),
            event_id: a.event_id.clone(),
            session_id: session.to_string(),
            agent_id: a.agent_id.clone(),
            tool_name: a.tool_name.clone(),
            at_us: a.ts_us,
            detail,
        };
        if a.deny {
            out.push(violation(format!("denied: {}", a.detail)));
            continue;
        }
        if call.is_some_and(|c| approved(c, i64::MIN, a.ts_us).is_some()) {
            continue;
        }
        // Why not: the approvals before the call were for something else.
        let before: Vec<&Decided> = decisions
            .iter()
            .copied()
            .filter(|d| d.approves() && d.decided_us <= a.ts_us)
            .collect();
        let detail = match before.last() {
            None => format!("no prior human approval: {}", a.detail),
            Some(d) => match decided_action(d) {
                Some(approved) => format!(
                    "no prior human approval of this action: {}; the approval {} was for {}, \
                     not {}",
                    a.detail,
                    d.event_id,
                    approved.describe(),
                    call.map(Action::describe).unwrap_or_default()
                ),
                None => format!(
                    "no prior human approval of this action: {}; the approval {} was for an \
                     action described in words, which binds no tool call",
                    a.detail, d.event_id
                ),
            },
        };
        out.push(violation(detail));
    }
    // Actions taken after a human rejected them.
    for d in decisions.iter().filter(|d| d.decision == "reject") {
        let Some(rejected) = decided_action(d) else {
            continue;
        };
        for c in calls.values() {
            if c.ts_us >= d.decided_us
                && rejected.is_same_action(&c.action)
                && approved(&c.action, d.decided_us, c.ts_us).is_none()
            {
                out.push(Violation {
                    rule_id: ACTION_AFTER_REJECTION.to_string(),
                    event_id: c.event_id.clone(),
                    session_id: session.to_string(),
                    agent_id: c.agent_id.clone(),
                    tool_name: c.action.tool_name.clone(),
                    at_us: c.ts_us,
                    detail: format!(
                        "{} made after {} rejected it (decision {}, escalation {})",
                        c.action.describe(),
                        d.reviewer_id,
                        d.event_id,
                        d.escalation_id
                    ),
                });
            }
        }
    }
    // Escalations decided both ways.
    let mut first: HashMap<&str, &Decided> = HashMap::new();
    for d in &decisions {
        if d.decision == "escalate" {
            continue;
        }
        match first.get(d.escalation_id.as_str()) {
            None => {
                first.insert(d.escalation_id.as_str(), d);
            }
            Some(f) if f.approves() != d.approves() => out.push(Violation {
                rule_id: CONTRADICTORY_DECISIONS.to_string(),
                event_id: d.event_id.clone(),
                session_id: session.to_string(),
                agent_id: d.agent_id.clone(),
                tool_name: String::new(),
                at_us: d.decided_us,
                detail: format!(
                    "{} by {} contradicts {} by {} (decision {}) on escalation {}",
                    d.decision,
                    d.reviewer_id,
                    f.decision,
                    f.reviewer_id,
                    f.event_id,
                    d.escalation_id
                ),
            }),
            Some(_) => {}
        }
    }
    // Events before their causes; decisions before their escalation was presented.
    // One violation per event, whichever way it came before its cause.
    let times: HashMap<&str, i64> = events.iter().map(|e| (e.event_id, e.ts_us)).collect();
    let mut early: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for e in events {
        let Some(parent) = e.parent else { continue };
        if let Some(&pts) = times.get(parent)
            && e.ts_us < pts
        {
            early.insert(e.event_id);
            out.push(Violation {
                rule_id: BEFORE_CAUSE.to_string(),
                event_id: e.event_id.to_string(),
                session_id: session.to_string(),
                agent_id: String::new(),
                tool_name: calls
                    .get(e.event_id)
                    .map(|c| c.action.tool_name.clone())
                    .unwrap_or_default(),
                at_us: e.ts_us,
                detail: format!("timestamped {} µs before its cause {parent}", pts - e.ts_us),
            });
        }
    }
    for d in &decisions {
        if let Some(e) = escalations.get(d.escalation_id.as_str())
            && d.decided_us < e.presented_us
            && !early.contains(d.event_id.as_str())
        {
            out.push(Violation {
                rule_id: BEFORE_CAUSE.to_string(),
                event_id: d.event_id.clone(),
                session_id: session.to_string(),
                agent_id: d.agent_id.clone(),
                tool_name: String::new(),
                at_us: d.decided_us,
                detail: format!(
                    "decided {} µs before escalation {} was presented",
                    e.presented_us - d.decided_us,
                    d.escalation_id
                ),
            });
        }
    }
    out
}

/// The rule the report tests use: a payments call above 500 needs a prior approval.
#[cfg(test)]
pub(crate) fn refund_approval_rule() -> PolicyRule {
    PolicyRule {
        id: "payments-approval-over-500".into(),
        description: "A payments tool call above 500 needs a prior approval".into(),
        kind: RuleKind::ApprovalRequired,
        tools: vec!["payments.*".into()],
        amount_field: Some("amount".into()),
        above: Some(500.0),
        elevated_only: false,
        tenants: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refund(amount: f64, card: &str) -> Action {
        Action {
            tool_name: "payments.refund".into(),
            amounts: vec![("amount".into(), Amount::new(amount))],
            args: vec![("card".into(), card.into())],
        }
    }

    fn call(id: &str, ts: i64, action: Action) -> PolicyFact {
        PolicyFact::Call(Call {
            event_id: id.into(),
            ts_us: ts,
            agent_id: "agent".into(),
            action,
        })
    }

    fn applies(id: &str, ts: i64) -> PolicyFact {
        PolicyFact::Applies(Applies {
            rule_id: "refund-needs-approval".into(),
            deny: false,
            event_id: id.into(),
            ts_us: ts,
            tool_name: "payments.refund".into(),
            agent_id: "agent".into(),
            detail: "payments.refund".into(),
        })
    }

    fn escalated(id: &str, at: i64, action: Option<Action>) -> PolicyFact {
        PolicyFact::Escalated(Escalated {
            event_id: id.into(),
            presented_us: at,
            action,
        })
    }

    fn decided(id: &str, escalation: &str, decision: &str, at: i64) -> PolicyFact {
        PolicyFact::Decided(Decided {
            event_id: id.into(),
            escalation_id: escalation.into(),
            decision: decision.into(),
            decided_us: at,
            reviewer_id: "reviewer-1".into(),
            agent_id: "agent".into(),
            modification: None,
        })
    }

    fn found(facts: &[PolicyFact], events: &[Timed<'_>]) -> Vec<(String, String)> {
        let refs: Vec<&PolicyFact> = facts.iter().collect();
        let mut out: Vec<(String, String)> = evaluate("s", &refs, events)
            .into_iter()
            .map(|v| (v.rule_id, v.event_id))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn an_approval_covers_only_its_action() {
        let facts = vec![
            escalated("e1", 10, Some(refund(10.0, "tok_card_a"))),
            decided("d1", "e1", "approve", 20),
            // The approved refund, a smaller one, a larger one, another card, another tool.
            call("c1", 30, refund(10.0, "tok_card_a")),
            applies("c1", 30),
            call("c2", 31, refund(7.5, "tok_card_a")),
            applies("c2", 31),
            call("c3", 32, refund(9_000.0, "tok_card_a")),
            applies("c3", 32),
            call("c4", 33, refund(10.0, "tok_card_b")),
            applies("c4", 33),
            // Before the approval.
            call("c5", 15, refund(10.0, "tok_card_a")),
            applies("c5", 15),
        ];
        let r = "refund-needs-approval".to_string();
        assert_eq!(
            found(&facts, &[]),
            vec![
                (r.clone(), "c3".into()),
                (r.clone(), "c4".into()),
                (r.clone(), "c5".into())
            ]
        );
        let refs: Vec<&PolicyFact> = facts.iter().collect();
        let c3 = evaluate("s", &refs, &[])
            .into_iter()
            .find(|v| v.event_id == "c3")
            .expect("c3");
        assert!(
            c3.detail.contains("d1")
                && c3.detail.contains("amount=10")
                && c3.detail.contains("amount=9000"),
            "{}",
            c3.detail
        );
    }

    #[test]
    fn a_modification_is_what_is_approved_and_words_bind_nothing() {
        let mut modify = decided("d1", "e1", "modify", 20);
        if let PolicyFact::Decided(d) = &mut modify {
            d.modification = Some(refund(500.0, "tok_card_a"));
        }
        let facts = vec![
            escalated("e1", 10, Some(refund(900.0, "tok_card_a"))),
            modify,
            call("c1", 30, refund(400.0, "tok_card_a")),
            applies("c1", 30),
            call("c2", 31, refund(900.0, "tok_card_a")),
            applies("c2", 31),
            escalated("e2", 40, None),
            decided("d2", "e2", "approve", 50),
            call("c3", 60, refund(1.0, "tok_card_b")),
            applies("c3", 60),
        ];
        let found = found(&facts, &[]);
        let ids: Vec<&str> = found.iter().map(|(_, e)| e.as_str()).collect();
        assert_eq!(ids, ["c2", "c3"]);
        let refs: Vec<&PolicyFact> = facts.iter().collect();
        let c3 = evaluate("s", &refs, &[])
            .into_iter()
            .find(|v| v.event_id == "c3")
            .expect("c3");
        assert!(c3.detail.contains("described in words"), "{}", c3.detail);
    }

    #[test]
    fn an_action_after_its_rejection_is_flagged_unless_approved_again() {
        let facts = vec![
            escalated("e1", 10, Some(refund(900.0, "tok_card_a"))),
            call("c0", 15, refund(900.0, "tok_card_a")),
            decided("d1", "e1", "reject", 20),
            call("c1", 30, refund(900.0, "tok_card_a")),
            call("c2", 31, refund(50.0, "tok_card_a")),
            call("c3", 32, refund(900.0, "tok_card_b")),
            escalated("e2", 40, Some(refund(900.0, "tok_card_a"))),
            decided("d2", "e2", "approve", 50),
            call("c4", 60, refund(900.0, "tok_card_a")),
        ];
        let a = ACTION_AFTER_REJECTION.to_string();
        assert_eq!(
            found(&facts, &[]),
            vec![(a.clone(), "c1".into()), (a.clone(), "c2".into())]
        );
    }

    #[test]
    fn contradictory_decisions_and_effects_before_causes() {
        let facts = vec![
            escalated("e1", 100, Some(refund(9.0, "x"))),
            decided("d1", "e1", "approve", 110),
            decided("d2", "e1", "escalate", 120),
            decided("d3", "e1", "modify", 130),
            decided("d4", "e1", "reject", 140),
            escalated("e2", 200, None),
            decided("d5", "e2", "reject", 150),
        ];
        let events = [
            Timed {
                event_id: "p",
                ts_us: 50,
                parent: None,
            },
            Timed {
                event_id: "ok",
                ts_us: 60,
                parent: Some("p"),
            },
            Timed {
                event_id: "early",
                ts_us: 40,
                parent: Some("p"),
            },
            Timed {
                event_id: "orphan",
                ts_us: 1,
                parent: Some("elsewhere"),
            },
        ];
        assert_eq!(
            found(&facts, &events),
            vec![
                (BEFORE_CAUSE.to_string(), "d5".into()),
                (BEFORE_CAUSE.to_string(), "early".into()),
                (CONTRADICTORY_DECISIONS.to_string(), "d4".into()),
            ]
        );
    }

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
