//! A compact event id for view state: a canonical UUID (lowercase, hyphenated, the form
//! generators and SDKs write) in 16 bytes instead of a 36-byte string on the heap; any other
//! id as its text. It reads, writes, compares and orders exactly as the text it came from.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An event id; see the module documentation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum EventId {
    /// A canonical UUID, as its 128 bits.
    Uuid(u128),
    /// Any other id.
    Text(Box<str>),
}

/// Positions of the hyphens in a canonical UUID.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, c) in b.iter().enumerate() {
        if HYPHENS.contains(&i) {
            if *c != b'-' {
                return None;
            }
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

fn write_uuid(v: u128, f: &mut impl fmt::Write) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut digits = (0..36).filter(|i| !HYPHENS.contains(i));
    for shift in (0..32).rev() {
        // Panic-free: 36 places less the 4 hyphens are the 32 digits.
        let i = digits.next().unwrap_or(0);
        out[i] = HEX[((v >> (shift * 4)) & 0xf) as usize];
    }
    // Panic-free: hex digits and hyphens are ASCII.
    f.write_str(std::str::from_utf8(&out).unwrap_or_default())
}

impl EventId {
    /// The id of text `s`.
    pub fn new(s: &str) -> Self {
        match parse_uuid(s) {
            Some(v) => EventId::Uuid(v),
            None => EventId::Text(s.into()),
        }
    }
}

impl From<&str> for EventId {
    fn from(s: &str) -> Self {
        EventId::new(s)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventId::Uuid(v) => write_uuid(*v, f),
            EventId::Text(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Ord for EventId {
    /// The order of the texts: two canonical UUIDs order as their bits (fixed-width lowercase
    /// hex with hyphens at fixed places orders as the number).
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (EventId::Uuid(a), EventId::Uuid(b)) => a.cmp(b),
            (EventId::Text(a), EventId::Text(b)) => a.cmp(b),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(EventId::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_write_and_order_as_their_text() {
        let texts = [
            "044712f6-5550-4084-b73e-b08f52489649",
            "0a117e53-2f01-448e-82f5-2e21a48e0eb2",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "00000000-0000-0000-0000-000000000000",
            "044712F6-5550-4084-B73E-B08F52489649",
            "044712f6-5550-4084-b73e-b08f5248964",
            "044712f6_5550-4084-b73e-b08f52489649",
            "044712f6-5550-4084-b73e-b08f52489649 ",
            "s1e2",
            "",
            "zzz",
            "é-ü",
            "0",
        ];
        let ids: Vec<EventId> = texts.iter().map(|t| EventId::new(t)).collect();
        assert!(matches!(ids[0], EventId::Uuid(_)));
        assert!(matches!(ids[4], EventId::Text(_)), "upper case stays text");
        for (t, id) in texts.iter().zip(&ids) {
            assert_eq!(id.to_string(), *t);
            let json = serde_json::to_string(id).unwrap();
            assert_eq!(json, serde_json::to_string(t).unwrap());
            assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), *id);
        }
        for (a, x) in texts.iter().zip(&ids) {
            for (b, y) in texts.iter().zip(&ids) {
                assert_eq!(x.cmp(y), a.cmp(b), "{a} vs {b}");
                assert_eq!(x == y, a == b);
            }
        }
    }
}
