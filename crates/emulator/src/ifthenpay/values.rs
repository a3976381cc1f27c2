//! Valid-looking payment values: Multibanco references with their check digits, Payshop
//! references, PIN codes, PIX "copia e cola" (BR Code) values, request ids.

use rand::Rng;

/// The weights of the Multibanco check-digit algorithm (`10^i * 3 mod 97`, least significant
/// digit first), as ifthenpay's own integrations compute them.
const MB_WEIGHTS: [u32; 20] = [
    3, 30, 9, 90, 27, 76, 81, 34, 49, 5, 50, 15, 53, 45, 62, 38, 89, 17, 73, 51,
];

/// The two Multibanco check digits of `entity` (5 digits), the first seven digits of the
/// reference and the amount in cents: `98 - (Σ dᵢ·wᵢ mod 97)` over the 20-digit string
/// `entity ‖ reference7 ‖ cents(8)`.
///
/// Returns `None` when a part does not fit its width (a 6-digit entity, more than 999,999.99).
pub fn multibanco_check_digits(
    entity: &str,
    reference7: &str,
    amount_cents: i64,
) -> Option<String> {
    if entity.len() != 5 || reference7.len() != 7 || !(0..=99_999_999).contains(&amount_cents) {
        return None;
    }
    let digits = format!("{entity}{reference7}{amount_cents:08}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .zip(MB_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(format!("{:02}", 98 - sum % 97))
}

/// Whether a 9-digit Multibanco `reference` carries the right check digits for `entity` and
/// `amount_cents`.
pub fn multibanco_reference_is_valid(entity: &str, reference: &str, amount_cents: i64) -> bool {
    reference.len() == 9
        && reference.bytes().all(|b| b.is_ascii_digit())
        && multibanco_check_digits(entity, &reference[..7], amount_cents).as_deref()
            == Some(&reference[7..])
}

/// A 9-digit Multibanco reference for `entity` and `amount_cents`: seven digits from `seq`
/// (the emulator's sequence, so references are unique per entity up to ten million) and the two
/// check digits.
pub fn multibanco_reference(entity: &str, seq: i64, amount_cents: i64) -> Option<String> {
    let base = format!("{:07}", seq.rem_euclid(10_000_000));
    let check = multibanco_check_digits(entity, &base, amount_cents)?;
    Some(format!("{base}{check}"))
}

/// ISO 7064 MOD 97-10 check digits of a digit string (`98 - (n·100 mod 97)`).
fn mod97_check(digits: &str) -> String {
    let rem = digits
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    format!("{:02}", 98 - (rem * 100) % 97)
}

/// A 13-digit Payshop reference: `10`, nine digits from `seq`, and two ISO 7064 MOD 97-10 check
/// digits over the first eleven (the emulator's own check; agents only read the 13 digits).
pub fn payshop_reference(seq: i64) -> String {
    let base = format!("10{:09}", seq.rem_euclid(1_000_000_000));
    let check = mod97_check(&base);
    format!("{base}{check}")
}

/// Whether a Payshop reference is 13 digits with valid check digits.
pub fn payshop_reference_is_valid(reference: &str) -> bool {
    reference.len() == 13
        && reference.bytes().all(|b| b.is_ascii_digit())
        && mod97_check(&reference[..11]) == reference[11..]
}

/// A random string of `len` ASCII letters and digits (ifthenpay request ids are 20 of them).
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A random 6-digit PIN code (no leading zero).
pub fn pin_code() -> String {
    rand::thread_rng().gen_range(100_000..1_000_000).to_string()
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), the checksum of a PIX BR Code.
pub fn crc16_ccitt(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn tlv(id: &str, value: &str) -> String {
    format!("{id}{:02}{value}", value.len())
}

/// A PIX "copia e cola" value (EMV BR Code) for `amount` (a decimal string such as "50.00",
/// BRL) and transaction id `txid` (at most 25 letters/digits), ending with its CRC-16 field.
pub fn pix_brcode(pix_key: &str, amount: &str, txid: &str) -> String {
    let account = tlv("00", "br.gov.bcb.pix") + &tlv("01", pix_key);
    let mut payload = String::new();
    payload.push_str(&tlv("00", "01"));
    payload.push_str(&tlv("01", "12"));
    payload.push_str(&tlv("26", &account));
    payload.push_str(&tlv("52", "0000"));
    payload.push_str(&tlv("53", "986"));
    payload.push_str(&tlv("54", amount));
    payload.push_str(&tlv("58", "BR"));
    payload.push_str(&tlv("59", "PAYWARDEN SANDBOX"));
    payload.push_str(&tlv("60", "SAO PAULO"));
    payload.push_str(&tlv("62", &tlv("05", txid)));
    payload.push_str("6304");
    let crc = crc16_ccitt(payload.as_bytes());
    format!("{payload}{crc:04X}")
}

/// Whether a BR Code ends with the right CRC-16 over everything before it.
pub fn pix_brcode_is_valid(code: &str) -> bool {
    code.len() > 8
        && code.is_ascii()
        && code[..code.len() - 4].ends_with("6304")
        && u16::from_str_radix(&code[code.len() - 4..], 16).ok()
            == Some(crc16_ccitt(&code.as_bytes()[..code.len() - 4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibanco_check_digits_are_stable_and_detect_changes() {
        let r = multibanco_reference("11249", 1, 2500).unwrap();
        assert_eq!(r.len(), 9);
        assert!(multibanco_reference_is_valid("11249", &r, 2500));
        assert!(!multibanco_reference_is_valid("11249", &r, 2501));
        assert!(!multibanco_reference_is_valid("11248", &r, 2500));
        assert!(multibanco_reference("112490", 1, 1).is_none());
        assert!(multibanco_reference("11249", 1, 100_000_000).is_none());
    }

    #[test]
    fn crc16_matches_the_standard_check_value() {
        assert_eq!(crc16_ccitt(b"123456789"), 0x29B1);
    }

    #[test]
    fn payshop_and_pix_values_validate() {
        let p = payshop_reference(42);
        assert_eq!(p.len(), 13);
        assert!(payshop_reference_is_valid(&p));
        let code = pix_brcode("key-1", "50.00", "abc123");
        assert!(code.starts_with("000201"));
        assert!(pix_brcode_is_valid(&code));
        assert!(!pix_brcode_is_valid(&code.replace("50.00", "51.00")));
    }
}
