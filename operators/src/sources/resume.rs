//! Resumes any source exactly where the lake says the last run stopped.
//!
//! Wraps a [`Source`] with the positions durable in `custody.epochs` and, after a crash in the
//! middle of a commit, the positions of the half-committed epoch:
//!
//! - records at or before a partition's durable position are dropped (counted in
//!   `custody_source_records_skipped_total`), so a source that re-reads (a file, the
//!   generator, a Kafka group whose broker-side commit lagged) never duplicates an event;
//! - the first batch after a half-committed epoch is exactly that epoch's records again (every
//!   partition up to its recorded position, nothing else), so it re-derives identical hashes
//!   and the sink can skip the tables that already hold it. Records read past it are carried
//!   into the following batches.
//!
//! # Failure modes
//! If the source ends, or delivers nothing for `replay_timeout`, before the half-committed
//! epoch is complete again, the batch fails: the lake holds records the source no longer has.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::record::RawRecord;
use crate::sinks::iceberg::SourcePositions;
use crate::sources::Source;

/// See the module docs.
pub struct ResumingSource {
    inner: Box<dyn Source>,
    durable: BTreeMap<i32, i64>,
    replay: Option<BTreeMap<i32, i64>>,
    carry: VecDeque<RawRecord>,
    replay_timeout: Duration,
    metrics: Metrics,
}

/// An operator's decision to skip a partition's records up to (not including) an offset,
/// with the reason, recorded as a gap marker in quarantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedSkip {
    /// The partition.
    pub partition: i32,
    /// The first offset to read again.
    pub to: i64,
    /// Why (recorded).
    pub reason: String,
}

impl ResumingSource {
    /// Seeks `inner` past `durable` and past any forced `skips` (each leaves a gap marker);
    /// the first batch will be `replay`, if given.
    pub fn new(
        mut inner: Box<dyn Source>,
        mut durable: BTreeMap<i32, i64>,
        replay: Option<&SourcePositions>,
        skips: &[ForcedSkip],
        metrics: Metrics,
    ) -> Result<Self> {
        if replay.is_some() && !skips.is_empty() {
            return Err(Error::Source {
                source_name: inner.name(),
                message: "cannot skip while an epoch is half-committed; run once without \
                          skipping first"
                    .into(),
            });
        }
        let mut carry = VecDeque::new();
        for skip in skips {
            let from = durable.get(&skip.partition).map_or(0, |d| d + 1);
            if skip.to <= from {
                tracing::warn!(?skip, from, "nothing to skip: already past that offset");
                continue;
            }
            tracing::warn!(partition = skip.partition, from, to = skip.to, reason = %skip.reason, "operator forced a skip; recording a gap marker");
            let mut marker = RawRecord::new(skip.partition, skip.to - 1, Vec::new());
            marker.skipped = Some((from, skip.reason.clone()));
            carry.push_back(marker);
            durable.insert(skip.partition, skip.to - 1);
        }
        inner.seek(&durable)?;
        let replay = replay
            .filter(|p| p.source == inner.name() && !p.partitions.is_empty())
            .map(|p| p.partitions.clone());
        Ok(ResumingSource {
            inner,
            durable,
            replay,
            carry,
            replay_timeout: Duration::from_secs(120),
            metrics,
        })
    }

    /// Whether `r` is already in the lake.
    fn is_durable(&self, r: &RawRecord) -> bool {
        self.durable
            .get(&r.partition)
            .is_some_and(|&d| r.offset <= d)
    }

    fn pull(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        let Some(batch) = self.inner.next_batch(max, wait)? else {
            return Ok(None);
        };
        let before = batch.len();
        let fresh: Vec<RawRecord> = batch.into_iter().filter(|r| !self.is_durable(r)).collect();
        self.metrics
            .source_records_skipped
            .inc_by((before - fresh.len()) as u64);
        Ok(Some(fresh))
    }

    /// Reads until every partition of `target` reached its position; returns exactly the
    /// records up to those positions and carries the rest.
    fn replay_epoch(&mut self, target: BTreeMap<i32, i64>, max: usize) -> Result<Vec<RawRecord>> {
        let mut batch = Vec::new();
        let mut reached: BTreeMap<i32, bool> = target.keys().map(|&p| (p, false)).collect();
        let mut last_progress = Instant::now();
        while reached.values().any(|done| !done) {
            let Some(records) = self.pull(max, Duration::from_millis(200))? else {
                return Err(self.replay_failed(&target, "the source ended"));
            };
            if records.is_empty() && last_progress.elapsed() > self.replay_timeout {
                return Err(self.replay_failed(&target, "the source stopped delivering"));
            }
            for r in records {
                last_progress = Instant::now();
                match target.get(&r.partition) {
                    Some(&end) if r.offset <= end => {
                        if r.offset == end {
                            reached.insert(r.partition, true);
                        }
                        batch.push(r);
                    }
                    Some(_) => {
                        reached.insert(r.partition, true);
                        self.carry.push_back(r);
                    }
                    None => self.carry.push_back(r),
                }
            }
        }
        tracing::info!(
            records = batch.len(),
            ?target,
            "re-read the half-committed epoch"
        );
        Ok(batch)
    }

