//! Currencies and amounts: decimal strings at the currency's minor-unit scale, never floats.

use std::str::FromStr;

use rust_decimal::Decimal;

/// The largest amount one operation may move, in major units (one billion).
/// Balances may grow past it through many operations; NUMERIC has no practical bound.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// The most digits we accept in an amount string, to refuse absurd inputs before parsing.
const MAX_AMOUNT_TEXT_LEN: usize = 32;

/// A currency the ledger supports, with its minor-unit scale (ISO 4217 exponent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    pub code: &'static str,
    pub scale: u32,
}

impl Currency {
    pub const SUPPORTED: [Currency; 7] = [
        Currency {
            code: "EUR",
            scale: 2,
        },
        Currency {
            code: "USD",
            scale: 2,
        },
        Currency {
            code: "GBP",
            scale: 2,
        },
        Currency {
            code: "CHF",
            scale: 2,
        },
        Currency {
            code: "SEK",
            scale: 2,
        },
        Currency {
            code: "JPY",
            scale: 0,
        },
        Currency {
            code: "KWD",
            scale: 3,
        },
    ];

    /// Looks a code up among the supported currencies (exact, upper-case).
    pub fn parse(code: &str) -> Option<Currency> {
        Self::SUPPORTED.into_iter().find(|c| c.code == code)
    }

    /// Zero at this currency's scale (`0.00` for EUR), the opening balance of an account.
    pub fn zero(self) -> Decimal {
        Decimal::new(0, self.scale)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal string of digits with an optional fraction, like \"12.50\"")]
    Malformed,
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount exceeds the maximum of {MAX_AMOUNT} per operation")]
    TooLarge,
}

/// Parses a client-supplied amount: plain digits with an optional `.fraction`, no sign,
/// no exponent, no separators. The currency's scale is checked where the currency is
/// known (the account's row), since a deposit names only the account.
pub fn parse_amount(text: &str) -> Result<Decimal, AmountError> {
    if text.is_empty() || text.len() > MAX_AMOUNT_TEXT_LEN {
        return Err(AmountError::Malformed);
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(AmountError::Malformed);
    }
    let amount = Decimal::from_str(text).map_err(|_| AmountError::Malformed)?;
    if amount <= Decimal::ZERO {
        return Err(AmountError::NotPositive);
    }
    if amount > MAX_AMOUNT {
        return Err(AmountError::TooLarge);
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_decimals_and_keeps_their_scale() {
        let amount = parse_amount("12.50").expect("valid");
        assert_eq!(amount.to_string(), "12.50");
        assert_eq!(parse_amount("7").expect("valid").to_string(), "7");
        assert_eq!(parse_amount("0.001").expect("valid").scale(), 3);
        assert_eq!(parse_amount("1000000000").expect("max"), MAX_AMOUNT);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "", "-1", "+1", "1e3", "1.", ".5", "1,50", " 1", "1.2.3", "abc", "NaN",
        ] {
            assert_eq!(parse_amount(bad), Err(AmountError::Malformed), "{bad:?}");
        }
        assert_eq!(parse_amount("0"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("0.00"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("1000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(parse_amount(&"9".repeat(40)), Err(AmountError::Malformed));
    }

    #[test]
    fn currencies_have_their_minor_units() {
        assert_eq!(Currency::parse("EUR").map(|c| c.scale), Some(2));
        assert_eq!(
            Currency::parse("JPY").map(|c| c.zero().to_string()),
            Some("0".into())
        );
        assert_eq!(Currency::parse("eur"), None);
        assert_eq!(Currency::parse("XXX"), None);
    }
}
