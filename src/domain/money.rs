use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

/// A positive amount with at most two decimal places, exact (never floating point).
/// In JSON it is a string such as `"19.99"`; a JSON number is accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[schema(value_type = String, example = "19.99")]
pub struct Money(#[serde(with = "rust_decimal::serde::str")] Decimal);

/// Prices above this are certainly typos in a demo shop.
const MAX: Decimal = Decimal::from_parts(99_999_999, 0, 0, false, 0);

impl Money {
    pub fn parse(value: Decimal) -> Result<Self, String> {
        if value <= Decimal::ZERO {
            return Err(format!("an amount must be positive, got {value}"));
        }
        if value.normalize().scale() > 2 {
            return Err(format!(
                "an amount has at most two decimal places, got {value}"
            ));
        }
        if value > MAX {
            return Err(format!("an amount is at most {MAX}, got {value}"));
        }
        Ok(Self(value.round_dp(2)))
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = Decimal::from_str_exact(s.trim())
            .map_err(|_| format!("{s:?} is not a decimal amount such as \"19.99\""))?;
        Self::parse(value)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        let text = match Raw::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected an amount such as \"19.99\""))?
        {
            Raw::Text(text) => text,
            Raw::Number(number) => number.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_numbers_exactly() {
        let from_text: Money = serde_json::from_str("\"19.99\"").unwrap();
        let from_number: Money = serde_json::from_str("19.99").unwrap();
        assert_eq!(from_text, from_number);
        assert_eq!(serde_json::to_string(&from_text).unwrap(), "\"19.99\"");
    }

    #[test]
    fn rejects_non_positive_and_sub_cent_amounts() {
        for bad in ["0", "-1", "1.001", "abc", "", "100000000"] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?} accepted");
        }
        assert!("1.10".parse::<Money>().is_ok());
    }
}
