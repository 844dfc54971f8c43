//! Checks of the personal data the context rules find (`context.toml`): NHS numbers (mod 11),
//! dates of birth, travel document numbers, and person names (a gazetteer of given names,
//! `data/given_names.txt`, and words that end a name).

use std::collections::HashSet;
use std::sync::LazyLock;

/// Given names, lowercase.
static GIVEN_NAMES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/given_names.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Given names that are also common words, months or places: a name only after a cue.
const AMBIGUOUS: &[&str] = &[
    "may", "june", "april", "will", "mark", "grace", "hope", "faith", "joy", "rose", "iris", "art",
    "chase", "hunter", "austin", "paris", "florence", "jordan", "victoria", "georgia", "virginia",
    "carolina", "lincoln", "ford", "dean", "guy", "pat", "sue", "don", "ray", "max", "jack",
    "frank", "bill", "min", "jun", "jan", "ida", "ben", "joe", "kim", "lea", "ella", "nina",
    "vera", "eva", "mia", "zoe", "amy", "yan", "xin", "ali", "raj", "anan", "sun", "ma", "hu",
    "wu", "lin",
];

/// Words that are not part of a name though capitalized or following one: roles, teams,
/// document words, and the verbs and particles that follow a name in a sentence.
const NOT_NAME: &[&str] = &[
    // Roles, teams and things named in business text.
    "account",
    "accounts",
    "agent",
    "api",
    "app",
    "assistant",
    "bank",
    "billing",
    "board",
    "care",
    "case",
    "center",
    "centre",
    "claims",
    "client",
    "company",
    "compliance",
    "contact",
    "council",
    "customer",
    "data",
    "department",
    "desk",
    "details",
    "director",
    "email",
    "experience",
    "file",
    "finance",
    "form",
    "group",
    "help",
    "holder",
    "id",
    "inc",
    "information",
    "intake",
    "legal",
    "limited",
    "ltd",
    "management",
    "manager",
    "number",
    "office",
    "officer",
    "operations",
    "order",
    "period",
    "platform",
    "policy",
    "portal",
    "product",
    "profile",
    "record",
    "records",
    "relations",
    "report",
    "request",
    "review",
    "risk",
    "sales",
    "security",
    "service",
    "services",
    "session",
    "success",
    "support",
    "system",
    "team",
    "ticket",
    "unit",
    "user",
    "world",
    "program",
    "name",
    "names",
    "street",
    "road",
    "avenue",
    "lane",
    "drive",
    "bank",
    "day",
    "read",
    "new",
    "york",
    "morning",
    "evening",
    "week",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "passport",
    "reisepass",
    "passeport",
    "pasaporte",
    "passaporto",
    "nr",
    "no",
    "dob",
    "nhs",
    "mrn",
    "iban",
    "ssn",
    "card",
    "phone",
    "tel",
    "address",
    "anschrift",
    "adresse",
    // Words that follow a name in a sentence.
    "a",
    "about",
    "after",
    "again",
    "also",
    "an",
    "and",
    "approved",
    "are",
    "as",
    "asked",
    "at",
    "before",
    "but",
    "by",
    "called",
    "calls",
    "can",
    "cannot",
    "confirmed",
    "could",
    "did",
    "disputed",
    "does",
    "emailed",
    "for",
    "from",
    "had",
    "has",
    "have",
    "he",
    "her",
    "him",
    "his",
    "in",
    "is",
    "it",
    "its",
    "mentioned",
    "needs",
    "not",
    "noted",
    "of",
    "on",
    "or",
    "paid",
    "please",
    "reported",
    "requested",
    "replied",
    "said",
    "says",
    "she",
    "should",
    "signed",
    "that",
    "the",
    "their",
    "they",
    "this",
    "to",
    "wants",
    "was",
    "were",
    "who",
    "will",
    "with",
    "would",
    "wrote",
    "via",
    "rang",
    "opened",
    "closed",
    // The same in the other languages of the corpus.
    "y",
    "e",
    "et",
    "und",
    "ist",
    "hat",
    "est",
    "a",
    "ha",
    "es",
    "el",
    "la",
    "le",
    "der",
    "die",
    "das",
    "ruft",
    "rief",
    "meldet",
    "fue",
    "foi",
    "è",
    "a",
    "pidió",
    "solicitó",
    "demande",
    "demandé",
    "appelé",
    "angerufen",
    "an",
];

static NOT_NAME_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| NOT_NAME.iter().copied().collect());

