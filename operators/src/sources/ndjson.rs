//! Newline-delimited JSON from any reader (a file, stdin, the generator).
//!
//! Each line is one raw record; its offset is its 0-based line number. Lines are not parsed
//! here, so invalid UTF-8 or JSON reaches the decoder and is quarantined with its reason. A line
//! longer than `max_line_bytes` is cut there (the decoder quarantines it as too large) and the
//! rest of the line is skipped, so one huge line cannot exhaust memory.
//!
//! A file source ([`NdjsonSource::file`]) is named by its canonical path, so `in.ndjson`,
//! `./in.ndjson` and its absolute path are one input, and carries a fingerprint of its head
//! (its first [`HEAD_BYTES`] bytes, or all of a shorter file): a different file under the same
//! path is refused, while a file that grew is the same input. Resuming jumps to the byte
//! position the last epoch recorded ([`Source::byte_position`], checked to follow a newline),
//! then skips any durable lines after it by counting newlines, without handing them on.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::record::RawRecord;
use crate::sources::{BytePosition, Source};

/// Reads NDJSON lines from `R`.
pub struct NdjsonSource<R> {
    name: String,
    reader: R,
    next_offset: i64,
    max_line_bytes: usize,
    done: bool,
    /// The file read, for its fingerprint.
    path: Option<PathBuf>,
    /// The partition its records carry.
    partition: i32,
    /// Bytes consumed from the start of the input.
    byte: u64,
    /// Whether the last byte consumed ended a line.
    at_line_start: bool,
    /// Moves the reader to a byte (a file source only).
    seeker: Option<fn(&mut R, u64) -> std::io::Result<()>>,
}

/// How much of a file's head identifies it.
pub const HEAD_BYTES: u64 = 4096;

/// `sha256:<length>:<hex>` of the first `len` bytes of `path` (fewer if it is shorter).
fn head_fingerprint(path: &Path, len: u64) -> std::io::Result<String> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(len)
        .read_to_end(&mut head)?;
    Ok(format!(
        "sha256:{}:{}",
        head.len(),
        hex::encode(Sha256::digest(&head))
    ))
}

impl NdjsonSource<BufReader<std::fs::File>> {
    /// The NDJSON file at `path`, named `file:<canonical path>`.
    pub fn file(path: &Path, max_line_bytes: usize) -> Result<Self> {
        let io = |e: std::io::Error| Error::Source {
            source_name: format!("file:{}", path.display()),
            message: e.to_string(),
        };
        let canonical = std::fs::canonicalize(path).map_err(io)?;
        let file = std::fs::File::open(&canonical).map_err(io)?;
        let mut source = NdjsonSource::new(
            format!("file:{}", canonical.display()),
            BufReader::with_capacity(1 << 20, file),
            max_line_bytes,
        );
        source.path = Some(canonical);
        source.seeker = Some(|r, at| r.seek(SeekFrom::Start(at)).map(|_| ()));
        Ok(source)
    }
}

impl<R: BufRead + Send> NdjsonSource<R> {
    /// A source named `name` over `reader`.
    pub fn new(name: impl Into<String>, reader: R, max_line_bytes: usize) -> Self {
        NdjsonSource {
            name: name.into(),
            reader,
            next_offset: 0,
            max_line_bytes,
            done: false,
            path: None,
            partition: 0,
            byte: 0,
            at_line_start: true,
            seeker: None,
        }
    }

