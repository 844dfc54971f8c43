//! Phone numbers, confirmed by libphonenumber's metadata (the `rlibphonenumber` port).
//!
//! The scanner's DFA finds phone-shaped candidates cheaply: an international number (`+`
//! or `00` and a country code), a national number with its trunk prefix (`0…`) or its area
//! code in parentheses, or digit groups (North American `212 555 0187`, Spanish
//! `912 345 678`, Indian `98765 43210`), each possibly followed by an extension. Only
//! those with at least [`MIN_DIGITS`] digits, not shaped like a date and not continuing a
//! token (an order id, a clock time), are handed to libphonenumber's matcher. A number
//! written with its country code (`+`) is kept if it is valid there ([`Leniency::Valid`]: an
//! assigned range), else if its length is possible there; one written nationally (trunk
//! prefix, parentheses, `00`) must be valid in one of [`REGIONS`], national prefix written
//! where usual; bare digit groups must be grouped exactly as one of [`BARE_REGIONS`] writes
//! its numbers; North American `NXX-NXX-XXXX` must be possible in the US or Canada. The
//! matcher also cuts the span to the number (and extension) itself; a candidate that ran
//! into the numbers after it is tried again without its last digit group.
//!
//! # Cost
//! The matcher costs microseconds per region tried, so it only sees candidates; text with
//! no phone-shaped digits never reaches it.

use std::sync::LazyLock;

use regex::bytes::Regex;
use rlibphonenumber::enums::Region;
use rlibphonenumber::phonenumber_matcher::{Leniency, PHONE_MATCHER_FACTORY};

/// Fewest digits of a number worth asking about (shorter ones are local or service numbers,
/// not personal).
pub const MIN_DIGITS: usize = 7;

/// Regions whose national formats are recognized (international numbers are recognized for
/// every country code): the locales agents' text is expected in, and their neighbours.
pub const REGIONS: [Region; 24] = [
    Region::US,
    Region::CA,
    Region::GB,
    Region::IE,
    Region::DE,
    Region::AT,
    Region::CH,
    Region::FR,
    Region::BE,
    Region::NL,
    Region::LU,
    Region::ES,
    Region::PT,
    Region::IT,
    Region::BR,
    Region::MX,
    Region::AR,
    Region::JP,
    Region::IN,
    Region::AU,
    Region::PL,
    Region::SE,
    Region::DK,
    Region::NO,
];

/// Regions of [`REGIONS`] whose numbers are written nationally without a trunk prefix or
/// parentheses (`912 345 678`, `347 123 4567`, `98765 43210`): only there are bare digit
/// groups asked about.
pub const BARE_REGIONS: [Region; 7] = [
    Region::ES,
    Region::PT,
    Region::IT,
    Region::IN,
    Region::DK,
    Region::NO,
    Region::LU,
];

/// `YYYY-MM-DD`, `YYYY.MM.DD`, `DD.MM.YYYY` and the like: never asked about.
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    // Panic: a constant pattern (compiled by the unit tests).
    Regex::new(r"^(?:(?:19|20)[0-9]{2}[-./][0-9]{1,2}[-./][0-9]{1,2}|[0-9]{1,2}[-./][0-9]{1,2}[-./](?:19|20)[0-9]{2})$")
        .expect("date pattern compiles")
});

