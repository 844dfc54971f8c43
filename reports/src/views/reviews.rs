//! Pairs each human escalation with its review decisions, keeping only what is not yet
//! paired: the input of the HITL views ([`super::hitl_latency`], [`super::hitl_groups`],
//! [`super::sla_breaches`]).
//!
//! # Inputs
//! Escalations and decisions keyed by `(tenant_id, escalation_event_id)`, exchanged by that
//! key (and, from a snapshot, [`PairingState`]s).
//!
//! # Outputs ([`ReviewOut`])
//! - `Pending`: an escalation with no decision yet, inserted when it arrives and retracted
//!   when its first decision does (what SLA breaches are found among);
//! - `Sketch`: every (escalation, decision) pair as a review for the sketches of its tenant,
//!   of its (agent, risk tier) group and of its reviewer ([`super::review_sketches`]), sent
//!   once per sketch;
//! - `State`: this operator's state at snapshot epochs.
//!
//! # State and its bound
//! Escalations without a decision (open work: an undecided escalation stays until decided),
//! and decided ones for `grace_epochs` after their first decision (for further decisions);
//! decisions whose escalation has not arrived, for `idle_epochs`.
//!
//! # Metrics
//! `custody_view_state{view="reviews",kind=escalations|orphans}`;
//! `custody_view_late_events_total{view="reviews"}`: decisions dropped unpaired (their
//! escalation never came within `idle_epochs`, or came and was retired).

use std::collections::HashMap;

use custody_operators::Metrics;
use custody_operators::record::Epoch;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;

use super::epoch_stash::{EpochStash, Ready};
use super::hitl_latency::{
    Decision, DecisionFact, Escalation, EscalationFact, HitlConfig, Outcome, review,
};
use super::review_sketches::{Group, Reviewed, SketchIn};
use super::session_scoped::RetireConfig;

/// Relative accuracy of the latency sketch: a reported percentile is within 1% of the exact
/// nearest-rank value (then rounded to the millisecond).
pub const SKETCH_ALPHA: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + SKETCH_ALPHA) / (1.0 - SKETCH_ALPHA)
}

/// The sketch bucket of a latency in ms (DDSketch): 0 for 0; for `|l| >= 1`, the sign of `l`
/// times `1 + ceil(log_γ |l|)`, γ = (1+α)/(1-α).
pub fn bucket(latency_ms: i64) -> i32 {
    if latency_ms == 0 {
        return 0;
    }
    let k = ((latency_ms.unsigned_abs() as f64).ln() / gamma().ln()).ceil() as i32;
    latency_ms.signum() as i32 * (k + 1)
}

/// The value a bucket stands for: within α of every latency in it.
pub fn bucket_value(b: i32) -> i64 {
    if b == 0 {
        return 0;
    }
    let g = gamma();
    let v = 2.0 * g.powi(b.abs() - 1) / (g + 1.0);
    b.signum() as i64 * v.round() as i64
}

/// The operator's state in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairingState {
    /// An escalation, undecided or decided at an epoch.
    Escalation {
        /// `(tenant, escalation id)`.
        key: (String, String),
        /// The escalation.
        fact: EscalationFact,
        /// The epoch of its first decision.
        decided: Option<Epoch>,
    },
    /// Decisions waiting for their escalation since an epoch.
    Orphans {
        /// `(tenant, escalation id)`.
        key: (String, String),
        /// The decisions.
        decisions: Vec<DecisionFact>,
        /// When the first arrived.
        since: Epoch,
    },
}

/// What the operator reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReviewIn {
    /// An escalation.
    Escalation(Escalation),
    /// A decision.
    Decision(Decision),
    /// State from a snapshot.
    Restore(PairingState),
}

impl ReviewIn {
    fn route(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        match self {
            ReviewIn::Escalation((key, _)) | ReviewIn::Decision((key, _)) => key.hash(&mut h),
            ReviewIn::Restore(
                PairingState::Escalation { key, .. } | PairingState::Orphans { key, .. },
            ) => key.hash(&mut h),
        }
        h.finish()
    }
}