/// Whether `word` (any case) is a given name of the gazetteer.
fn given(word: &str) -> bool {
    let mut buf = [0u8; 32];
    lower_into(word, &mut buf).is_some_and(|w| GIVEN_NAMES.contains(w))
}

/// `word` lowercased into `buf` (ASCII letters folded; `À`–`Þ` folded to `à`–`þ`).
fn lower_into<'b>(word: &str, buf: &'b mut [u8; 32]) -> Option<&'b str> {
    let bytes = word.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    for i in 0..out.len() {
        if out[i].is_ascii_uppercase() {
            out[i] = out[i].to_ascii_lowercase();
        } else if i > 0 && out[i - 1] == 0xc3 && (0x80..0x9f).contains(&out[i]) && out[i] != 0x97 {
            // U+00C0..U+00DE (not ×) are two bytes 0xC3 0x80..0x9E; lowercase is +0x20.
            out[i] += 0x20;
        }
    }
    std::str::from_utf8(out).ok()
}

fn ambiguous(word: &str) -> bool {
    let mut buf = [0u8; 32];
    lower_into(word, &mut buf).is_some_and(|w| AMBIGUOUS.contains(&w))
}

fn capitalized(word: &str) -> bool {
    word.chars().next().is_some_and(char::is_uppercase)
}

fn not_name(word: &str) -> bool {
    let mut buf = [0u8; 32];
    lower_into(word, &mut buf).is_none_or(|w| NOT_NAME_SET.contains(w))
}

/// Name particles (`van der`, `de la`): kept inside a name, never its last word.
fn particle(word: &str) -> bool {
    let mut buf = [0u8; 32];
    matches!(
        lower_into(word, &mut buf).unwrap_or(""),
        "van"
            | "der"
            | "von"
            | "de"
            | "la"
            | "del"
            | "di"
            | "da"
            | "le"
            | "al"
            | "el"
            | "bin"
            | "ben"
            | "dos"
    )
}

/// The length of the person's name that starts `value` (words separated by single spaces, as
/// the rules' shapes find them), if it is one: its first word a given name of the gazetteer,
/// or (not `gazetteer_only`) capitalized and not a word of [`NOT_NAME`]; then the words that
/// continue it, up to the first that is not a name's. `gazetteer_only` (no cue before the
/// name) also needs a capitalized surname and a given name that is not a common word.
pub(crate) fn name(value: &str, gazetteer_only: bool) -> Option<usize> {
    let mut words = value.split(char::is_whitespace).filter(|w| !w.is_empty());
    let first = words.next()?;
    let is_given = given(first);
    if gazetteer_only {
        if !is_given || ambiguous(first) {
            return None;
        }
    } else if !is_given && (!capitalized(first) || not_name(first)) {
        return None;
    }
    // A name written in lower case (`kwame wei`) continues with lower-case words; otherwise
    // with capitalized ones (and particles).
    let lower_case = !capitalized(first);
    let mut end = first.len() + (first.as_ptr() as usize - value.as_ptr() as usize);
    let mut words_taken = 1;
    for word in words {
        let offset = word.as_ptr() as usize - value.as_ptr() as usize;
        if particle(word) {
            continue;
        }
        let initial = word.len() == 2 && word.ends_with('.') && capitalized(word);
        let fits = if lower_case {
            !capitalized(word) && !not_name(word)
        } else {
            (capitalized(word) && !not_name(word)) || initial
        };
        // A name in lower case has two words at most (`kwame wei`, not `kwame wei reviewed`).
        if !fits || (lower_case && words_taken == 2) {
            break;
        }
        end = offset + word.len();
        if !initial {
            words_taken += 1;
        }
    }
    if gazetteer_only && words_taken < 2 {
        return None;
    }
    // One word after a role is a name only if the gazetteer knows it as nothing else
    // (`user Mark As Read` is not Mark).
    if words_taken < 2 && (!is_given || ambiguous(first)) {
        return None;
    }
    Some(end)
}

/// The cue before a name a rule finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameCue {
    /// A role (`Customer`, `approved by`): the name's first word is a given name or
    /// capitalized.
    Role,
    /// A title (`Mr.`): the name's first word is capitalized.
    Title,
}

