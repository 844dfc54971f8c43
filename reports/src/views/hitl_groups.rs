//! Human oversight per agent and risk tier: review latency, rubber stamps, SLA misses and how
//! often humans override the agent.
//!
//! # Inputs
//! The escalations and decisions of [`super::hitl_latency`].
//!
//! # Outputs
//! `((tenant_id, "agent_id/risk_tier"), HitlGroupStats)`: the latency statistics of the
//! group's completed reviews, and its decisions by outcome with the override rate (rejected or
//! modified over all decisions) and the rejection rate.
//!
//! # State
//! The join's arrangements (shared shape with `hitl_latency`) and the group's reviews.

use custody_operators::record::{Epoch, HitlStats};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::hitl_latency::{Decision, Escalation, HitlConfig, Outcome, Review, review, stats};

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

/// Joins escalations with their decisions and summarizes per (tenant, agent, risk tier).
pub fn hitl_groups<'scope>(
    escalations: VecCollection<'scope, Epoch, Escalation>,
    decisions: VecCollection<'scope, Epoch, Decision>,
    cfg: HitlConfig,
) -> VecCollection<'scope, Epoch, ((String, String), HitlGroupStats)> {
    escalations
        .join(decisions)
        .map(move |((tenant, _id), (esc, dec))| {
            let r = review(
                esc.presented_us,
                esc.sla_s,
                dec.decided_us,
                dec.outcome == Outcome::Approve,
                cfg,
            );
            (
                (tenant, format!("{}/{}", esc.agent_id, esc.risk_tier)),
                (r, dec.outcome),
            )
        })
        .reduce_named("HitlGroups", |(_tenant, group), input, output| {
            let (agent, tier) = group.rsplit_once('/').unwrap_or((group.as_str(), ""));
            let sorted: Vec<(GroupReview, isize)> = input.iter().map(|(r, c)| (**r, *c)).collect();
            output.push((group_stats(agent, tier, &sorted), 1));
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::views::hitl_latency::{DecisionFact, EscalationFact};
    use crate::views::oracle::{lcg, run};

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    enum In {
        E(Escalation),
        D(Decision),
    }

    #[test]
    fn oracle_matches_recomputation() {
        let cfg = HitlConfig::default();
        let outcomes = [
            Outcome::Approve,
            Outcome::Reject,
            Outcome::Modify,
            Outcome::Escalate,
        ];
        for seed in 1..=5u64 {
            let mut rng = lcg(seed);
            let mut inputs = Vec::new();
            for i in 0..80 {
                let key = (format!("t{}", rng() % 2), format!("esc-{i}"));
                let esc = EscalationFact {
                    presented_us: (rng() % 1000) as i64 * 1_000_000,
                    sla_s: [60, 300][(rng() % 2) as usize],
                    agent_id: format!("agent-{}", rng() % 3),
                    risk_tier: ["low", "high"][(rng() % 2) as usize].to_string(),
                };
                inputs.push((rng() % 6, In::E((key.clone(), esc.clone()))));
                if !rng().is_multiple_of(5) {
                    let dec = DecisionFact {
                        decided_us: esc.presented_us + (rng() % 600_000) as i64 * 1000,
                        outcome: outcomes[(rng() % 4) as usize],
                    };
                    inputs.push((rng() % 6, In::D((key, dec))));
                }
            }
            let states = run(inputs.clone(), 6, move |c| {
                let e = c.clone().flat_map(|i| match i {
                    In::E(e) => Some(e),
                    In::D(_) => None,
                });
                let d = c.flat_map(|i| match i {
                    In::D(d) => Some(d),
                    In::E(_) => None,
                });
                hitl_groups(e, d, cfg)
            });
            for epoch in 0..6u64 {
                let seen: Vec<&In> = inputs
                    .iter()
                    .filter(|(t, _)| *t <= epoch)
                    .map(|(_, i)| i)
                    .collect();
                let mut groups: BTreeMap<(String, String), Vec<(GroupReview, isize)>> =
                    BTreeMap::new();
                for i in &seen {
                    let In::D((key, dec)) = i else { continue };
                    for j in &seen {
                        if let In::E((k2, esc)) = j
                            && k2 == key
                        {
                            let r = review(
                                esc.presented_us,
                                esc.sla_s,
                                dec.decided_us,
                                dec.outcome == Outcome::Approve,
                                cfg,
                            );
                            groups
                                .entry((
                                    key.0.clone(),
                                    format!("{}/{}", esc.agent_id, esc.risk_tier),
                                ))
                                .or_default()
                                .push(((r, dec.outcome), 1));
                        }
                    }
                }
                let want: BTreeMap<_, isize> = groups
                    .into_iter()
                    .map(|((t, g), mut rs)| {
                        rs.sort();
                        let (a, tier) = g.rsplit_once('/').unwrap();
                        let s = group_stats(a, tier, &rs);
                        (((t, g.clone()), s), 1)
                    })
                    .collect();
                assert_eq!(states[&epoch], want, "seed {seed} epoch {epoch}");
            }
        }
    }
}
