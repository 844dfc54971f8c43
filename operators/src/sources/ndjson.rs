//! Newline-delimited JSON from any reader (a file, stdin, the generator).
//!
//! Each line is one raw record; its offset is its 0-based line number. Lines are not parsed
//! here, so invalid UTF-8 or JSON reaches the decoder and is quarantined with its reason. A line
//! longer than `max_line_bytes` is cut there (the decoder quarantines it as too large) and the
//! rest of the line is skipped, so one huge line cannot exhaust memory.

use std::io::BufRead;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::RawRecord;
use crate::sources::Source;

/// Reads NDJSON lines from `R`.
pub struct NdjsonSource<R> {
    name: String,
    reader: R,
    next_offset: i64,
    max_line_bytes: usize,
    done: bool,
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
        }
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

    fn next_batch(&mut self, max: usize, _wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(max.min(1 << 16));
        while batch.len() < max {
            let line = self.read_line().map_err(|e| Error::Source {
                source_name: self.name.clone(),
                message: e.to_string(),
            })?;
            let Some((bytes, len)) = line else {
                self.done = true;
                break;
            };
            batch.push(RawRecord {
                partition: 0,
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
}