/// A cheap test run before a name rule's groups are resolved: whether the first word after
/// the cue word at `at` (and the separators after it) may start a name. `None` (no cue word:
/// not a name rule, or one whose match starts with the given name itself) passes.
pub(crate) fn may_start_name(cue: Option<NameCue>, bytes: &[u8], at: usize, to: usize) -> bool {
    let Some(cue) = cue else { return true };
    let word_byte = |b: u8| b.is_ascii_alphabetic() || b >= 0x80;
    let mut i = at;
    // The cue word, then separators (and `is`/`was`); the cue's second word (`approved by`,
    // `account holder`) is read as a word that may start a name: a false pass only costs
    // the full match.
    while i < to && word_byte(bytes[i]) {
        i += 1;
    }
    loop {
        while i < to
            && matches!(
                bytes[i],
                b' ' | b'\t' | b'\n' | b'\r' | b':' | b'=' | b',' | b'.' | b'"' | b'\''
            )
        {
            i += 1;
        }
        let start = i;
        while i < to && word_byte(bytes[i]) {
            i += 1;
        }
        let Ok(word) = std::str::from_utf8(&bytes[start..i]) else {
            return true;
        };
        if word.is_empty() {
            return false;
        }
        if matches!(word, "is" | "was" | "by" | "with" | "holder" | "name") {
            continue;
        }
        return match cue {
            NameCue::Title => !not_name(word),
            NameCue::Role => given(word) || (capitalized(word) && !not_name(word)),
        };
    }
}

/// The length of the name after a title (`Mr.`, `Dr.`) that starts `value`: one or more
/// capitalized words, the first not a word of the stop list (`Dr. No`).
pub(crate) fn titled_name(value: &str) -> Option<usize> {
    let first = value.split(' ').find(|w| !w.is_empty())?;
    if not_name(first) {
        return None;
    }
    Some(value.trim_end().len())
}

/// Calls `found(start, end)` for each capitalized given name of the gazetteer in `bytes`
/// followed by a space and another word: where the cue-less name rule is tried (and [`name`]
/// then checks).
pub(crate) fn given_names(bytes: &[u8], mut found: impl FnMut(usize, usize)) {
    let n = bytes.len();
    let mut i = 0;
    // Only capitals start a name: jump from one to the next (`0xC3` leads `À`–`ß`).
    while let Some(off) = bytes[i..]
        .iter()
        .position(|&b| b.wrapping_sub(b'A') < 26 || b == 0xc3)
    {
        i += off;
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] >= 0x80);
        let capital = bytes[i] != 0xc3 || bytes.get(i + 1).is_some_and(|&b| b < 0x9f);
        if !(starts_word && capital) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && (bytes[j].is_ascii_alphabetic() || bytes[j] >= 0x80 || bytes[j] == b'-') {
            j += 1;
        }
        // Followed by a surname (or a particle: `van der Berg`).
        let next_word = j + 1 < n
            && bytes[j] == b' '
            && (bytes[j + 1].is_ascii_alphabetic() || bytes[j + 1] == 0xc3);
        if next_word
            && (2..=16).contains(&(j - i))
            && let Ok(word) = std::str::from_utf8(&bytes[i..j])
            && given(word)
        {
            found(i, j);
        }
        i = j;
    }
}

/// An NHS number: ten digits (spaces or dashes between groups), the tenth the check digit:
/// `11 - (Σ digit_i × (11 - i)) mod 11` over the first nine, 11 read as 0, 10 invalid.
pub(crate) fn nhs_valid(value: &str) -> bool {
    let Some((digits, 10)) = crate::digits_of::<10>(value.as_bytes()) else {
        return false;
    };
    let sum: u32 = digits[..9]
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (10 - i as u32))
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    u32::from(digits[9] - b'0') == check
}

/// Month number of a month's name or abbreviation in English, French, German, Spanish,
/// Italian, Portuguese or Dutch.
fn month(word: &str) -> Option<u32> {
    let mut buf = [0u8; 32];
    let w = lower_into(word.trim_end_matches('.'), &mut buf)?;
    const MONTHS: [&[&str]; 12] = [
        &[
            "jan", "janv", "januar", "enero", "ene", "gennaio", "gen", "janeiro", "januari",
            "janvier", "january",
        ],
        &[
            "feb",
            "febr",
            "februar",
            "febrero",
            "febbraio",
            "fevereiro",
            "februari",
            "février",
            "fév",
            "fev",
            "february",
        ],
        &[
            "mar", "märz", "mär", "marzo", "mars", "março", "maart", "march", "mrz",
        ],
        &["apr", "april", "abril", "aprile", "avril", "avr", "abr"],
        &["may", "mai", "mayo", "maggio", "maio", "mei", "mag"],
        &[
            "jun", "juni", "junio", "giugno", "juin", "junho", "june", "giu",
        ],
        &[
            "jul", "juli", "julio", "luglio", "juillet", "julho", "july", "lug", "juil",
        ],
        &["aug", "august", "agosto", "août", "augustus", "ago"],
        &[
            "sep",
            "sept",
            "september",
            "septiembre",
            "settembre",
            "septembre",
            "setembro",
            "set",
        ],
        &[
            "oct", "okt", "oktober", "octubre", "ottobre", "octobre", "outubro", "october", "ott",
            "out",
        ],
        &["nov", "november", "noviembre", "novembre", "novembro"],
        &[
            "dec",
            "dez",
            "dezember",
            "diciembre",
            "dicembre",
            "décembre",
            "déc",
            "dezembro",
            "december",
            "dic",
        ],
    ];
    MONTHS
        .iter()
        .position(|names| names.contains(&w))
        .map(|i| i as u32 + 1)
}