/// What the operator sends.
#[derive(Clone, Debug)]
pub enum ReviewOut {
    /// An undecided escalation (+1) or its first decision (-1).
    Pending(Escalation, isize),
    /// A review for a sketch.
    Sketch(SketchIn),
    /// State, at a snapshot epoch.
    State(PairingState),
}

struct Held {
    fact: EscalationFact,
    decided: Option<Epoch>,
}

/// One (escalation, decision) pair: a review for its tenant's and its group's sketches.
fn pair(
    hitl: HitlConfig,
    key: &(String, String),
    esc: &EscalationFact,
    dec: &DecisionFact,
    out: &mut Vec<ReviewOut>,
) {
    let (latency_ms, rubber_stamp, over_sla) = review(
        esc.presented_us,
        esc.sla_s,
        dec.decided_us,
        dec.outcome == Outcome::Approve,
        hitl,
    );
    let reviewed = Reviewed {
        latency_ms,
        rubber_stamp,
        over_sla,
        outcome: dec.outcome,
    };
    let group = format!("{}/{}", esc.agent_id, esc.risk_tier);
    for g in [
        Group::AgentTier(group),
        Group::Reviewer(dec.reviewer_id.clone()),
    ] {
        out.push(ReviewOut::Sketch(SketchIn::Review(
            (key.0.clone(), g),
            reviewed.clone(),
        )));
    }
    out.push(ReviewOut::Sketch(SketchIn::Review(
        (key.0.clone(), Group::Tenant),
        reviewed,
    )));
}

