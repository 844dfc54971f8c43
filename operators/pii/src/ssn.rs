//! US social security numbers: `AAA-GG-SSSS`, `AAA GG SSSS`, or nine digits after a word
//! that names them (`SSN`, `social security`…), under the SSA's rules (no area 000, 666 or
//! 9xx, no group 00, no serial 0000).

/// Words that name an SSN, lower case; nine bare digits count only after one of them.
const CONTEXT: [&[u8]; 7] = [
    b"ssn",
    b"social security",
    b"soc sec",
    b"soc. sec",
    b"ss#",
    b"ss #",
    b"ss no",
];

/// How far back (in bytes) a context word may be.
const CONTEXT_WINDOW: usize = 40;

/// Whether `text[start..end]`, a match of the SSN shape, is an SSN.
pub fn valid(text: &[u8], start: usize, end: usize) -> bool {
    let found = &text[start..end];
    let Some((digits, n)) = crate::digits_of::<9>(found) else {
        return false;
    };
    if n != 9 {
        return false;
    }
    let rules = &digits[0..3] != b"000"
        && &digits[0..3] != b"666"
        && digits[0] != b'9'
        && &digits[3..5] != b"00"
        && &digits[5..9] != b"0000";
    rules && (found.len() == 11 || named_before(&text[start.saturating_sub(CONTEXT_WINDOW)..start]))
}

/// Whether a context word occurs in `before` with no digit after it (the word names this
/// number, not an earlier one).
fn named_before(before: &[u8]) -> bool {
    let tail = before
        .iter()
        .rposition(u8::is_ascii_digit)
        .map_or(before, |i| &before[i + 1..]);
    CONTEXT.iter().any(|word| {
        tail.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssn(text: &str) -> bool {
        let start = text.rfind(' ').map_or(0, |i| i + 1);
        let start = if text[start..].len() == 4 {
            start - 7
        } else {
            start
        };
        valid(text.as_bytes(), start, text.len())
    }

    #[test]
    fn separated_and_named_numbers_are_ssns() {
        assert!(ssn("250-05-5639"));
        assert!(ssn("id 250 05 5639"));
        assert!(ssn("SSN: 250055639"));
        assert!(ssn("her social security number is 250055639"));
        assert!(!ssn("order 250055639"));
        assert!(!ssn("666-05-5639"));
        assert!(!ssn("950-05-5639"));
        assert!(!ssn("250-00-5639"));
        assert!(!ssn("250-05-0000"));
    }
}