fn days_in(month: u32, year: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Whether `value` is a real calendar date from 1900 to 2099 written day-month-year,
/// month-day-year (either must be a real date), year-month-day, or with a month's name.
pub(crate) fn birth_date(value: &str) -> bool {
    let parts: Vec<&str> = value
        .split(|c: char| c.is_whitespace() || matches!(c, '/' | '-' | '.' | ','))
        .filter(|p| !p.is_empty() && *p != "de")
        .collect();
    let num = |s: &str| {
        s.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse::<u32>()
            .ok()
    };
    let valid = |d: u32, m: u32, y: u32| {
        (1900..=2099).contains(&y) && (1..=12).contains(&m) && (1..=days_in(m, y)).contains(&d)
    };
    match parts.as_slice() {
        [a, b, c] => {
            if let (Some(a), Some(b), Some(c)) = (num(a), num(b), num(c)) {
                if a >= 1900 {
                    valid(c, b, a)
                } else {
                    valid(a, b, c) || valid(b, a, c)
                }
            } else if let (Some(d), Some(m), Some(y)) = (num(a), month(b), num(c)) {
                valid(d, m, y)
            } else if let (Some(m), Some(d), Some(y)) = (month(a), num(b), num(c)) {
                valid(d, m, y)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// A travel document's number: 6 to 9 ASCII letters and digits, at least 5 digits.
pub(crate) fn document_number(value: &str) -> bool {
    (6..=9).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
        && value.bytes().filter(u8::is_ascii_digit).count() >= 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_follow_mod_11() {
        assert!(nhs_valid("943 476 5919"));
        assert!(nhs_valid("9434765870"));
        assert!(nhs_valid("401-023-2137"));
        assert!(!nhs_valid("943 476 5918"));
        assert!(!nhs_valid("943 476 591"));
    }

    #[test]
    fn birth_dates_are_real_dates() {
        for ok in [
            "04/12/1987",
            "1990-07-23",
            "March 3, 1975",
            "14.02.1969",
            "12 mars 1982",
            "5 de mayo de 1991",
            "23 Aug 2001",
            "29.02.2000",
            "12/31/1999",
        ] {
            assert!(birth_date(ok), "{ok}");
        }
        for bad in [
            "31/02/1987",
            "29.02.1900",
            "13/13/1999",
            "1 Foo 1990",
            "5/5/1850",
        ] {
            assert!(!birth_date(bad), "{bad}");
        }
    }

    #[test]
    fn names_end_where_the_sentence_goes_on() {
        fn n(v: &str, g: bool) -> Option<&str> {
            name(v, g).map(|l| &v[..l])
        }
        assert_eq!(n("kwame wei asked", false), Some("kwame wei"));
        assert_eq!(n("Jane Doe", false), Some("Jane Doe"));
        assert_eq!(n("Olga Petrova approved", false), Some("Olga Petrova"));
        assert_eq!(n("service team replied", false), None);
        assert_eq!(n("Success Manager", false), None);
        assert_eq!(n("Sofia Rossi", true), Some("Sofia Rossi"));
        assert_eq!(n("Grace Period", true), None);
        assert_eq!(n("Monday Morning", true), None);
        assert_eq!(n("Jan van der Berg", false), Some("Jan van der Berg"));
        assert_eq!(n("Emma J. Larsen", true), Some("Emma J. Larsen"));
    }

    #[test]
    fn a_capitalized_given_name_before_a_capitalized_word_fires_the_gazetteer_rule() {
        let starts = |text: &str| {
            let mut at = Vec::new();
            given_names(text.as_bytes(), |s, _| at.push(s));
            at
        };
        assert_eq!(starts("escalated to Fatima Al-Sayed today"), [13]);
        assert_eq!(starts("to Aiko van der Berg, Lars Berg"), [3, 22]);
        assert!(starts("escalated to fatima al-sayed").is_empty());
        assert!(starts("The Agent Framework").is_empty());
    }
}
