//! Event ids as stored: 16 bytes when the id is a UUID in its canonical text form, the text
//! otherwise.
//!
//! Schema v1 lets an event id be any non-empty text, but producers use UUIDs, whose text form
//! (36 bytes) compresses badly. The events table therefore keeps an id in one of two columns:
//! `fixed(16)` when the text is exactly the lowercase hyphenated form of those 16 bytes (so the
//! text comes back byte for byte), the text itself otherwise (upper case, braces, any other
//! scheme). The canonical bytes that the leaf hashes always use the text.

use std::fmt;

/// An id as stored: its UUID bytes, or its text when it is not a canonical UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredId<'a> {
    /// A lowercase hyphenated UUID (`8-4-4-4-12` hex digits), as its 16 bytes.
    Uuid([u8; 16]),
    /// Any other id, as given.
    Text(&'a str),
}

impl<'a> StoredId<'a> {
    /// How `id` is stored.
    pub fn of(id: &'a str) -> Self {
        match uuid_bytes(id) {
            Some(bytes) => StoredId::Uuid(bytes),
            None => StoredId::Text(id),
        }
    }

    /// The UUID bytes, if the id is one.
    pub fn uuid(&self) -> Option<&[u8; 16]> {
        match self {
            StoredId::Uuid(bytes) => Some(bytes),
            StoredId::Text(_) => None,
        }
    }

    /// The text, if the id is not a UUID.
    pub fn text(&self) -> Option<&'a str> {
        match self {
            StoredId::Uuid(_) => None,
            StoredId::Text(text) => Some(text),
        }
    }
}

impl fmt::Display for StoredId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredId::Uuid(bytes) => {
                let mut buf = [0u8; 36];
                f.write_str(uuid_text(bytes, &mut buf))
            }
            StoredId::Text(text) => f.write_str(text),
        }
    }
}

/// Where the hyphens of the canonical text are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// The 16 bytes of `text` if it is a UUID in canonical form: 36 bytes, lowercase hex digits
/// with hyphens at 8, 13, 18 and 23. Any other text (upper case included) is `None`, so that
/// [`uuid_text`] gives back exactly `text`.
pub fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let t = text.as_bytes();
    if t.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for (i, &b) in t.iter().enumerate() {
        if HYPHENS.contains(&i) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let v = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

/// The canonical text of a UUID, written into `buf`.
pub fn uuid_text<'b>(bytes: &[u8; 16], buf: &'b mut [u8; 36]) -> &'b str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[at] = b'-';
            at += 1;
        }
        buf[at] = HEX[(b >> 4) as usize];
        buf[at + 1] = HEX[(b & 15) as usize];
        at += 2;
    }
    // Panic: only ASCII hex digits and hyphens were written.
    std::str::from_utf8(buf).expect("ascii")
}

/// The id stored as `uuid` or `text` (exactly one is set in a valid row).
pub fn id_from_columns(uuid: Option<&[u8]>, text: Option<&str>) -> Option<String> {
    match (uuid, text) {
        (Some(bytes), None) => {
            let bytes: &[u8; 16] = bytes.try_into().ok()?;
            Some(uuid_text(bytes, &mut [0; 36]).to_string())
        }
        (None, Some(text)) => Some(text.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_round_trip_and_nothing_else_is_one() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = [0u8; 16];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let text = uuid_text(&bytes, &mut [0; 36]).to_string();
            assert_eq!(uuid_bytes(&text), Some(bytes));
            assert_eq!(StoredId::of(&text).to_string(), text);
            assert_eq!(
                id_from_columns(Some(&bytes), None).as_deref(),
                Some(text.as_str())
            );
            // Upper case, braces, a missing or moved hyphen, or a bad digit stay text.
            let upper = text.to_uppercase();
            if upper != text {
                assert_eq!(StoredId::of(&upper), StoredId::Text(&upper));
            }
            assert_eq!(uuid_bytes(&format!("{{{text}}}")), None);
            assert_eq!(uuid_bytes(&text.replacen('-', "", 1)), None);
            let moved = format!("{}-{}", &text[..7], &text[7..35].replacen('-', "", 1));
            assert_eq!(uuid_bytes(&moved), None);
            assert_eq!(
                uuid_bytes(&text.replacen(|c: char| c.is_ascii_hexdigit(), "g", 1)),
                None
            );
        }
        for other in ["", "e1", "custody-access-1", "ééééééééééééééééééé"] {
            assert_eq!(StoredId::of(other), StoredId::Text(other));
            assert_eq!(id_from_columns(None, Some(other)).as_deref(), Some(other));
        }
        assert_eq!(id_from_columns(None, None), None);
        assert_eq!(id_from_columns(Some(&[0; 16]), Some("x")), None);
        assert_eq!(id_from_columns(Some(&[0; 15]), None), None);
    }
}
