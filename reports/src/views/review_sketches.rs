//! Review latency sketches per tenant, per (tenant, agent, risk tier) group and per (tenant,
//! reviewer): the state behind the HITL latency, HITL groups and reviewers views.
//!
//! # Inputs
//! [`SketchIn`]: every paired review once per key it counts under (the tenant, the tenant's
//! group and the reviewer), from [`super::reviews`]; a key's state from a snapshot. Exchanged by key.
//!
//! # Outputs ([`SketchOut`])
//! - `Row`: the changes of the three views, as differential updates at the epoch: when a key's
//!   reviews change at an epoch, its previous row is retracted and the new one inserted, once
//!   per epoch however many reviews came;
//! - `State`: every key's sketch at snapshot epochs.
//!
//! # State and its bound
//! One [`Sketch`] per key: a DDSketch of latencies (bucket → count, relative accuracy
//! [`super::reviews::SKETCH_ALPHA`]), the rubber-stamp and over-SLA counts, counts by outcome and the exact
//! maximum. A key holds at most one entry per bucket it has seen: ~`ln(max/min latency) /
//! ln γ` (≈ 800 from 1 ms to a week at α = 1%), whatever the number of reviews, and the keys
//! are the tenants, their (agent, risk tier) groups and their reviewers. Rows are computed from the sketch, so
//! nothing else is kept.
//!
//! # Metrics
//! `custody_view_state{view="review_sketches",kind=keys|buckets}`.

use std::collections::HashMap;

use custody_operators::Metrics;
use custody_operators::record::{Epoch, HitlStats};
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;

use super::epoch_stash::{EpochStash, Ready};
use super::hitl_groups::HitlGroupStats;
use super::hitl_latency::{Outcome, Review, stats};
use super::reviewers::ReviewerStats;
use super::reviews::bucket_value;

/// What a sketch counts, within a tenant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Group {
    /// Every review of the tenant.
    Tenant,
    /// The reviews of an `agent/risk_tier` group.
    AgentTier(String),
    /// The decisions of one reviewer.
    Reviewer(String),
}

/// A sketch's key: a tenant and what it counts of the tenant's reviews.
pub type SketchKey = (String, Group);

/// One review, as a sketch counts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewed {
    /// Latency, ms.
    pub latency_ms: i64,
    /// Approved faster than the rubber-stamp threshold.
    pub rubber_stamp: bool,
    /// Decided after the escalation's SLA.
    pub over_sla: bool,
    /// The decision.
    pub outcome: Outcome,
}

/// A key's sketch, as kept and as a snapshot holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sketch {
    /// `(bucket, reviews)`, sorted by bucket (see [`super::reviews::bucket`]).
    pub buckets: Vec<(i32, u64)>,
    /// Approvals faster than the rubber-stamp threshold.
    pub rubber_stamps: u64,
    /// Decisions after their SLA.
    pub over_sla: u64,
    /// Decisions by outcome: approve, reject, modify, escalate.
    pub outcomes: [u64; 4],
    /// The largest latency, ms.
    pub max_ms: Option<i64>,
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Approve => 0,
        Outcome::Reject => 1,
        Outcome::Modify => 2,
        Outcome::Escalate => 3,
    }
}

