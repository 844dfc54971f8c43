//! Resumes any source exactly where the lake says the last run stopped.
//!
//! Wraps a [`Source`] with the positions durable in `custody.epochs`: the source is asked to
//! seek past them ([`Source::seek`]), and whatever it still delivers at or before a partition's
//! durable position is dropped (counted in `custody_source_records_skipped_total`), so a source
//! that re-reads (a Kafka group whose broker-side commit lagged) never duplicates an event. A
//! batch that was all re-read records is not handed on as an empty batch (which the driver
//! would take for an idle source): reading goes on until something new arrives or the source
//! has nothing.
//!
//! An epoch is never re-read after a crash: its `custody.epochs` row is the commit point and a
//! restart completes its table commits from the files that row lists.
//!
//! # Failure modes
//! Those of the wrapped source.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::record::RawRecord;
use crate::sinks::iceberg::SourcePositions;
use crate::sources::{BytePosition, Source};

/// See the module docs.
pub struct ResumingSource {
    inner: Box<dyn Source>,
    durable: BTreeMap<i32, i64>,
    carry: VecDeque<RawRecord>,
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
    /// first straight to `at` (where an earlier run's last epoch left the source) if given.
    pub fn new(
        mut inner: Box<dyn Source>,
        mut durable: BTreeMap<i32, i64>,
        at: Option<BytePosition>,
        skips: &[ForcedSkip],
        metrics: Metrics,
    ) -> Result<Self> {
        if let Some(at) = at
            && durable.get(&at.partition).is_some_and(|d| *d >= at.offset)
        {
            let jumped = inner.seek_to(&at)?;
            tracing::info!(?at, jumped, "resuming the source at its last byte position");
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
        Ok(ResumingSource {
            inner,
            durable,
            carry,
            metrics,
        })
    }

    /// Whether `r` is already in the lake.
    fn is_durable(&self, r: &RawRecord) -> bool {
        self.durable
            .get(&r.partition)
            .is_some_and(|&d| r.offset <= d)
    }

    /// The next batch of records not durable yet. Batches that were all re-read records are
    /// read past (within `wait`), not returned empty.
    fn pull(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(batch) = self.inner.next_batch(max, left)? else {
                return Ok(None);
            };
            let before = batch.len();
            let fresh: Vec<RawRecord> = batch.into_iter().filter(|r| !self.is_durable(r)).collect();
            let skipped = (before - fresh.len()) as u64;
            self.metrics.source_records_skipped.inc_by(skipped);
            if !fresh.is_empty() || skipped == 0 || Instant::now() >= deadline {
                return Ok(Some(fresh));
            }
        }
    }
}

impl Source for ResumingSource {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        if !self.carry.is_empty() {
            let n = self.carry.len().min(max);
            return Ok(Some(self.carry.drain(..n).collect()));
        }
        self.pull(max, wait)
    }

    fn ack(&mut self, positions: &SourcePositions) -> Result<()> {
        self.inner.ack(positions)
    }

    fn byte_position(&self) -> Option<BytePosition> {
        self.inner.byte_position()
    }

    fn fingerprint(&self) -> Result<Option<String>> {
        self.inner.fingerprint()
    }

    fn matches_fingerprint(&self, recorded: &str) -> Result<bool> {
        self.inner.matches_fingerprint(recorded)
    }

    fn check_connected(&self) -> Result<()> {
        self.inner.check_connected()
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
    fn drops_durable_records_without_empty_batches() {
        let durable = BTreeMap::from([(0, 4), (1, 1)]);
        let mut src = ResumingSource::new(fixed(8), durable, None, &[], Metrics::new()).unwrap();
        let mut all = Vec::new();
        while let Some(b) = src.next_batch(100, Duration::from_secs(1)).unwrap() {
            assert!(
                !b.is_empty(),
                "an all-durable read came back as an empty batch"
            );
            all.extend(keys(&b));
        }
        all.sort();
        let expected: Vec<(i32, i64)> = (5..8)
            .map(|o| (0, o))
            .chain((2..8).map(|o| (1, o)))
            .collect();
        assert_eq!(all, expected);
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
}
