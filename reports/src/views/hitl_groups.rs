//! Human oversight per agent and risk tier: review latency, rubber stamps, SLA misses and how
//! often humans override the agent.
//!
//! The rows: `((tenant_id, "agent_id/risk_tier"), HitlGroupStats)`, the latency statistics
//! of the group's completed reviews (percentiles within
//! [`super::reviews::SKETCH_ALPHA`]), and its decisions by outcome with the override rate
//! (rejected or modified over all decisions) and the rejection rate. They are computed from
//! each group's sketch by [`super::review_sketches`], which documents the state and its
//! bound.

use custody_operators::record::HitlStats;
use serde::{Deserialize, Serialize};

use super::hitl_latency::{Outcome, Review, stats};

/// One row of the HITL groups view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HitlGroupStats {
    /// The agent that escalated.
    pub agent_id: String,
    /// The escalations' risk tier.
    pub risk_tier: String,
    /// Latency statistics.
    #[serde(flatten)]
    pub stats: HitlStats,
    /// Approved as proposed.
    pub approved: i64,
    /// Rejected.
    pub rejected: i64,
    /// Approved with changes.
    pub modified: i64,
    /// Passed on to another reviewer.
    pub escalated: i64,
    /// (rejected + modified) / reviews, in per mille.
    pub override_permille: i64,
    /// rejected / reviews, in per mille.
    pub rejection_permille: i64,
}

/// A review with its outcome.
pub type GroupReview = (Review, Outcome);

impl HitlGroupStats {
    /// A group's row from its latency statistics and its decisions by outcome.
    pub fn new(
        agent: &str,
        tier: &str,
        stats: HitlStats,
        approved: i64,
        rejected: i64,
        modified: i64,
        escalated: i64,
    ) -> Self {
        let n = stats.reviews.max(1);
        HitlGroupStats {
            agent_id: agent.to_string(),
            risk_tier: tier.to_string(),
            approved,
            rejected,
            modified,
            escalated,
            override_permille: (rejected + modified) * 1000 / n,
            rejection_permille: rejected * 1000 / n,
            stats,
        }
    }
}

/// The plain reviews of `sorted` and their counts by outcome
/// (`[approve, reject, modify, escalate]`): what the exact oracles summarize.
pub fn split_outcomes(sorted: &[(GroupReview, isize)]) -> (Vec<(Review, isize)>, [i64; 4]) {
    let plain: Vec<(Review, isize)> = sorted.iter().map(|((r, _), c)| (*r, *c)).collect();
    let count = |o: Outcome| -> i64 {
        sorted
            .iter()
            .filter(|((_, x), _)| *x == o)
            .map(|(_, c)| *c as i64)
            .sum()
    };
    (
        plain,
        [
            count(Outcome::Approve),
            count(Outcome::Reject),
            count(Outcome::Modify),
            count(Outcome::Escalate),
        ],
    )
}

/// Summarizes one group's reviews exactly, sorted, each with its multiplicity (the oracle of
/// the sketched rows).
pub fn group_stats(agent: &str, tier: &str, sorted: &[(GroupReview, isize)]) -> HitlGroupStats {
    let (plain, [approved, rejected, modified, escalated]) = split_outcomes(sorted);
    HitlGroupStats::new(
        agent,
        tier,
        stats(&plain),
        approved,
        rejected,
        modified,
        escalated,
    )
}
