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
use rlibphonenumber::{PhoneNumber, PhoneNumberFormat};

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
/// parentheses (`912 345 678`, `347 123 4567`, `98765 43210`), and the lengths of their
/// national numbers: only there, and only at those lengths, are bare digit groups asked
/// about.
pub const BARE_REGIONS: [(Region, &[usize]); 7] = [
    (Region::ES, &[9]),
    (Region::PT, &[9]),
    (Region::IT, &[9, 10]),
    (Region::IN, &[10]),
    (Region::DK, &[8]),
    (Region::NO, &[8]),
    (Region::LU, &[8, 9]),
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
        let end = start + m.end();
        return accepted(text, start, end, Form::Nanp).then_some((start, end));
    }
    // A number written nationally (or after `00`) must be valid (an assigned range) in one
    // of REGIONS; bare digit groups, which ids and amounts resemble too, must also be grouped
    // as the region writes its numbers, and only in regions that write numbers so. One
    // written with its country code (`+`) is taken, if no valid number starts it, where its
    // length is possible there.
    let forms: &[Form] = match candidate.as_bytes()[0] {
        b'+' => &[Form::International, Form::InternationalPossible],
        b'0' if candidate.starts_with("00") => &[Form::Idd],
        b'0' | b'(' => &[Form::National],
        _ => &[Form::Bare],
    };
    // `06-6526-6904 433`: digits after a space that follows groups joined by dashes, dots or
    // slashes belong to what comes next, though a longer number may be valid too.
    let end = match spaced_tail(candidate) {
        Some(cut) if forms.iter().any(|&f| accepted(text, start, start + cut, f)) => {
            return Some((start, start + cut));
        }
        _ => end,
    };
    for &form in forms {
        let mut end = end;
        for _ in 0..MAX_GROUPS {
            if accepted(text, start, end, form) {
                return Some((start, end));
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

/// How a candidate is written, which decides what libphonenumber must say of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `+CC …`: a valid number of that country.
    International,
    /// `+CC …`: a number of a possible length for that country.
    InternationalPossible,
    /// `00CC …`: the international prefix of most of the world; a valid number.
    Idd,
    /// A trunk prefix or a parenthesised area code: valid in one of [`REGIONS`].
    National,
    /// Bare digit groups: valid in one of [`BARE_REGIONS`] and grouped exactly as it writes
    /// its numbers.
    Bare,
    /// `NXX-NXX-XXXX`: possible in the US or Canada.
    Nanp,
}

impl Form {
    /// Most digits a number so written has, extension aside: E.164 allows 15 with the
    /// country code, national numbers are shorter, and `00` adds two.
    fn most_digits(self) -> usize {
        match self {
            Form::International | Form::InternationalPossible => 15,
            Form::Idd => 17,
            Form::National => 13,
            Form::Bare => 11,
            Form::Nanp => 10,
        }
    }
}

/// Regions of [`REGIONS`] where no number starts with `0` (no trunk prefix `0`, or `1`):
/// a candidate starting with `0` is not asked about there.
const NO_TRUNK_ZERO: [Region; 7] = [
    Region::US,
    Region::CA,
    Region::ES,
    Region::PT,
    Region::DK,
    Region::NO,
    Region::LU,
];

/// Most digit groups of a candidate (the scanner's pattern allows no more).
const MAX_GROUPS: usize = 7;

/// Whether `text[start..end]` is a phone number written in `form`: it has [`MIN_DIGITS`]
/// digits, is not a date, is not followed by more of a token (`2026-11-22T…`, `…-88.5`),
/// and libphonenumber's metadata confirm it.
fn accepted(text: &str, start: usize, end: usize, form: Form) -> bool {
    let Some(candidate) = text.get(start..end) else {
        return false;
    };
    // Digits of the number itself (an extension's are not counted).
    let number = candidate.split(['x', 'e']).next().unwrap_or(candidate);
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    let rest = &text.as_bytes()[end..];
    let continues = rest.len() >= 2 && b":-./T".contains(&rest[0]) && rest[1].is_ascii_digit();
    if !(MIN_DIGITS..=form.most_digits()).contains(&digits)
        || continues
        || DATE.is_match(candidate.as_bytes())
    {
        return false;
    }
    let parse = |region| PhoneNumber::parse(candidate, region).ok();
    match form {
        Form::International => parse(None).is_some_and(|n| n.is_valid()),
        Form::InternationalPossible => {
            parse(None).is_some_and(|n| n.is_possible_with_reason().is_ok())
        }
        // Germany dials abroad with `00`, as most of the world does.
        Form::Idd => parse(Some(Region::DE)).is_some_and(|n| n.is_valid()),
        Form::National => {
            let trunk = number.trim_start_matches('(').starts_with('0');
            REGIONS
                .iter()
                .filter(|r| !trunk || !NO_TRUNK_ZERO.contains(r))
                .any(|&r| parse(Some(r)).is_some_and(|n| n.is_valid_for_region(r)))
        }
        Form::Bare => BARE_REGIONS.iter().any(|&(r, lengths)| {
            lengths.contains(&digits)
                && parse(Some(r)).is_some_and(|n| {
                    n.is_valid_for_region(r)
                        && same_groups(number, &n.format_as(PhoneNumberFormat::National))
                })
        }),
        Form::Nanp => [Region::US, Region::CA]
            .iter()
            .any(|&r| parse(Some(r)).is_some_and(|n| n.is_possible_with_reason().is_ok())),
    }
}

/// Whether the digit groups of `number` (a candidate without its extension) have the lengths of those of
/// `formatted`, the region's own national format of the number (trunk prefix aside).
fn same_groups(number: &str, formatted: &str) -> bool {
    let groups = |s: &str| {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .map(str::len)
            .collect::<Vec<_>>()
    };
    // The national format may carry the trunk prefix (`098468 41498`) the writer left out.
    let formatted = match formatted.strip_prefix('0') {
        Some(rest) if !number.starts_with('0') => rest,
        _ => formatted,
    };
    groups(number) == groups(formatted)
}

/// Where the digit groups of `candidate` after its first space start a different token: the
/// length before that space, if the groups before it are joined by dashes, dots or slashes
/// (`06-6526-6904 433`).
fn spaced_tail(candidate: &str) -> Option<usize> {
    let cut = candidate.find(' ')?;
    let head = candidate[..cut].trim_start_matches('+');
    (head.contains(['-', '.', '/']) && !head.contains(['(', ')'])).then_some(cut)
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
    fn digits_after_a_dashed_number_and_a_space_are_not_its_own() {
        assert_eq!(found("06-6526-6904 433 77 7403"), Some("06-6526-6904"));
        assert_eq!(found("06.65.26.69.04 433"), Some("06.65.26.69.04"));
        assert_eq!(found("030 1234 5678"), Some("030 1234 5678"));
    }

    #[test]
    fn dates_ids_and_short_numbers_are_not_phones() {
        for text in ["2026-12-05", "05.12.2026", "12345", "1.2.3.4", "123-45"] {
            assert_eq!(found(text), None, "{text}");
        }
    }
}
