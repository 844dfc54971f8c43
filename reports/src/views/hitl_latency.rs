//! Human-in-the-loop review latency per tenant.
//!
//! The facts the HITL views read from events (escalations and decisions), and the statistics
//! of a set of reviews.
//!
//! The rows: `(tenant_id, HitlStats)`, completed reviews, p50/p95/max presented→decided
//! latency (nearest-rank percentiles from a DDSketch with relative accuracy 1%, milliseconds;
//! count and maximum exact), approvals faster than the rubber-stamp threshold, and decisions
//! later than the escalation's SLA. They are computed from each tenant's sketch by
//! [`super::review_sketches`], which documents the state and its bound.

use custody_operators::record::{ChainedEvent, HitlStats};
use custody_schemas::PayloadFacts;

use serde::{Deserialize, Serialize};

/// View settings.
#[derive(Clone, Copy, Debug)]
pub struct HitlConfig {
    /// Approvals faster than this are rubber stamps.
    pub rubber_stamp_ms: i64,
}

impl Default for HitlConfig {
    fn default() -> Self {
        HitlConfig {
            rubber_stamp_ms: 5_000,
        }
    }
}

/// What the views keep of a `HUMAN_ESCALATION_TRIGGERED` event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EscalationFact {
    /// When the action was presented, UTC micros.
    pub presented_us: i64,
    /// Review SLA, seconds.
    pub sla_s: i64,
    /// The agent that escalated.
    pub agent_id: String,
    /// `low`, `medium`, `high` or `critical`.
    pub risk_tier: String,
}

/// A reviewer's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Approved as proposed.
    Approve,
    /// Rejected: a human override.
    Reject,
    /// Approved with changes: a human override.
    Modify,
    /// Passed up to another reviewer.
    Escalate,
}

impl Outcome {
    /// Parses the wire value.
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "approve" => Outcome::Approve,
            "reject" => Outcome::Reject,
            "modify" => Outcome::Modify,
            "escalate" => Outcome::Escalate,
            _ => return None,
        })
    }

    /// Whether the human overrode the agent (rejected or changed its proposal).
    pub fn is_override(self) -> bool {
        matches!(self, Outcome::Reject | Outcome::Modify)
    }
}

/// What the views keep of a `HUMAN_REVIEW_DECISION` event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DecisionFact {
    /// When the decision was made, UTC micros.
    pub decided_us: i64,
    /// The decision.
    pub outcome: Outcome,
    /// Who decided.
    pub reviewer_id: String,
}

/// An escalation keyed for the join.
pub type Escalation = ((String, String), EscalationFact);
/// A decision keyed for the join.
pub type Decision = ((String, String), DecisionFact);

/// Extraction from chained events.
pub trait FromEvent: Sized {
    /// The view input carried by `event`, if any.
    fn from_event(event: &ChainedEvent) -> Option<Self>;
}

impl FromEvent for Escalation {
    fn from_event(e: &ChainedEvent) -> Option<Self> {
        let PayloadFacts::Escalation {
            presented_us: Some(presented_us),
            sla_seconds: Some(sla_s),
            risk_tier,
            ..
        } = &e.event.facts
        else {
            return None;
        };
        Some((
            (
                e.event.tenant_id.as_str().to_string(),
                e.event.event_id.clone(),
            ),
            EscalationFact {
                presented_us: *presented_us,
                sla_s: *sla_s,
                agent_id: e.event.agent_id.clone(),
                risk_tier: risk_tier.clone(),
            },
        ))
    }
}

impl FromEvent for Decision {
    fn from_event(e: &ChainedEvent) -> Option<Self> {
        let PayloadFacts::Review {
            escalation_event_id,
            decided_us: Some(decided_us),
            decision,
            reviewer_id,
            ..
        } = &e.event.facts
        else {
            return None;
        };
        Some((
            (
                e.event.tenant_id.as_str().to_string(),
                escalation_event_id.clone(),
            ),
            DecisionFact {
                decided_us: *decided_us,
                outcome: Outcome::parse(decision)?,
                reviewer_id: reviewer_id.clone(),
            },
        ))
    }
}

/// One completed review: `(latency_ms, rubber_stamp, over_sla)`.
pub type Review = (i64, bool, bool);

/// Classifies a joined escalation/decision pair.
pub fn review(
    presented_us: i64,
    sla_s: i64,
    decided_us: i64,
    approved: bool,
    cfg: HitlConfig,
) -> Review {
    let latency_ms = (decided_us - presented_us) / 1000;
    (
        latency_ms,
        approved && latency_ms < cfg.rubber_stamp_ms,
        latency_ms > sla_s * 1000,
    )
}

/// Statistics over reviews sorted by latency, each with its multiplicity.
pub fn stats(sorted: &[(Review, isize)]) -> HitlStats {
    let n: isize = sorted.iter().map(|(_, c)| c).sum();
    let rank = |p: i64| -> i64 {
        // Nearest rank: the smallest value with at least p% of reviews at or below it.
        let target = ((p as isize * n) + 99) / 100;
        let mut seen = 0;
        for ((latency, _, _), c) in sorted {
            seen += c;
            if seen >= target.max(1) {
                return *latency;
            }
        }
        0
    };
    HitlStats {
        reviews: n as i64,
        p50_ms: rank(50),
        p95_ms: rank(95),
        max_ms: sorted.last().map_or(0, |((l, _, _), _)| *l),
        rubber_stamps: sorted
            .iter()
            .filter(|((_, r, _), _)| *r)
            .map(|(_, c)| *c as i64)
            .sum(),
        over_sla: sorted
            .iter()
            .filter(|((_, _, o), _)| *o)
            .map(|(_, c)| *c as i64)
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let reviews: Vec<(Review, isize)> =
            (1..=20).map(|l| ((l * 100, false, false), 1)).collect();
        let s = stats(&reviews);
        assert_eq!(
            (s.reviews, s.p50_ms, s.p95_ms, s.max_ms),
            (20, 1000, 1900, 2000)
        );
        let one = stats(&[((7, true, true), 3)]);
        assert_eq!(
            (one.reviews, one.p50_ms, one.rubber_stamps, one.over_sla),
            (3, 7, 3, 3)
        );
    }
}