    fn replay_failed(&self, target: &BTreeMap<i32, i64>, why: &str) -> Error {
        Error::Source {
            source_name: self.inner.name(),
            message: format!(
                "{why} before the half-committed epoch (positions {target:?}) was re-read; \
                 the lake holds records the source no longer has"
            ),
        }
    }
}

impl Source for ResumingSource {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        if let Some(target) = self.replay.take() {
            return self.replay_epoch(target, max).map(Some);
        }
        if !self.carry.is_empty() {
            let n = self.carry.len().min(max);
            return Ok(Some(self.carry.drain(..n).collect()));
        }
        self.pull(max, wait)
    }

    fn ack(&mut self, positions: &SourcePositions) -> Result<()> {
        self.inner.ack(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions 0 and 1 interleaved, offsets 0..n each, `per_batch` per call.
    struct Fixed {
        records: VecDeque<RawRecord>,
    }

    impl Source for Fixed {
        fn name(&self) -> String {
            "fixed".into()
        }

        fn next_batch(&mut self, max: usize, _wait: Duration) -> Result<Option<Vec<RawRecord>>> {
            if self.records.is_empty() {
                return Ok(None);
            }
            let n = self.records.len().min(max).min(3);
            Ok(Some(self.records.drain(..n).collect()))
        }
    }

    fn fixed(n: i64) -> Box<dyn Source> {
        let records = (0..n)
            .flat_map(|o| [RawRecord::new(0, o, vec![]), RawRecord::new(1, o, vec![])])
            .collect();
        Box::new(Fixed { records })
    }

    fn keys(batch: &[RawRecord]) -> Vec<(i32, i64)> {
        batch.iter().map(|r| (r.partition, r.offset)).collect()
    }

    #[test]
    fn drops_durable_records_and_replays_exactly_the_partial_epoch() {
        let durable = BTreeMap::from([(0, 2), (1, 1)]);
        let partial = SourcePositions {
            source: "fixed".into(),
            partitions: BTreeMap::from([(0, 4)]),
        };
        let mut src =
            ResumingSource::new(fixed(8), durable, Some(&partial), &[], Metrics::new()).unwrap();
        let first = src.next_batch(100, Duration::ZERO).unwrap().unwrap();
        assert_eq!(keys(&first), [(0, 3), (0, 4)]);
        let mut rest = Vec::new();
        while let Some(b) = src.next_batch(100, Duration::ZERO).unwrap() {
            rest.extend(keys(&b));
        }
        rest.sort();
        let expected: Vec<(i32, i64)> = (5..8)
            .map(|o| (0, o))
            .chain((2..8).map(|o| (1, o)))
            .collect();
        assert_eq!(rest, expected);
    }

    #[test]
    fn a_forced_skip_leaves_one_gap_marker_and_reads_on_after_it() {
        let skip = ForcedSkip {
            partition: 1,
            to: 5,
            reason: "poison records".into(),
        };
        let mut src = ResumingSource::new(
            fixed(8),
            BTreeMap::from([(1, 0)]),
            None,
            &[skip],
            Metrics::new(),
        )
        .unwrap();
        let mut all = Vec::new();
        while let Some(b) = src.next_batch(100, Duration::ZERO).unwrap() {
            all.extend(b);
        }
        let markers: Vec<_> = all.iter().filter(|r| r.skipped.is_some()).collect();
        assert_eq!(markers.len(), 1);
        assert_eq!((markers[0].partition, markers[0].offset), (1, 4));
        assert_eq!(markers[0].skipped, Some((1, "poison records".into())));
        let p1: Vec<i64> = all
            .iter()
            .filter(|r| r.partition == 1 && r.skipped.is_none())
            .map(|r| r.offset)
            .collect();
        assert_eq!(p1, [5, 6, 7]);
    }

    #[test]
    fn a_source_that_cannot_replay_fails_the_batch() {
        let partial = SourcePositions {
            source: "fixed".into(),
            partitions: BTreeMap::from([(0, 50)]),
        };
        let mut src = ResumingSource::new(
            fixed(8),
            BTreeMap::new(),
            Some(&partial),
            &[],
            Metrics::new(),
        )
        .unwrap();
        let e = src.next_batch(100, Duration::ZERO).unwrap_err().to_string();
        assert!(e.contains("no longer has"), "{e}");
    }
}