/// Pairs escalations with decisions; see the module documentation.
pub fn reviews<'scope>(
    input: StreamVec<'scope, Epoch, ReviewIn>,
    ticks: StreamVec<'scope, Epoch, ()>,
    hitl: HitlConfig,
    retire: RetireConfig,
    snapshot_every: u64,
    metrics: &Metrics,
) -> StreamVec<'scope, Epoch, ReviewOut> {
    let gauge = |kind| metrics.view_state.with_label_values(&["reviews", kind]);
    let (held_gauge, orphans_gauge) = (gauge("escalations"), gauge("orphans"));
    let late = metrics.view_late_events.with_label_values(&["reviews"]);
    input.binary_frontier(
        ticks,
        Exchange::new(ReviewIn::route),
        Pipeline,
        "Reviews",
        move |_, _| {
            let mut stash: EpochStash<ReviewIn> = EpochStash::default();
            let mut held: HashMap<(String, String), Held> = HashMap::new();
            let mut orphans: HashMap<(String, String), (Vec<DecisionFact>, Epoch)> = HashMap::new();
            move |(input, input_frontier), (ticks, ticks_frontier), output| {
                stash.receive(input, ticks);
                while let Some(Ready {
                    time: t,
                    cap,
                    data: inputs,
                    ticked,
                }) = stash.next_ready(input_frontier, ticks_frontier)
                {
                    let mut out: Vec<ReviewOut> = Vec::new();
                    for input in inputs {
                        match input {
                            ReviewIn::Restore(PairingState::Escalation { key, fact, decided }) => {
                                if decided.is_none() {
                                    out.push(ReviewOut::Pending((key.clone(), fact.clone()), 1));
                                }
                                held.insert(key, Held { fact, decided });
                            }
                            ReviewIn::Restore(PairingState::Orphans {
                                key,
                                decisions,
                                since,
                            }) => {
                                orphans.insert(key, (decisions, since));
                            }
                            ReviewIn::Escalation((key, fact)) => {
                                if held.contains_key(&key) {
                                    // The same escalation again (a replayed event): once.
                                    continue;
                                }
                                let mut decided = None;
                                if let Some((decisions, _)) = orphans.remove(&key) {
                                    for dec in &decisions {
                                        pair(hitl, &key, &fact, dec, &mut out);
                                    }
                                    decided = Some(t);
                                } else {
                                    out.push(ReviewOut::Pending((key.clone(), fact.clone()), 1));
                                }
                                held.insert(key, Held { fact, decided });
                            }
                            ReviewIn::Decision((key, dec)) => match held.get_mut(&key) {
                                Some(h) => {
                                    pair(hitl, &key, &h.fact, &dec, &mut out);
                                    if h.decided.is_none() {
                                        h.decided = Some(t);
                                        out.push(ReviewOut::Pending(
                                            (key.clone(), h.fact.clone()),
                                            -1,
                                        ));
                                    }
                                }
                                None => orphans.entry(key).or_insert((Vec::new(), t)).0.push(dec),
                            },
                        }
                    }
                    // Retire what is paired and past its grace, and orphans past the idle time.
                    held.retain(|_, h| h.decided.is_none_or(|d| d + retire.grace_epochs > t));
                    orphans.retain(|_, (decisions, since)| {
                        let keep = *since + retire.idle_epochs > t;
                        if !keep {
                            late.inc_by(decisions.len() as u64);
                        }
                        keep
                    });
                    held_gauge.set(held.len() as i64);
                    orphans_gauge.set(orphans.len() as i64);
                    if ticked && crate::snapshot::is_snapshot_epoch(t, snapshot_every) {
                        for (key, h) in &held {
                            out.push(ReviewOut::State(PairingState::Escalation {
                                key: key.clone(),
                                fact: h.fact.clone(),
                                decided: h.decided,
                            }));
                        }
                        for (key, (decisions, since)) in &orphans {
                            out.push(ReviewOut::State(PairingState::Orphans {
                                key: key.clone(),
                                decisions: decisions.clone(),
                                since: *since,
                            }));
                        }
                    }
                    output.session(&cap).give_iterator(out.into_iter());
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use custody_operators::record::HitlStats;
    use differential_dataflow::input::Input as _;
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::capture::Capture;
    use timely::dataflow::operators::vec::Map;

    use super::*;
    use crate::IntoUpdates;
    use crate::views::hitl_groups::{GroupReview, HitlGroupStats, group_stats};
    use crate::views::hitl_latency::{Review, stats};
    use crate::views::oracle::{accumulate_by_epoch, lcg};
    use crate::views::review_sketches::{Row, SketchOut, review_sketches};
    use crate::views::reviewers::{ReviewerStats, reviewer_stats};
    use crate::views::sla_breaches::{SlaBreach, deadline, sla_breaches};

    /// The percentile error bound, stated: within α of the exact nearest-rank value, plus
    /// rounding to the millisecond.
    fn within_bound(sketch: i64, exact: i64) -> bool {
        (sketch - exact).abs() as f64 <= SKETCH_ALPHA * exact.abs() as f64 + 1.0
    }

    fn same_stats(sketch: &HitlStats, exact: &HitlStats) -> bool {
        within_bound(sketch.p50_ms, exact.p50_ms)
            && within_bound(sketch.p95_ms, exact.p95_ms)
            && (
                sketch.reviews,
                sketch.max_ms,
                sketch.rubber_stamps,
                sketch.over_sla,
            ) == (
                exact.reviews,
                exact.max_ms,
                exact.rubber_stamps,
                exact.over_sla,
            )
    }

    /// Escalations and decisions in any order (decisions first, several per escalation, some
    /// never), over epochs with the clock moving: at every epoch the latency, group and
    /// reviewer views equal the exact statistics of every pair so far (percentiles within the sketch's bound,
    /// the rest exactly), and the breaches are the undecided escalations past their deadline.
    #[test]
    fn oracle_matches_recomputation_within_the_sketch_bound() {
        let hitl = HitlConfig::default();
        let retire = RetireConfig {
            grace_epochs: 100,
            idle_epochs: 100,
            tombstone_epochs: 100,
        };
        let outcomes = [
            Outcome::Approve,
            Outcome::Reject,
            Outcome::Modify,
            Outcome::Escalate,
        ];
        for seed in 1..=6u64 {
            let epochs = 7u64;
            let mut rng = lcg(seed);
            let mut inputs: Vec<(u64, ReviewIn)> = Vec::new();
            for i in 0..120 {
                let key = (format!("t{}", rng() % 2), format!("esc-{i}"));
                let esc = EscalationFact {
                    presented_us: (rng() % 1000) as i64 * 1_000_000,
                    sla_s: [60, 300, 900][(rng() % 3) as usize],
                    agent_id: format!("a{}", rng() % 2),
                    risk_tier: "high".into(),
                };
                inputs.push((
                    rng() % epochs,
                    ReviewIn::Escalation((key.clone(), esc.clone())),
                ));
                for _ in 0..rng() % 3 {
                    let dec = DecisionFact {
                        decided_us: esc.presented_us + (rng() % 2_000_000) as i64 * 1000,
                        outcome: outcomes[(rng() % 4) as usize],
                        reviewer_id: format!("r{}", rng() % 3),
                    };
                    inputs.push((rng() % epochs, ReviewIn::Decision((key.clone(), dec))));
                }
            }
            let now = |epoch: u64| 200_000_000 + epoch as i64 * 150_000_000;
            let feed = inputs.clone();
            let (lat_rx, grp_rx, rev_rx, brk_rx) = timely::example(move |scope| {
                let (mut handle, stream) = scope.new_input::<Vec<ReviewIn>>();
                let (mut clock, clock_now) = scope.new_collection::<i64, isize>();
                let ticks = clock_now.inner.clone().map(|_| ());
                let out = reviews(stream, ticks.clone(), hitl, retire, 0, &Metrics::new());
                let sketches = review_sketches(
                    out.clone().flat_map(|o| match o {
                        ReviewOut::Sketch(s) => Some(s),
                        _ => None,
                    }),
                    ticks,
                    0,
                    &Metrics::new(),
                );
                let lat = sketches
                    .clone()
                    .flat_map(|o| match o {
                        SketchOut::Row(Row::Tenant(t, s), n) => Some(((t, s), n)),
                        _ => None,
                    })
                    .into_updates();
                let grp = sketches
                    .clone()
                    .flat_map(|o| match o {
                        SketchOut::Row(Row::Group(k, s), n) => Some(((k, s), n)),
                        _ => None,
                    })
                    .into_updates();
                let rev = sketches
                    .flat_map(|o| match o {
                        SketchOut::Row(Row::Reviewer(k, s), n) => Some(((k, s), n)),
                        _ => None,
                    })
                    .into_updates();
                let pending = out
                    .flat_map(|o| match o {
                        ReviewOut::Pending(e, n) => Some((e, n)),
                        _ => None,
                    })
                    .into_updates();
                let rx = (
                    lat.inner.capture(),
                    grp.inner.capture(),
                    rev.inner.capture(),
                    sla_breaches(pending, clock_now).inner.capture(),
                );
                for epoch in 0..epochs {
                    handle.advance_to(epoch);
                    clock.advance_to(epoch);
                    if epoch > 0 {
                        clock.update(now(epoch - 1), -1);
                    }
                    clock.update(now(epoch), 1);
                    clock.flush();
                    for (_, i) in feed.iter().filter(|(t, _)| *t == epoch) {
                        handle.send(i.clone());
                    }
                }
                rx
            });
            let (lat, grp, rev, brk) = (
                accumulate_by_epoch(lat_rx, epochs),
                accumulate_by_epoch(grp_rx, epochs),
                accumulate_by_epoch(rev_rx, epochs),
                accumulate_by_epoch(brk_rx, epochs),
            );
            for epoch in 0..epochs {
                let seen: Vec<&ReviewIn> = inputs
                    .iter()
                    .filter(|(t, _)| *t <= epoch)
                    .map(|(_, i)| i)
                    .collect();
                let escalations: BTreeMap<&(String, String), &EscalationFact> = seen
                    .iter()
                    .filter_map(|i| match i {
                        ReviewIn::Escalation((k, e)) => Some((k, e)),
                        _ => None,
                    })
                    .collect();
                let mut per_tenant: BTreeMap<String, Vec<(Review, isize)>> = BTreeMap::new();
                let mut per_group: BTreeMap<(String, String), Vec<(GroupReview, isize)>> =
                    BTreeMap::new();
                let mut per_reviewer: BTreeMap<(String, String), Vec<(GroupReview, isize)>> =
                    BTreeMap::new();
                let mut decided: BTreeSet<&(String, String)> = BTreeSet::new();
                for i in &seen {
                    let ReviewIn::Decision((k, d)) = i else {
                        continue;
                    };
                    decided.insert(k);
                    let Some(e) = escalations.get(k) else {
                        continue;
                    };
                    let r = review(
                        e.presented_us,
                        e.sla_s,
                        d.decided_us,
                        d.outcome == Outcome::Approve,
                        hitl,
                    );
                    per_tenant.entry(k.0.clone()).or_default().push((r, 1));
                    per_group
                        .entry((k.0.clone(), format!("{}/{}", e.agent_id, e.risk_tier)))
                        .or_default()
                        .push(((r, d.outcome), 1));
                    per_reviewer
                        .entry((k.0.clone(), d.reviewer_id.clone()))
                        .or_default()
                        .push(((r, d.outcome), 1));
                }
                let got: BTreeMap<&String, &HitlStats> =
                    lat[&epoch].keys().map(|(t, s)| (t, s)).collect();
                assert_eq!(got.len(), per_tenant.len(), "seed {seed} epoch {epoch}");
                for (tenant, mut reviews) in per_tenant {
                    reviews.sort();
                    let exact = stats(&reviews);
                    assert!(
                        same_stats(got[&tenant], &exact),
                        "seed {seed} epoch {epoch} {tenant}: {:?} vs exact {exact:?}",
                        got[&tenant]
                    );
                }
                let got: BTreeMap<&(String, String), &HitlGroupStats> =
                    grp[&epoch].keys().map(|(k, s)| (k, s)).collect();
                assert_eq!(got.len(), per_group.len(), "seed {seed} epoch {epoch}");
                for (key, mut reviews) in per_group {
                    reviews.sort();
                    let (agent, tier) = key.1.rsplit_once('/').unwrap();
                    let exact = group_stats(agent, tier, &reviews);
                    let g = got[&key];
                    assert!(same_stats(&g.stats, &exact.stats), "{g:?} vs {exact:?}");
                    assert_eq!(
                        (g.approved, g.rejected, g.modified, g.escalated),
                        (
                            exact.approved,
                            exact.rejected,
                            exact.modified,
                            exact.escalated
                        )
                    );
                }
                let got: BTreeMap<&(String, String), &ReviewerStats> =
                    rev[&epoch].keys().map(|(k, s)| (k, s)).collect();
                assert_eq!(got.len(), per_reviewer.len(), "seed {seed} epoch {epoch}");
                for (key, mut reviews) in per_reviewer {
                    reviews.sort();
                    let exact = reviewer_stats(&key.1, &reviews);
                    let g = got[&key];
                    assert!(same_stats(&g.stats, &exact.stats), "{g:?} vs {exact:?}");
                    assert_eq!(
                        (
                            &g.reviewer_id,
                            g.approved,
                            g.rejected,
                            g.modified,
                            g.escalated,
                            g.rubber_stamp_permille,
                            g.override_permille
                        ),
                        (
                            &exact.reviewer_id,
                            exact.approved,
                            exact.rejected,
                            exact.modified,
                            exact.escalated,
                            exact.rubber_stamp_permille,
                            exact.override_permille
                        )
                    );
                }
                let want: BTreeMap<((String, String), SlaBreach), isize> = escalations
                    .iter()
                    .filter(|(k, e)| !decided.contains(*k) && deadline(e) < now(epoch))
                    .map(|(k, e)| {
                        (
                            (
                                (*k).clone(),
                                SlaBreach {
                                    escalation_event_id: k.1.clone(),
                                    agent_id: e.agent_id.clone(),
                                    risk_tier: e.risk_tier.clone(),
                                    presented_us: e.presented_us,
                                    deadline_us: deadline(e),
                                },
                            ),
                            1,
                        )
                    })
                    .collect();
                assert_eq!(brk[&epoch], want, "seed {seed} epoch {epoch}");
            }
        }
    }

    /// Every latency is within α of its bucket's value (rounded to the millisecond), and
    /// buckets order as latencies do.
    #[test]
    fn buckets_hold_their_error_bound() {
        let mut last = i32::MIN;
        for l in (-5_000i64..5_000).chain((5_000..100_000_000).step_by(7_919)) {
            let b = bucket(l);
            assert!(b >= last, "{l}");
            last = b;
            let v = bucket_value(b);
            assert!(
                (v - l).abs() as f64 <= SKETCH_ALPHA * l.abs() as f64 + 1.0,
                "{l}: bucket {b} stands for {v}"
            );
        }
    }
}