/// The phone number that starts the candidate `text[start..end]`, if libphonenumber confirms
/// one: its span in `text`. A candidate may have run into the numbers after it (a time, a
/// card): it is tried whole, then without its last digit group, and so on.
pub fn confirm(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let candidate = text.get(start..end)?;
    if inside_token(text, start) {
        return None;
    }
    // North American `NXX-NXX-XXXX` (dashes or dots) is that shape and nothing else.
    if let Some(m) = NANP.find(candidate.as_bytes()) {
        return matched(
            text,
            start,
            start + m.end(),
            Leniency::Possible,
            &[Region::US, Region::CA],
        );
    }
    // A number written nationally (or after `00`) must be valid (an assigned range, the
    // national prefix written where usual) in one of REGIONS; bare digit groups, which ids
    // and amounts resemble too, must also be grouped as the region writes its numbers, and
    // only in regions that write numbers so. One written with its country code (`+`) is
    // taken, if no valid number starts it, where its length is possible there.
    let tries: &[(Leniency, &[Region])] = match candidate.as_bytes()[0] {
        b'+' => &[(Leniency::Valid, &REGIONS), (Leniency::Possible, &REGIONS)],
        b'0' | b'(' => &[(Leniency::Valid, &REGIONS)],
        _ => &[(Leniency::ExactGrouping, &BARE_REGIONS)],
    };
    for &(leniency, regions) in tries {
        let mut end = end;
        for _ in 0..MAX_GROUPS {
            if let Some(found) = matched(text, start, end, leniency, regions) {
                return Some(found);
            }
            // Without the last digit group (and the separator before it).
            let cut = text[start..end].trim_end_matches(|c: char| c.is_ascii_digit());
            let cut = cut.trim_end_matches(|c: char| !c.is_ascii_digit());
            if cut.is_empty() {
                break;
            }
            end = start + cut.len();
        }
    }
    None
}

/// Most digit groups of a candidate (the scanner's pattern allows no more).
const MAX_GROUPS: usize = 7;

/// The number libphonenumber finds at the start of `text[start..end]` with `leniency` for
/// `regions`, if it has [`MIN_DIGITS`] digits, is not a date, and is not followed by more of
/// a token (`2026-11-22T…`, `…-88.5`).
fn matched(
    text: &str,
    start: usize,
    end: usize,
    leniency: Leniency,
    regions: &[Region],
) -> Option<(usize, usize)> {
    let candidate = text.get(start..end)?;
    let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
    if digits < MIN_DIGITS || DATE.is_match(candidate.as_bytes()) {
        return None;
    }
    let found = PHONE_MATCHER_FACTORY
        .matcher_builder(candidate)
        .leniency(leniency)
        .regions(regions.iter().copied())
        .build()
        .next()
        .filter(|m| m.start == 0)?;
    let end = start + found.end();
    let number_digits = found.raw_string.bytes().filter(u8::is_ascii_digit).count();
    let rest = &text.as_bytes()[end..];
    let continues = rest.len() >= 2 && b":-./T".contains(&rest[0]) && rest[1].is_ascii_digit();
    (number_digits >= MIN_DIGITS && !continues).then_some((start, end))
}

/// `NXX-NXX-XXXX` or `NXX.NXX.XXXX`.
static NANP: LazyLock<Regex> = LazyLock::new(|| {
    // Panic: a constant pattern (compiled by the unit tests).
    Regex::new(r"^[2-9][0-9]{2}[-.][2-9][0-9]{2}[-.][0-9]{4}\b").expect("nanp pattern compiles")
});

/// Whether `start` continues a token: after `:`, `.`, `,`, `-`, `/`, `_` or `#` that follows a
/// letter or digit (a clock time's seconds, an order id's number, a version's part).
fn inside_token(text: &str, start: usize) -> bool {
    let b = text.as_bytes();
    start >= 2 && b":.,-/_#".contains(&b[start - 1]) && b[start - 2].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Option<&str> {
        confirm(text, 0, text.len()).map(|(s, e)| &text[s..e])
    }

    #[test]
    fn national_and_international_formats_are_confirmed() {
        for number in [
            "030 114289",
            "07453 440659",
            "(16) 2251-6509",
            "03-9589-8761",
            "+91 98765 43210",
            "912 345 678",
            "+34 612 34 56 78",
            "06 4891 2345",
            "+39 347 123 4567",
            "020 123 4567",
            "06-12345678",
            "0049 30 1234567",
            "+49 (0)30 1234567",
            "01.23.45.67.89",
            "06 12 34 56 78",
            "(212) 555-0187",
            "+1 212 555 0187",
        ] {
            assert_eq!(found(number), Some(number), "{number}");
        }
        assert_eq!(found("(212) 555-0187 x123"), Some("(212) 555-0187 x123"));
    }

    #[test]
    fn dates_ids_and_short_numbers_are_not_phones() {
        for text in ["2026-12-05", "05.12.2026", "12345", "1.2.3.4", "123-45"] {
            assert_eq!(found(text), None, "{text}");
        }
    }
}
