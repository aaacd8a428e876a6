//! Whole numbers as JSON Schema (and so the OpenAPI document) means them: `2` and `2.0`
//! are the same integer. serde alone refuses `2.0` for an integer field.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A whole number read from any JSON number without a fractional part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WholeNumber(pub i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeNumberVisitor)
    }
}

struct WholeNumberVisitor;

impl Visitor<'_> for WholeNumberVisitor {
    type Value = WholeNumber;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<WholeNumber, E> {
        Ok(WholeNumber(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<WholeNumber, E> {
        i64::try_from(value)
            .map(WholeNumber)
            .map_err(|_| E::custom(format!("{value} is too large")))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<WholeNumber, E> {
        // Beyond 2^53 a float is no longer exact; i64's range is checked by the cast.
        if value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0 {
            Ok(WholeNumber(value as i64))
        } else {
            Err(E::custom(format!("expected a whole number, got {value}")))
        }
    }
}

/// For `#[serde(deserialize_with = "whole")]` on a plain integer field.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let WholeNumber(value) = WholeNumber::deserialize(deserializer)?;
    T::try_from(value).map_err(|_| de::Error::custom(format!("{value} is out of range")))
}

/// For `#[serde(default, deserialize_with = "optional_whole")]` on an optional one.
pub fn optional_whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    match Option::<WholeNumber>::deserialize(deserializer)? {
        None => Ok(None),
        Some(WholeNumber(value)) => T::try_from(value)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{value} is out of range"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "whole")]
        id: i64,
        #[serde(default, deserialize_with = "optional_whole")]
        delay: Option<u64>,
    }

    #[test]
    fn integral_floats_are_whole_numbers() {
        let body: Body = serde_json::from_str(r#"{"id": 223.0, "delay": 5}"#).unwrap();
        assert_eq!((body.id, body.delay), (223, Some(5)));
        let body: Body = serde_json::from_str(r#"{"id": 1}"#).unwrap();
        assert_eq!(body.delay, None);
        assert!(serde_json::from_str::<Body>(r#"{"id": 1.5}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"id": "1"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"id": 1, "delay": -1}"#).is_err());
    }
}