    /// Numbers records as `partition` (Custody's own sources use negative partitions, see
    /// [`crate::record::ADMIN_PARTITION`]).
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// `e` as this source's error.
    fn error(&self, e: std::io::Error) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message: e.to_string(),
        }
    }

    /// Skips `lines` lines without keeping them (as many as [`Self::read_line`] would read).
    fn skip_lines(&mut self, mut lines: u64) -> std::io::Result<()> {
        // Whether bytes of a line not ended by a newline yet were consumed.
        let mut open = false;
        while lines > 0 {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                // The input ends: an unterminated last line is a line too.
                if open {
                    self.next_offset += 1;
                }
                return Ok(());
            }
            let mut used = buf.len();
            for (i, _) in buf.iter().enumerate().filter(|(_, b)| **b == b'\n') {
                self.next_offset += 1;
                lines -= 1;
                if lines == 0 {
                    used = i + 1;
                    break;
                }
            }
            open = buf[used - 1] != b'\n';
            self.at_line_start = !open;
            self.byte += used as u64;
            self.reader.consume(used);
        }
        Ok(())
    }

    /// Reads one line (without its terminator, cut at `max_line_bytes + 1`) and its full
    /// length; `None` at end of input.
    fn read_line(&mut self) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        let mut line = Vec::new();
        let mut len = 0u64;
        let mut seen_any = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            seen_any = true;
            let (chunk, found_newline) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i)),
                None => (buf, None),
            };
            len += chunk.len() as u64;
            let room = (self.max_line_bytes + 1).saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = found_newline.map_or(buf.len(), |i| i + 1);
            self.byte += used as u64;
            self.at_line_start = found_newline.is_some();
            self.reader.consume(used);
            if found_newline.is_some() {
                break;
            }
        }
        if !seen_any {
            return Ok(None);
        }
        if line.last() == Some(&b'\r') && line.len() as u64 == len {
            line.pop();
            len -= 1;
        }
        Ok(Some((line, len)))
    }
}

