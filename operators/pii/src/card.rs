//! Payment card numbers: an issuer's range (IIN) at a length that issuer uses, and the Luhn
//! check (ISO/IEC 7812).
//!
//! The ranges are the published leading digits of the card networks. A Luhn-valid number
//! outside them is an id, not a card: EAN-13 barcodes and 13-digit epoch milliseconds are
//! never cards (no network issues 13-digit numbers any more), nor are 15-digit IMEIs (whose
//! leading digits are no 15-digit issuer's).

/// `(lowest prefix, highest prefix, shortest, longest)`: numbers whose leading digits, read
/// to the prefixes' width, fall in the range, at the lengths the network issues.
const ISSUERS: &[(u32, u32, usize, usize)] = &[
    // Visa (13-digit numbers are no longer issued).
    (4, 4, 16, 19),
    // Mastercard, the 2-series and the 51–55 range.
    (2221, 2720, 16, 16),
    (51, 55, 16, 16),
    // American Express.
    (34, 34, 15, 15),
    (37, 37, 15, 15),
    // Diners Club International.
    (300, 305, 14, 19),
    (3095, 3095, 14, 19),
    (36, 36, 14, 19),
    (38, 39, 16, 19),
    // JCB.
    (3528, 3589, 16, 19),
    // Discover.
    (6011, 6011, 16, 19),
    (644, 649, 16, 19),
    (65, 65, 16, 19),
    // UnionPay (and its 81 range).
    (62, 62, 16, 19),
    (81, 81, 16, 19),
    // Maestro.
    (50, 50, 12, 19),
    (56, 59, 12, 19),
    (6304, 6304, 12, 19),
    (6759, 6763, 12, 19),
    (67, 69, 12, 19),
    // Mir.
    (2200, 2204, 16, 19),
    // RuPay.
    (60, 60, 16, 16),
    (82, 82, 16, 16),
    (508, 508, 16, 16),
    // UATP.
    (1, 1, 15, 15),
];

/// Whether `digits` (ASCII digits only) are in an issuer's range at one of its lengths.
pub fn issued(digits: &[u8]) -> bool {
    ISSUERS.iter().any(|&(low, high, shortest, longest)| {
        let width = decimal_width(low);
        (shortest..=longest).contains(&digits.len())
            && digits.len() >= width
            && (low..=high).contains(&number(&digits[..width]))
    })
}

/// Whether the digits of `text` (separators ignored) are a card number: issued and
/// Luhn-valid.
pub fn valid(text: &[u8]) -> bool {
    let Some((digits, n)) = crate::digits_of::<19>(text) else {
        return false;
    };
    issued(&digits[..n]) && luhn(&digits[..n])
}

/// The Luhn checksum of ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn decimal_width(mut n: u32) -> usize {
    let mut width = 1;
    while n >= 10 {
        n /= 10;
        width += 1;
    }
    width
}

fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_test_numbers_are_cards() {
        for number in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "3056 930902 5904",
            "36227206271667",
            "6011111111111117",
            "3530111333300000",
            "6200000000000005",
            "4000 0000 0000 0000 006",
            "6759649826438453",
            "2200000000000004",
        ] {
            assert!(valid(number.as_bytes()), "{number}");
        }
    }

    #[test]
    fn luhn_valid_ids_outside_issuers_are_not_cards() {
        for id in [
            // EAN-13 barcode.
            "4006381333931",
            // Epoch milliseconds that happen to pass Luhn.
            "1733424000006",
            // IMEI.
            "490154203237518",
            // Luhn-valid but no issuer starts with 9 or 7.
            "9111111111111113",
            "7992739871300000",
        ] {
            assert!(!valid(id.as_bytes()), "{id}");
        }
        assert!(!valid(b"4111111111111112"));
    }
}