impl Sketch {
    /// Counts one review.
    pub fn add(&mut self, r: &Reviewed) {
        let b = super::reviews::bucket(r.latency_ms);
        match self.buckets.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.buckets[i].1 += 1,
            Err(i) => self.buckets.insert(i, (b, 1)),
        }
        self.rubber_stamps += u64::from(r.rubber_stamp);
        self.over_sla += u64::from(r.over_sla);
        self.outcomes[outcome_index(r.outcome)] += 1;
        self.max_ms = self.max_ms.max(Some(r.latency_ms));
    }

    /// Adds another sketch of the same key (sketches are mergeable).
    pub fn merge(&mut self, other: &Sketch) {
        for &(b, n) in &other.buckets {
            match self.buckets.binary_search_by_key(&b, |(k, _)| *k) {
                Ok(i) => self.buckets[i].1 += n,
                Err(i) => self.buckets.insert(i, (b, n)),
            }
        }
        self.rubber_stamps += other.rubber_stamps;
        self.over_sla += other.over_sla;
        for (a, b) in self.outcomes.iter_mut().zip(other.outcomes) {
            *a += b;
        }
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    /// The statistics: counts and the maximum exact, percentiles within [`super::reviews::SKETCH_ALPHA`] of
    /// the exact nearest-rank value (rounded to the millisecond). `None` before any review.
    pub fn stats(&self) -> Option<HitlStats> {
        if self.buckets.is_empty() {
            return None;
        }
        let sorted: Vec<(Review, isize)> = self
            .buckets
            .iter()
            .map(|&(b, n)| ((bucket_value(b), false, false), n as isize))
            .collect();
        let mut s = stats(&sorted);
        s.rubber_stamps = self.rubber_stamps as i64;
        s.over_sla = self.over_sla as i64;
        s.max_ms = self.max_ms.unwrap_or(s.max_ms);
        Some(s)
    }

    /// The key's row of its view.
    fn row(&self, key: &SketchKey) -> Option<Row> {
        let stats = self.stats()?;
        let (tenant, group) = key;
        let o = self.outcomes.map(|n| n as i64);
        Some(match group {
            Group::Tenant => Row::Tenant(tenant.clone(), stats),
            Group::AgentTier(g) => {
                let (agent, tier) = g.rsplit_once('/').unwrap_or((g.as_str(), ""));
                Row::Group(
                    (tenant.clone(), g.clone()),
                    HitlGroupStats::new(agent, tier, stats, o[0], o[1], o[2], o[3]),
                )
            }
            Group::Reviewer(r) => {
                Row::Reviewer((tenant.clone(), r.clone()), ReviewerStats::new(r, stats, o))
            }
        })
    }
}

/// What the operator reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SketchIn {
    /// A review counted under a key.
    Review(SketchKey, Reviewed),
    /// A key's sketch from a snapshot.
    Restore(SketchKey, Sketch),
}

impl SketchIn {
    fn route(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let (SketchIn::Review(key, _) | SketchIn::Restore(key, _)) = self;
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }
}

/// A row of one of the three views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// HITL latency: `(tenant, stats)`.
    Tenant(String, HitlStats),
    /// HITL groups: `((tenant, "agent/risk_tier"), stats)`.
    Group((String, String), HitlGroupStats),
    /// Reviewers: `((tenant, reviewer_id), stats)`.
    Reviewer((String, String), ReviewerStats),
}

/// What the operator sends.
#[derive(Clone, Debug)]
pub enum SketchOut {
    /// A row inserted (+1) or retracted (-1) at the message's epoch.
    Row(Row, isize),
    /// A key's sketch, at a snapshot epoch.
    State(SketchKey, Sketch),
}