impl<R: BufRead + Send> Source for NdjsonSource<R> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn seek(&mut self, durable: &std::collections::BTreeMap<i32, i64>) -> Result<()> {
        let Some(&last) = durable.get(&0) else {
            return Ok(());
        };
        let skip = (last + 1 - self.next_offset).max(0) as u64;
        self.skip_lines(skip).map_err(|e| self.error(e))
    }

    fn byte_position(&self) -> Option<BytePosition> {
        (self.next_offset > 0 && self.at_line_start).then_some(BytePosition {
            partition: self.partition,
            offset: self.next_offset - 1,
            byte: self.byte,
        })
    }

    fn seek_to(&mut self, at: &BytePosition) -> Result<bool> {
        let Some(seek) = self.seeker else {
            return Ok(false);
        };
        if at.partition != self.partition || at.byte == 0 || self.byte != 0 || at.offset < 0 {
            return Ok(false);
        }
        // `at` must follow a newline (the file may have been replaced under its name).
        seek(&mut self.reader, at.byte - 1).map_err(|e| self.error(e))?;
        let follows_newline = self.reader.fill_buf().map(|b| b.first() == Some(&b'\n'));
        if !follows_newline.map_err(|e| self.error(e))? {
            seek(&mut self.reader, 0).map_err(|e| self.error(e))?;
            return Ok(false);
        }
        self.reader.consume(1);
        self.byte = at.byte;
        self.next_offset = at.offset + 1;
        Ok(true)
    }

    fn fingerprint(&self) -> Result<Option<String>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        head_fingerprint(path, HEAD_BYTES)
            .map(Some)
            .map_err(|e| self.error(e))
    }

    fn matches_fingerprint(&self, recorded: &str) -> Result<bool> {
        let Some(path) = &self.path else {
            return Ok(true);
        };
        let len = recorded
            .strip_prefix("sha256:")
            .and_then(|r| r.split_once(':'))
            .and_then(|(len, _)| len.parse::<u64>().ok());
        let Some(len) = len else {
            return Ok(false);
        };
        let now = head_fingerprint(path, len).map_err(|e| self.error(e))?;
        Ok(now == recorded)
    }

    fn next_batch(&mut self, max: usize, _wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(max.min(1 << 16));
        while batch.len() < max {
            let line = self.read_line().map_err(|e| self.error(e))?;
            let Some((bytes, len)) = line else {
                self.done = true;
                break;
            };
            batch.push(RawRecord {
                partition: self.partition,
                offset: self.next_offset,
                bytes,
                len,
                producer: None,
                skipped: None,
            });
            self.next_offset += 1;
        }
        if batch.is_empty() && self.done {
            Ok(None)
        } else {
            Ok(Some(batch))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn splits_lines_and_caps_long_ones() {
        let mut input = b"{\"a\":1}\r\n\n".to_vec();
        input.extend(vec![b'x'; 100]);
        input.extend(b"\nlast");
        let mut src = NdjsonSource::new("t", std::io::BufReader::with_capacity(7, &input[..]), 10);
        let batch = src.next_batch(100, Duration::ZERO).unwrap().unwrap();
        let lines: Vec<&[u8]> = batch.iter().map(|r| r.bytes.as_slice()).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"", &[b'x'; 11][..], b"last"]);
        assert_eq!(
            batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(src.next_batch(100, Duration::ZERO).unwrap().is_none());
    }

    /// A restart that jumps to the recorded byte position reads exactly what one that counted
    /// lines from the start would; a position that does not follow a newline is not used.
    #[test]
    fn jumping_to_the_byte_position_equals_counting_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.ndjson");
        let mut text = String::new();
        for i in 0..50 {
            match i % 5 {
                0 => text.push('\n'),
                1 => text.push_str(&format!("{{\"i\":{i},\"s\":\"é\\r\"}}\r\n")),
                2 => text.push_str(&format!("{}\n", "x".repeat(40 + i))),
                _ => text.push_str(&format!("{{\"i\":{i}}}\n")),
            }
        }
        text.push_str("tail without newline");
        std::fs::write(&path, &text).unwrap();
        let read_all = |src: &mut NdjsonSource<BufReader<std::fs::File>>| {
            let mut out = Vec::new();
            while let Some(b) = src.next_batch(7, Duration::ZERO).unwrap() {
                out.extend(b.into_iter().map(|r| (r.offset, r.bytes)));
            }
            out
        };
        let whole = read_all(&mut NdjsonSource::file(&path, 30).unwrap());
        for batch in [1, 3, 8, 50] {
            let mut first = NdjsonSource::file(&path, 30).unwrap();
            let read = first.next_batch(batch, Duration::ZERO).unwrap().unwrap();
            let at = first.byte_position().unwrap();
            assert_eq!(at.offset, read.last().unwrap().offset);
            for durable in [at.offset, (at.offset + 2).min(whole.len() as i64 - 1)] {
                let mut again = NdjsonSource::file(&path, 30).unwrap();
                assert!(again.seek_to(&at).unwrap(), "batch {batch}");
                again.seek(&BTreeMap::from([(0, durable)])).unwrap();
                let rest = read_all(&mut again);
                assert_eq!(rest, whole[(durable + 1) as usize..], "batch {batch}");
            }
            // A position off a line start is refused, and reading starts over.
            let mut off = NdjsonSource::file(&path, 30).unwrap();
            let byte = (at.byte as usize + 1..)
                .find(|b| text.as_bytes()[b - 1] != b'\n')
                .unwrap() as u64;
            let wrong = BytePosition { byte, ..at };
            assert!(!off.seek_to(&wrong).unwrap());
            off.seek(&BTreeMap::from([(0, at.offset)])).unwrap();
            assert_eq!(read_all(&mut off), whole[(at.offset + 1) as usize..]);
        }
    }

    #[test]
    fn seeking_skips_exactly_the_durable_lines() {
        let input = b"a\n\nlong line past the cap\nd\ne";
        for skip_to in 0..5i64 {
            for cap in [1, 3, 64] {
                let mut src =
                    NdjsonSource::new("t", std::io::BufReader::with_capacity(cap, &input[..]), 4);
                src.seek(&BTreeMap::from([(0, skip_to)])).unwrap();
                let mut offsets = Vec::new();
                while let Some(b) = src.next_batch(100, Duration::ZERO).unwrap() {
                    offsets.extend(b.iter().map(|r| r.offset));
                }
                let expected: Vec<i64> = (skip_to + 1..5).collect();
                assert_eq!(offsets, expected, "seek past {skip_to}, buffer {cap}");
            }
        }
    }

    #[test]
    fn a_file_is_one_input_by_any_path_and_refused_if_its_head_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.ndjson");
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        let a = NdjsonSource::file(&path, 100).unwrap();
        let b = NdjsonSource::file(&dir.path().join("./sub/../in.ndjson"), 100);
        assert!(b.is_err(), "a missing directory in the path is an error");
        let b = NdjsonSource::file(&dir.path().join(".").join("in.ndjson"), 100).unwrap();
        assert_eq!(a.name(), b.name());
        let recorded = a.fingerprint().unwrap().unwrap();
        // Grown: the same input.
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n").unwrap();
        assert!(a.matches_fingerprint(&recorded).unwrap());
        // Replaced: another input under the same name.
        std::fs::write(&path, "{\"x\":1}\n{\"b\":2}\n").unwrap();
        assert!(!a.matches_fingerprint(&recorded).unwrap());
    }
}
