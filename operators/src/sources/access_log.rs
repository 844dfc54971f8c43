//! Custody's access log as a source, merged with the pipeline's main source.
//!
//! The HTTP server appends one `AUDIT_LOG_ACCESSED` event per tenant API request to
//! `access-log.ndjson` in the warehouse (fsynced before it answers). [`WithAccessLog`] reads
//! the new lines into each epoch as partition [`ACCESS_LOG_PARTITION`] (offset = line number),
//! so they are chained, checkpointed and signed in the tenant's log like any event, and their
//! position is durable in `custody.epochs` with the main source's.
//!
//! # Failure modes
//! A line being appended while it is read is left for the next poll (only complete lines are
//! taken). A missing file is an empty log.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{BytePosition, Source};
use crate::error::Result;
use crate::record::{ACCESS_LOG_PARTITION, RawRecord};
use crate::sinks::iceberg::SourcePositions;

/// The access log's file name in the warehouse.
pub const ACCESS_LOG_FILE: &str = "access-log.ndjson";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key that authenticates access records: derived from the signing seed, so only a process
/// holding the signing key (the server that answers, the pipeline that chains) can write a
/// record the pipeline accepts. Whoever can only write the warehouse cannot.
pub fn access_mac_key(signing_seed: &[u8; 32]) -> [u8; 32] {
    use hmac::Mac;
    // Panic-free: HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(signing_seed).expect("hmac key");
    mac.update(b"custody access-log MAC v1");
    mac.finalize().into_bytes().into()
}

/// One line of the access log: the event's JSON text and its MAC.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AccessLine {
    /// The `AUDIT_LOG_ACCESSED` event, JSON text.
    pub record: String,
    /// HMAC-SHA256 of `record` under [`access_mac_key`], hex.
    pub mac: String,
}

impl AccessLine {
    /// Authenticates `record` under `key`.
    pub fn new(key: &[u8; 32], record: String) -> Self {
        use hmac::Mac;
        let mut mac = HmacSha256::new_from_slice(key).expect("hmac key");
        mac.update(record.as_bytes());
        AccessLine {
            mac: hex::encode(mac.finalize().into_bytes()),
            record,
        }
    }

    /// The record of a line whose MAC verifies under `key`; the reason otherwise.
    pub fn open(line: &[u8], key: &[u8; 32]) -> std::result::Result<Vec<u8>, String> {
        use hmac::Mac;
        let line: AccessLine = serde_json::from_slice(line)
            .map_err(|e| format!("not an access-log line (record and mac): {e}"))?;
        let mut tag = [0u8; 32];
        hex::decode_to_slice(&line.mac, &mut tag).map_err(|_| "malformed mac".to_string())?;
        let mut mac = HmacSha256::new_from_slice(key).expect("hmac key");
        mac.update(line.record.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| "its mac does not verify: not written by Custody's server".to_string())?;
        Ok(line.record.into_bytes())
    }
}

/// Reads complete new lines of the access log.
#[derive(Debug)]
pub struct AccessLogReader {
    path: PathBuf,
    /// Byte position after the last complete line read.
    pos: u64,
    /// Offset (line number) of the next line.
    next: i64,
}

impl AccessLogReader {
    /// A reader of `warehouse`'s access log from its start.
    pub fn new(warehouse: &Path) -> Self {
        AccessLogReader {
            path: warehouse.join(ACCESS_LOG_FILE),
            pos: 0,
            next: 0,
        }
    }

    /// Up to `max` complete lines not read yet.
    pub fn read(&mut self, max: usize) -> Result<Vec<RawRecord>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(self.pos))?;
        let mut out = Vec::new();
        while out.len() < max {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            self.pos += n as u64;
            line.pop();
            out.push(RawRecord::new(ACCESS_LOG_PARTITION, self.next, line));
            self.next += 1;
        }
        Ok(out)
    }
}

/// A main source with the access log merged in.
pub struct WithAccessLog {
    main: Box<dyn Source>,
    log: AccessLogReader,
    main_done: bool,
    /// Keep running (reading the access log) after the main source is exhausted.
    keep_alive: bool,
}

impl WithAccessLog {
    /// Merges `warehouse`'s access log into `main`; with `keep_alive`, the source never ends
    /// (the process serves until it is stopped).
    pub fn new(main: Box<dyn Source>, warehouse: &Path, keep_alive: bool) -> Self {
        WithAccessLog {
            main,
            log: AccessLogReader::new(warehouse),
            main_done: false,
            keep_alive,
        }
    }
}

fn without_log(positions: &SourcePositions) -> SourcePositions {
    let mut p = positions.clone();
    p.partitions.remove(&ACCESS_LOG_PARTITION);
    p
}

impl Source for WithAccessLog {
    fn name(&self) -> String {
        self.main.name()
    }

    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        let mut batch = self.log.read(max)?;
        if !self.main_done && batch.len() < max {
            let wait = if batch.is_empty() {
                wait
            } else {
                Duration::ZERO
            };
            match self.main.next_batch(max - batch.len(), wait)? {
                Some(more) => batch.extend(more),
                None => self.main_done = true,
            }
        }
        if self.main_done && batch.is_empty() {
            if !self.keep_alive {
                return Ok(None);
            }
            std::thread::sleep(wait);
        }
        Ok(Some(batch))
    }

    fn seek(&mut self, durable: &BTreeMap<i32, i64>) -> Result<()> {
        // Re-read log lines are dropped by the resuming wrapper; the main source seeks.
        let mut main = durable.clone();
        main.remove(&ACCESS_LOG_PARTITION);
        self.main.seek(&main)
    }

    fn ack(&mut self, positions: &SourcePositions) -> Result<()> {
        self.main.ack(&without_log(positions))
    }

    fn byte_position(&self) -> Option<BytePosition> {
        self.main.byte_position()
    }

    fn seek_to(&mut self, at: &BytePosition) -> Result<bool> {
        self.main.seek_to(at)
    }

    fn fingerprint(&self) -> Result<Option<String>> {
        self.main.fingerprint()
    }

    fn matches_fingerprint(&self, recorded: &str) -> Result<bool> {
        self.main.matches_fingerprint(recorded)
    }

    fn check_connected(&self) -> Result<()> {
        self.main.check_connected()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    struct Two(u32);

    impl Source for Two {
        fn name(&self) -> String {
            "two".into()
        }
        fn next_batch(&mut self, _: usize, _: Duration) -> Result<Option<Vec<RawRecord>>> {
            self.0 += 1;
            Ok((self.0 <= 2).then(|| vec![RawRecord::new(0, self.0 as i64, b"x".to_vec())]))
        }
    }

    #[test]
    fn merges_complete_lines_and_ends_with_the_main_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join(ACCESS_LOG_FILE)).unwrap();
        f.write_all(b"{\"a\":1}\n{\"b\":2}\n{\"partial").unwrap();
        let mut s = WithAccessLog::new(Box::new(Two(0)), dir.path(), false);
        let b = s.next_batch(10, Duration::ZERO).unwrap().unwrap();
        let parts: Vec<(i32, i64)> = b.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(parts, [(-1, 0), (-1, 1), (0, 1)]);
        f.write_all(b"\":3}\n").unwrap();
        let b = s.next_batch(10, Duration::ZERO).unwrap().unwrap();
        assert_eq!(b[0].bytes, b"{\"partial\":3}");
        assert_eq!(b.len(), 2);
        assert!(s.next_batch(10, Duration::ZERO).unwrap().is_none());
    }
}
