//! Human oversight per agent and risk tier: review latency, rubber stamps, SLA misses and how
//! often humans override the agent.
//!
//! # Inputs
//! `((tenant_id, "agent_id/risk_tier"), GroupFact)` from [`super::reviews`]: every review as
//! a sketch bucket with its flags and outcome, and the exact maximum.
//!
//! # Outputs
//! `((tenant_id, "agent_id/risk_tier"), HitlGroupStats)`: the latency statistics of the
//! group's completed reviews, and its decisions by outcome with the override rate (rejected or
//! modified over all decisions) and the rejection rate.
//!
//! # State and its bound
//! Per group: its buckets × flags × outcomes, and a maximum per worker (percentiles within
//! 1%, as in [`super::hitl_latency`]).

use custody_operators::record::{Epoch, HitlStats};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::hitl_latency::{Outcome, Review, stats};
use super::reviews::{GroupFact, bucket_value};

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

/// Summarizes one group's reviews, sorted, each with its multiplicity.
pub fn group_stats(agent: &str, tier: &str, sorted: &[(GroupReview, isize)]) -> HitlGroupStats {
    let plain: Vec<(Review, isize)> = sorted.iter().map(|((r, _), c)| (*r, *c)).collect();
    let stats = stats(&plain);
    let count = |o: Outcome| -> i64 {
        sorted
            .iter()
            .filter(|((_, x), _)| *x == o)
            .map(|(_, c)| *c as i64)
            .sum()
    };
    let n = stats.reviews.max(1);
    let (rejected, modified) = (count(Outcome::Reject), count(Outcome::Modify));
    HitlGroupStats {
        agent_id: agent.to_string(),
        risk_tier: tier.to_string(),
        approved: count(Outcome::Approve),
        rejected,
        modified,
        escalated: count(Outcome::Escalate),
        override_permille: (rejected + modified) * 1000 / n,
        rejection_permille: rejected * 1000 / n,
        stats,
    }
}

/// Summarizes each (tenant, agent, risk tier) group's reviews from its sketch.
pub fn hitl_groups<'scope>(
    facts: VecCollection<'scope, Epoch, ((String, String), GroupFact)>,
) -> VecCollection<'scope, Epoch, ((String, String), HitlGroupStats)> {
    facts.reduce_named("HitlGroups", |(_tenant, group), input, output| {
        let (agent, tier) = group.rsplit_once('/').unwrap_or((group.as_str(), ""));
        let mut reviews: Vec<(GroupReview, isize)> = Vec::new();
        let mut max: Option<i64> = None;
        for (fact, n) in input {
            match fact {
                GroupFact::Bucket(b, rubber, over, outcome) => {
                    reviews.push((((bucket_value(*b), *rubber, *over), *outcome), *n));
                }
                GroupFact::Max(ms) => max = max.max(Some(*ms)),
            }
        }
        if reviews.is_empty() {
            return;
        }
        reviews.sort();
        let mut s = group_stats(agent, tier, &reviews);
        s.stats.max_ms = max.unwrap_or(s.stats.max_ms);
        output.push((s, 1));
    })
}
