//! Sources: where raw records enter the pipeline.
//!
//! A source is pulled by the driver on worker 0, one batch per epoch, so the driver's bound on
//! epochs in flight is the pipeline's backpressure: nothing is read faster than the sink commits.

pub mod access_log;
pub mod kafka;
pub mod ndjson;
pub mod resume;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::record::RawRecord;
use crate::sinks::iceberg::SourcePositions;

/// Where a source that can seek by byte (a file) stands: the last offset read in `partition`
/// and the byte just after its line. Recorded with an epoch's positions, so that a restart
/// jumps there instead of reading every earlier line again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytePosition {
    /// The partition.
    pub partition: i32,
    /// The last offset read.
    pub offset: i64,
    /// The byte after its line.
    pub byte: u64,
}

/// A pull-based source of raw records.
pub trait Source: Send {
    /// The source's name, recorded with every row and in snapshot summaries.
    fn name(&self) -> String;

    /// Up to `max` records, waiting at most `wait` for them. `Ok(None)` once the source is
    /// exhausted (bounded sources only); an empty batch means nothing arrived in time.
    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>>;

    /// Starts reading after `durable` (partition → last offset durable in the lake). Sources
    /// that cannot seek may ignore it: [`resume::ResumingSource`] drops what is re-read.
    fn seek(&mut self, durable: &BTreeMap<i32, i64>) -> Result<()> {
        let _ = durable;
        Ok(())
    }

    /// Where reading stands, for a source that can jump back there ([`Source::seek_to`]).
    fn byte_position(&self) -> Option<BytePosition> {
        None
    }

    /// Before [`Source::seek`], jumps to `at` (an earlier run's [`Source::byte_position`],
    /// at or before the durable positions); whether it did. A source that cannot, or finds
    /// that `at` is not the end of a line, stays where it is.
    fn seek_to(&mut self, at: &BytePosition) -> Result<bool> {
        let _ = at;
        Ok(false)
    }

    /// What identifies this input's content beyond its name, recorded with every epoch's
    /// positions (a file: the length and SHA-256 of its head). `None`: the name is the
    /// identity.
    fn fingerprint(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Whether this input is the one that `recorded` (an earlier [`Source::fingerprint`] under
    /// the same name) identified: a file may have grown since, never changed its head.
    fn matches_fingerprint(&self, recorded: &str) -> Result<bool> {
        Ok(self.fingerprint()?.is_none_or(|now| now == recorded))
    }

    /// An error if the source never reached what it reads from (a broker that never
    /// answered): checked before a run ends for being idle, so an unreachable source is not
    /// taken for an empty one.
    fn check_connected(&self) -> Result<()> {
        Ok(())
    }

    /// Acknowledges that everything up to `positions` is durable in the lake.
    fn ack(&mut self, positions: &SourcePositions) -> Result<()> {
        let _ = positions;
        Ok(())
    }
}