/// Keeps the sketches; see the module documentation.
pub fn review_sketches<'scope>(
    input: StreamVec<'scope, Epoch, SketchIn>,
    ticks: StreamVec<'scope, Epoch, ()>,
    snapshot_every: u64,
    metrics: &Metrics,
) -> StreamVec<'scope, Epoch, SketchOut> {
    let gauge = |kind| {
        metrics
            .view_state
            .with_label_values(&["review_sketches", kind])
    };
    let (keys_gauge, buckets_gauge) = (gauge("keys"), gauge("buckets"));
    input.binary_frontier(
        ticks,
        Exchange::new(SketchIn::route),
        Pipeline,
        "ReviewSketches",
        move |_, _| {
            let mut stash: EpochStash<SketchIn> = EpochStash::default();
            let mut sketches: HashMap<SketchKey, Sketch> = HashMap::new();
            let mut buckets = 0usize;
            move |(input, input_frontier), (ticks, ticks_frontier), output| {
                stash.receive(input, ticks);
                while let Some(Ready {
                    time: t,
                    cap,
                    data: inputs,
                    ticked,
                }) = stash.next_ready(input_frontier, ticks_frontier)
                {
                    // Each touched key's row before this epoch, to retract if it changes.
                    let mut before: HashMap<SketchKey, Option<Row>> = HashMap::new();
                    for input in inputs {
                        let (SketchIn::Review(key, _) | SketchIn::Restore(key, _)) = &input;
                        if !before.contains_key(key) {
                            let row = sketches.get(key).and_then(|s| s.row(key));
                            before.insert(key.clone(), row);
                        }
                        match input {
                            SketchIn::Review(key, r) => {
                                let s = sketches.entry(key).or_default();
                                buckets -= s.buckets.len();
                                s.add(&r);
                                buckets += s.buckets.len();
                            }
                            SketchIn::Restore(key, other) => {
                                let s = sketches.entry(key).or_default();
                                buckets -= s.buckets.len();
                                s.merge(&other);
                                buckets += s.buckets.len();
                            }
                        }
                    }
                    let mut out = Vec::new();
                    for (key, old) in before {
                        let new = sketches.get(&key).and_then(|s| s.row(&key));
                        if old != new {
                            out.extend(old.map(|r| SketchOut::Row(r, -1)));
                            out.extend(new.map(|r| SketchOut::Row(r, 1)));
                        }
                    }
                    keys_gauge.set(sketches.len() as i64);
                    buckets_gauge.set(buckets as i64);
                    if ticked && crate::snapshot::is_snapshot_epoch(t, snapshot_every) {
                        out.extend(
                            sketches
                                .iter()
                                .map(|(k, s)| SketchOut::State(k.clone(), s.clone())),
                        );
                    }
                    output.session(&cap).give_iterator(out.into_iter());
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::reviews::SKETCH_ALPHA;

    fn reviewed(latency_ms: i64, outcome: Outcome) -> Reviewed {
        Reviewed {
            latency_ms,
            rubber_stamp: latency_ms < 1000 && outcome == Outcome::Approve,
            over_sla: latency_ms > 60_000,
            outcome,
        }
    }

    /// Merging sketches of two halves of the reviews gives the sketch of all of them, and its
    /// percentiles are within the stated bound (α of the exact nearest-rank value, plus
    /// rounding to the millisecond) while counts and the maximum are exact.
    #[test]
    fn merged_halves_equal_the_whole_within_the_bound() {
        let mut rng = super::super::oracle::lcg(7);
        let outcomes = [
            Outcome::Approve,
            Outcome::Reject,
            Outcome::Modify,
            Outcome::Escalate,
        ];
        let reviews: Vec<Reviewed> = (0..5000)
            .map(|_| reviewed((rng() % 5_000_000) as i64, outcomes[(rng() % 4) as usize]))
            .collect();
        let (mut whole, mut a, mut b) = (Sketch::default(), Sketch::default(), Sketch::default());
        for (i, r) in reviews.iter().enumerate() {
            whole.add(r);
            if i % 3 == 0 { &mut a } else { &mut b }.add(r);
        }
        a.merge(&b);
        assert_eq!(a, whole);
        let mut exact: Vec<(Review, isize)> = reviews
            .iter()
            .map(|r| ((r.latency_ms, r.rubber_stamp, r.over_sla), 1))
            .collect();
        exact.sort();
        let exact = stats(&exact);
        let got = whole.stats().unwrap();
        let within = |s: i64, e: i64| (s - e).abs() as f64 <= SKETCH_ALPHA * e.abs() as f64 + 1.0;
        assert!(within(got.p50_ms, exact.p50_ms), "{got:?} vs {exact:?}");
        assert!(within(got.p95_ms, exact.p95_ms), "{got:?} vs {exact:?}");
        assert_eq!(
            (got.reviews, got.max_ms, got.rubber_stamps, got.over_sla),
            (
                exact.reviews,
                exact.max_ms,
                exact.rubber_stamps,
                exact.over_sla
            )
        );
        assert!(whole.buckets.len() < 1000, "{}", whole.buckets.len());
    }
}
