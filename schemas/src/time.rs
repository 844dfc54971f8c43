//! RFC 3339 timestamps, parsed to and formatted from microseconds since the Unix epoch.
//!
//! Kept dependency-free on purpose: the schema crate is the contract and must stay light.

use crate::SchemaError;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// Parses an RFC 3339 timestamp (`2026-03-08T14:47:00Z`, `…T14:47:00.123+02:00`) to UTC micros.
///
/// Works on bytes only, so no input (multi-byte characters anywhere, any length) can panic it.
pub fn parse_rfc3339(s: &str) -> Result<Micros, SchemaError> {
    let bad = || SchemaError::Timestamp(s.to_string());
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, SchemaError> {
        let digits = b.get(r).ok_or_else(bad)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        // Microsecond precision: digits past the sixth are dropped, fewer are padded.
        for k in 0..6 {
            let d = b
                .get(start + k)
                .filter(|_| start + k < i)
                .map_or(0, |d| d - b'0');
            micros = micros * 10 + i64::from(d);
        }
    }
    let offset_secs = match &b[i..] {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let sign = if *sign == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// The wall clock, UTC micros since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// Formats UTC micros as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_rfc3339(micros: Micros) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// [`format_rfc3339`] without allocating: the text in a small buffer.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    buf: [u8; 32],
    len: usize,
}

impl Rfc3339 {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Panic-free in practice: only ASCII digits and separators are written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// `micros` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, like [`format_rfc3339`], in a stack buffer.
pub fn rfc3339(micros: Micros) -> Rfc3339 {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = Rfc3339 {
        buf: [0; 32],
        len: 0,
    };
    if !(0..=9999).contains(&y) {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut out.buf[..]);
        let _ = write!(
            cursor,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        );
        out.len = cursor.position() as usize;
        return out;
    }
    let mut put = |at: usize, value: i64, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            out.buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, rem / 3600, 2);
    put(14, (rem / 60) % 60, 2);
    put(17, rem % 60, 2);
    put(20, frac, 6);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out.buf[at] = c;
    }
    out.len = 27;
    out
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-03-08T14:47:00Z", 1_772_981_220_000_000),
            ("2026-03-08T16:47:00.5+02:00", 1_772_981_220_500_000),
            ("2024-02-29T00:00:00.000001Z", 1_709_164_800_000_001),
        ];
        for (text, micros) in cases {
            assert_eq!(parse_rfc3339(text).unwrap(), micros, "{text}");
        }
        assert_eq!(
            format_rfc3339(1_772_981_220_500_000),
            "2026-03-08T14:47:00.500000Z"
        );
        let m = 1_709_164_800_000_001;
        assert_eq!(parse_rfc3339(&format_rfc3339(m)).unwrap(), m);
    }

    #[test]
    fn the_stack_formatter_equals_the_string_one() {
        let mut x: i64 = 0x5DEECE66D;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let us = x % 400_000_000_000_000_000;
            assert_eq!(rfc3339(us).as_str(), format_rfc3339(us), "{us}");
        }
        for us in [
            0,
            -1,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            i64::MIN / 2,
        ] {
            assert_eq!(rfc3339(us).as_str(), format_rfc3339(us), "{us}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "2026-03-08",
            "2026-13-08T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-03-08T24:00:00Z",
            "2026-03-08T00:00:00",
            "2026-03-08T00:00:00+0200",
            "2026-03-08T00:00:00.Z",
            "yyyy-03-08T00:00:00Z",
            // A multi-byte character where a digit, the fraction or the offset belongs.
            "2026-01-01T00:00:0€Z",
            "2026-01-01T00:00:00€",
            "2026-01-01T00:00:00.€Z",
            "2026-01-01T00:00:00+0€:00",
            "2026-01-01T00:00:00+00:0€",
            "2026-01-01T00:00:00.1234567890€",
            "€026-01-01T00:00:00Z",
            "2026-01-01T0€:00:00Z",
        ] {
            assert!(parse_rfc3339(text).is_err(), "{text:?} should be rejected");
        }
    }
}
