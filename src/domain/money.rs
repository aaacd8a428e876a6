use std::fmt;
use std::str::FromStr;

use std::sync::LazyLock;

use regex::Regex;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Deserializer, Serialize};

/// A positive amount with at most two decimal places, exact (never floating point).
/// In JSON it is a string such as `"19.99"`; a JSON number is accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Money(#[serde(with = "rust_decimal::serde::str")] Decimal);

/// A positive amount as text: whole units without leading zeros (at most 8 digits),
/// then at most two decimals. The OpenAPI document and the parser use this same
/// expression, so a client that follows the document is never refused.
pub const MONEY_PATTERN: &str = r"^([1-9][0-9]{0,7}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$";
/// An amount that may be zero, for price filters.
pub const AMOUNT_PATTERN: &str = r"^(0|[1-9][0-9]{0,7})(\.[0-9]{1,2})?$";

static MONEY: LazyLock<Regex> = LazyLock::new(|| compile(MONEY_PATTERN));
static AMOUNT: LazyLock<Regex> = LazyLock::new(|| compile(AMOUNT_PATTERN));

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("a constant pattern compiles: {e}"))
}

/// The largest amount a price can be: 99,999,999.99, i.e. 9,999,999,999 hundredths
/// (= 2·2³² + 1,410,065,407 in the 96-bit mantissa's low and middle words).
const MAX: Decimal = Decimal::from_parts(1_410_065_407, 2, 0, false, 2);

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
            return Err(format!("an amount is below 100000000, got {value}"));
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
        Self::parse(decimal_matching(&MONEY, s, "a positive amount")?)
    }
}

/// `text` as an exact decimal, if it matches `pattern` (the document's pattern).
fn decimal_matching(pattern: &Regex, text: &str, what: &str) -> Result<Decimal, String> {
    if !pattern.is_match(text) {
        return Err(format!(
            "{text:?} is not {what} such as \"19.99\" (at most two decimals)"
        ));
    }
    Decimal::from_str_exact(text).map_err(|_| format!("{text:?} is not a decimal amount"))
}

impl utoipa::PartialSchema for Money {
    /// A string matching [`MONEY_PATTERN`], or a JSON number in the same range.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(MONEY_PATTERN))
                    .examples(["19.99"]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .exclusive_minimum(Some(0.0))
                    .maximum(Some(99_999_999.99))
                    .multiple_of(Some(0.01)),
            )
            .into()
    }
}

impl utoipa::ToSchema for Money {}

/// A price filter's bound: like [`Money`] but zero is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(Decimal);

impl Amount {
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl FromStr for Amount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decimal_matching(&AMOUNT, s, "an amount").map(Amount)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The largest total an order can hold: 9,999,999,999.99, `NUMERIC(12,2)` in the schema
/// (999,999,999,999 hundredths = 232·2³² + 3,567,587,327).
pub const ORDER_TOTAL_MAX: Decimal = Decimal::from_parts(3_567_587_327, 232, 0, false, 2);

/// Money counters count whole cents: counters are integers, and money is never a float.
pub fn cents(amount: Decimal) -> u64 {
    (amount * Decimal::ONE_HUNDRED)
        .round()
        .to_u64()
        .unwrap_or(0)
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
        for bad in [
            "0",
            "-1",
            "1.001",
            "abc",
            "",
            "100000000",
            "0.00",
            " 1",
            "1.",
            ".5",
            "01",
            "1e2",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?} accepted");
        }
        for good in ["1.10", "0.01", "0.5", "99999999.99", "7"] {
            assert!(good.parse::<Money>().is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn the_largest_total_is_what_numeric_12_2_holds() {
        assert_eq!(ORDER_TOTAL_MAX.to_string(), "9999999999.99");
        assert_eq!(MAX.to_string(), "99999999.99");
    }

    #[test]
    fn filter_amounts_may_be_zero() {
        assert_eq!("0".parse::<Amount>().unwrap().get(), Decimal::ZERO);
        assert!("0.001".parse::<Amount>().is_err());
        assert!("-1".parse::<Amount>().is_err());
    }
}
