//! Human oversight per reviewer: how many reviews each person made, how fast, how often they
//! approved faster than the rubber-stamp threshold, and how often they overrode the agent.
//!
//! The rows: `((tenant_id, reviewer_id), ReviewerStats)`, from every completed review (an
//! escalation paired with a decision, [`super::reviews`]) under the decision's
//! `reviewer_id`. Latency percentiles are within [`super::reviews::SKETCH_ALPHA`]; counts are
//! exact. Computed from each reviewer's sketch by [`super::review_sketches`], which documents
//! the state and its bound (one sketch per reviewer: the people of a tenant, not its events).
//!
//! It answers the seeds' "rubber stamps listed per reviewer": a reviewer whose approvals are
//! mostly faster than the threshold is not meaningfully in the loop, however good the
//! tenant's average looks.

use custody_operators::record::HitlStats;
use serde::{Deserialize, Serialize};

use super::hitl_groups::{GroupReview, split_outcomes};
use super::hitl_latency::stats;

/// One row of the reviewers view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReviewerStats {
    /// The reviewer, as the decisions name them.
    pub reviewer_id: String,
    /// Latency statistics, with the reviewer's rubber stamps and late decisions.
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
    /// rubber stamps / approvals, in per mille.
    pub rubber_stamp_permille: i64,
    /// (rejected + modified) / reviews, in per mille.
    pub override_permille: i64,
}

impl ReviewerStats {
    /// A reviewer's row from their latency statistics and decisions by outcome
    /// (`[approve, reject, modify, escalate]`).
    pub fn new(reviewer: &str, stats: HitlStats, outcomes: [i64; 4]) -> Self {
        let [approved, rejected, modified, escalated] = outcomes;
        ReviewerStats {
            reviewer_id: reviewer.to_string(),
            rubber_stamp_permille: stats.rubber_stamps * 1000 / approved.max(1),
            override_permille: (rejected + modified) * 1000 / stats.reviews.max(1),
            approved,
            rejected,
            modified,
            escalated,
            stats,
        }
    }
}

/// Summarizes one reviewer's reviews exactly, sorted, each with its multiplicity (the oracle
/// of the sketched rows).
pub fn reviewer_stats(reviewer: &str, sorted: &[(GroupReview, isize)]) -> ReviewerStats {
    let (plain, outcomes) = split_outcomes(sorted);
    ReviewerStats::new(reviewer, stats(&plain), outcomes)
}
