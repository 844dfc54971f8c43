//! IBANs (ISO 13616): a country of the IBAN registry at that country's length, check digits
//! 02–98, and the mod-97 check (ISO 7064). Letters in either case; groups separated by
//! spaces or dashes.

/// Countries of the IBAN registry and the length of their IBANs.
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The registered length of IBANs of `country` (upper case).
pub fn length(country: [u8; 2]) -> Option<usize> {
    LENGTHS
        .iter()
        .find(|(c, _)| **c == country)
        .map(|(_, len)| *len)
}

/// Whether `text` (letters in either case, spaces or dashes between groups) is an IBAN.
pub fn valid(text: &[u8]) -> bool {
    let mut s = [0u8; 34];
    let mut n = 0;
    for &b in text {
        match b {
            b' ' | b'-' => {}
            _ if n == s.len() => return false,
            _ => {
                s[n] = b.to_ascii_uppercase();
                n += 1;
            }
        }
    }
    let s = &s[..n];
    if n < 4 || length([s[0], s[1]]) != Some(n) {
        return false;
    }
    // ISO 7064 check digits are 02..=98 (01, 00 and 99 never occur in a real IBAN).
    if !(b"02".as_slice()..=b"98".as_slice()).contains(&&s[2..4]) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in s[4..].iter().chain(&s[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_examples_in_every_writing() {
        for iban in [
            "GB82WEST12345698765432",
            "DE89 3704 0044 0532 0130 00",
            "de89370400440532013000",
            "de89 3704 0044 0532 0130 00",
            "DE89-3704-0044-0532-0130-00",
            "FR14 2004 1010 0505 0001 3M02 606",
            "fr1420041010050500013m02606",
            "NL91ABNA0417164300",
            "NO9386011117947",
            "MT84MALT011000012345MTLCAST001S",
        ] {
            assert!(valid(iban.as_bytes()), "{iban}");
        }
        for wrong in [
            "GB82WEST12345698765433",
            // One digit short of Germany's 22.
            "DE8937040044053201300",
            "XX82WEST12345698765432",
        ] {
            assert!(!valid(wrong.as_bytes()), "{wrong}");
        }
    }
}
