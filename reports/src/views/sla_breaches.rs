//! Escalations still waiting for a human past their SLA, detected as time passes.
//!
//! # Inputs
//! - the escalations and decisions of [`super::hitl_latency`];
//! - `clock`: the pipeline's wall clock (UTC micros), one value at a time; the driver moves it
//!   at every epoch, and opens an epoch on a timer when no input arrives, so a breach shows up
//!   even when nothing else happens.
//!
//! # Outputs
//! `((tenant_id, escalation_event_id), SlaBreach)` for every escalation with no decision whose
//! deadline (`presented_at + sla_seconds`) is before the clock. The row leaves the view when a
//! decision arrives (a late decision then counts in `over_sla` of the latency views).
//!
//! # State
//! Undecided escalations (the antijoin's arrangements) and the current clock.

use custody_operators::record::Epoch;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::hitl_latency::{Decision, Escalation, EscalationFact};

/// One row of the SLA breaches view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlaBreach {
    /// The escalation.
    pub escalation_event_id: String,
    /// The agent waiting on it.
    pub agent_id: String,
    /// Its risk tier.
    pub risk_tier: String,
    /// When it was presented, UTC micros.
    pub presented_us: i64,
    /// When the SLA ran out, UTC micros.
    pub deadline_us: i64,
}

impl SlaBreach {
    fn new(id: &str, e: &EscalationFact) -> SlaBreach {
        SlaBreach {
            escalation_event_id: id.to_string(),
            agent_id: e.agent_id.clone(),
            risk_tier: e.risk_tier.clone(),
            presented_us: e.presented_us,
            deadline_us: deadline(e),
        }
    }
}

/// When the escalation's SLA runs out.
pub fn deadline(e: &EscalationFact) -> i64 {
    e.presented_us
        .saturating_add(e.sla_s.saturating_mul(1_000_000))
}

/// Undecided escalations past their deadline at the current clock.
pub fn sla_breaches<'scope>(
    escalations: VecCollection<'scope, Epoch, Escalation>,
    decisions: VecCollection<'scope, Epoch, Decision>,
    clock: VecCollection<'scope, Epoch, i64>,
) -> VecCollection<'scope, Epoch, ((String, String), SlaBreach)> {
    let decided = decisions.map(|(key, _)| key).distinct();
    escalations
        .antijoin(decided)
        .map(|(key, e)| ((), (key, e)))
        .join_map(clock.map(|now| ((), now)), |_, (key, e), now| {
            (deadline(e) < *now).then(|| (key.clone(), SlaBreach::new(&key.1, e)))
        })
        .flat_map(|x| x)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::views::hitl_latency::{DecisionFact, Outcome};
    use crate::views::oracle::{lcg, run};

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    enum In {
        E(Escalation),
        D(Decision),
        /// The clock moves from `.0` to `.1`.
        Tick(Option<i64>, i64),
    }

    /// Time passing alone raises breaches; decisions clear them.
    #[test]
    fn oracle_matches_recomputation() {
        for seed in 1..=5u64 {
            let mut rng = lcg(seed);
            let epochs = 8u64;
            let mut inputs = Vec::new();
            let mut prev = None;
            for epoch in 0..epochs {
                let now = (epoch as i64) * 100_000_000;
                inputs.push((epoch, In::Tick(prev, now)));
                prev = Some(now);
            }
            for i in 0..60 {
                let key = (format!("t{}", rng() % 2), format!("esc-{i}"));
                let e = EscalationFact {
                    presented_us: (rng() % 600) as i64 * 1_000_000,
                    sla_s: [60, 300][(rng() % 2) as usize],
                    agent_id: "a".into(),
                    risk_tier: "high".into(),
                };
                inputs.push((rng() % epochs, In::E((key.clone(), e))));
                if rng().is_multiple_of(2) {
                    let d = DecisionFact {
                        decided_us: 0,
                        outcome: Outcome::Approve,
                    };
                    inputs.push((rng() % epochs, In::D((key, d))));
                }
            }
            let states = run(inputs.clone(), epochs, |c| {
                let e = c.clone().flat_map(|i| match i {
                    In::E(e) => Some(e),
                    _ => None,
                });
                let d = c.clone().flat_map(|i| match i {
                    In::D(d) => Some(d),
                    _ => None,
                });
                let clock = c
                    .flat_map(|i| match i {
                        In::Tick(prev, now) => vec![(now, 1isize)]
                            .into_iter()
                            .chain(prev.map(|p| (p, -1)))
                            .collect(),
                        _ => Vec::new(),
                    })
                    .explode(|(t, r)| Some((t, r)));
                sla_breaches(e, d, clock)
            });
            let mut raised = 0;
            for epoch in 0..epochs {
                let now = (epoch as i64) * 100_000_000;
                let seen: Vec<&In> = inputs
                    .iter()
                    .filter(|(t, _)| *t <= epoch)
                    .map(|(_, i)| i)
                    .collect();
                let decided: BTreeSet<&(String, String)> = seen
                    .iter()
                    .filter_map(|i| match i {
                        In::D((k, _)) => Some(k),
                        _ => None,
                    })
                    .collect();
                let want: BTreeMap<_, isize> = seen
                    .iter()
                    .filter_map(|i| match i {
                        In::E((k, e)) if !decided.contains(k) && deadline(e) < now => {
                            Some(((k.clone(), SlaBreach::new(&k.1, e)), 1))
                        }
                        _ => None,
                    })
                    .collect();
                raised += want.len();
                assert_eq!(states[&epoch], want, "seed {seed} epoch {epoch}");
            }
            assert!(raised > 0, "the test raises breaches");
        }
    }
}
