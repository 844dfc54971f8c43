//! IP addresses, and which of them are personal.
//!
//! An address identifies a person's device unless it names no host at all or every host:
//! the unspecified address, loopback, broadcast, multicast and reserved ranges are never
//! tokenized. Neither are dotted numbers that read as versions: four parts all below ten
//! (`1.2.3.4`, which is also how public resolvers such as `8.8.4.4` and `1.1.1.1` are
//! written), or any dotted quad after a word such as `version`, `release` or `build`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Words after which a dotted quad is a version, not an address.
const VERSION_WORDS: [&[u8]; 9] = [
    b"version",
    b"ver",
    b"v",
    b"release",
    b"build",
    b"firmware",
    b"fw",
    b"rev",
    b"revision",
];

/// Whether the IPv4 address `text[start..end]` is personal.
pub fn personal_v4(text: &[u8], start: usize, end: usize) -> bool {
    let Some(addr) = std::str::from_utf8(&text[start..end])
        .ok()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
    else {
        return false;
    };
    personal_v4_addr(addr) && !after_version_word(&text[..start])
}

fn personal_v4_addr(addr: Ipv4Addr) -> bool {
    let [first, ..] = addr.octets();
    !(first == 0
        || addr.is_loopback()
        || addr.is_broadcast()
        || addr.is_multicast()
        || first >= 240
        || addr.octets().iter().all(|o| *o < 10))
}

/// Whether `text` (a candidate IPv6 address, possibly with an IPv4 tail) is a personal
/// address.
pub fn personal_v6(text: &[u8]) -> bool {
    let Some(addr) = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
    else {
        return false;
    };
    if let Some(v4) = addr.to_ipv4_mapped() {
        return personal_v4_addr(v4);
    }
    !(addr.is_unspecified() || addr.is_loopback() || addr.is_multicast())
}

/// Whether `before` ends with a version word (and spaces, `:` or `=` after it).
fn after_version_word(before: &[u8]) -> bool {
    let trimmed = before
        .iter()
        .rposition(|b| !matches!(b, b' ' | b':' | b'='))
        .map_or(&before[..0], |i| &before[..=i]);
    if trimmed.len() == before.len() {
        // Nothing separates the word from the number.
        return false;
    }
    VERSION_WORDS.iter().any(|word| {
        trimmed.len() >= word.len()
            && trimmed[trimmed.len() - word.len()..].eq_ignore_ascii_case(word)
            && trimmed
                .len()
                .checked_sub(word.len() + 1)
                .is_none_or(|i| !trimmed[i].is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> bool {
        let start = text.rfind(' ').map_or(0, |i| i + 1);
        personal_v4(text.as_bytes(), start, text.len())
    }

    #[test]
    fn hosts_are_personal_and_the_rest_are_not() {
        for personal in ["10.1.2.3", "192.168.10.254", "from 203.0.113.9", "8.8.8.80"] {
            assert!(v4(personal), "{personal}");
        }
        for not in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "224.0.0.251",
            "1.2.3.4",
            "8.8.4.4",
            "version 10.4.22.190",
            "Version: 10.4.22.190",
            "build=112.0.5615.49",
            "release 2.14.101.7",
        ] {
            assert!(!v4(not), "{not}");
        }
        assert!(v4("server 10.4.22.190"));
        assert!(personal_v6(b"2001:db8::8a2e:370:7334"));
        assert!(personal_v6(b"fe80::"));
        assert!(personal_v6(b"::ffff:203.0.113.7"));
        for not in [
            "::",
            "::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "12:30",
            "std::ab",
        ] {
            assert!(!personal_v6(not.as_bytes()), "{not}");
        }
    }
}
