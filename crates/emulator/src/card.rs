//! Test-card behaviour: which card numbers succeed and which are declined.

/// What the emulated acquirer does with a card number (digits only, 12..=19 of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CardOutcome {
    /// Approved (`000.100.110`).
    Approve,
    /// `800.100.151` transaction declined (invalid card): test card 4000000000000002.
    DeclineInvalidCard,
    /// `800.100.155` transaction declined (amount exceeds credit): test card 4000000000000051.
    DeclineAmountExceedsCredit,
    /// `100.100.101` invalid card number: any number failing the Luhn check.
    InvalidNumber,
}

/// The test card that is declined as an invalid card (`800.100.151`).
pub(crate) const DECLINED_INVALID_CARD: &str = "4000000000000002";
/// The test card that is declined for insufficient credit (`800.100.155`).
pub(crate) const DECLINED_AMOUNT_EXCEEDS_CREDIT: &str = "4000000000000051";

/// The outcome for `number` (already checked to be 12..=19 ASCII digits).
pub(crate) fn outcome(number: &str) -> CardOutcome {
    match number {
        DECLINED_INVALID_CARD => CardOutcome::DeclineInvalidCard,
        DECLINED_AMOUNT_EXCEEDS_CREDIT => CardOutcome::DeclineAmountExceedsCredit,
        n if luhn_valid(n) => CardOutcome::Approve,
        _ => CardOutcome::InvalidNumber,
    }
}

/// The Luhn (mod 10) check over ASCII digits; false for anything else.
pub(crate) fn luhn_valid(number: &str) -> bool {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `card.number` with every digit but the last four replaced by `*` (for echoing a bad value in
/// `parameterErrors` without ever returning a card number).
pub(crate) fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let keep = chars.len().saturating_sub(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep { '*' } else { *c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards() {
        assert_eq!(outcome("4200000000000000"), CardOutcome::Approve);
        assert_eq!(outcome("5454545454545454"), CardOutcome::Approve);
        assert_eq!(outcome("4111111111111111"), CardOutcome::Approve);
        assert_eq!(outcome("378282246310005"), CardOutcome::Approve);
        assert_eq!(outcome("4000000000000002"), CardOutcome::DeclineInvalidCard);
        assert_eq!(
            outcome("4000000000000051"),
            CardOutcome::DeclineAmountExceedsCredit
        );
        assert_eq!(outcome("4200000000000001"), CardOutcome::InvalidNumber);
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid("4242x"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn masking() {
        assert_eq!(mask("4200000000000000"), "************0000");
        assert_eq!(mask("12"), "12");
    }
}
