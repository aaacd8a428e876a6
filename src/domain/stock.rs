use serde::{Deserialize, Serialize};

use super::whole_number::WholeNumber;

/// Units on hand for a new product: zero or more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "WholeNumber", into = "i32")]
#[schema(value_type = i32, minimum = 0, maximum = 1000000, example = 25)]
pub struct StockLevel(i32);

impl StockLevel {
    pub const MAX: i32 = 1_000_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        if !(0..=i64::from(Self::MAX)).contains(&value) {
            return Err(format!("stock is from 0 to {}, got {value}", Self::MAX));
        }
        Ok(Self(value as i32))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A product a cart wants more of than is available: the reason for a 409, from the
/// cart or from the checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockShortage {
    pub product_id: i64,
    pub product_name: String,
    pub requested: i32,
    pub available: i32,
}

impl StockShortage {
    /// "Kettle (#7: 3 requested, 1 available), …" for error messages.
    pub fn describe(shortages: &[StockShortage]) -> String {
        shortages
            .iter()
            .map(|s| {
                format!(
                    "{} (#{}: {} requested, {} available)",
                    s.product_name, s.product_id, s.requested, s.available
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl TryFrom<WholeNumber> for StockLevel {
    type Error = String;
    fn try_from(value: WholeNumber) -> Result<Self, Self::Error> {
        Self::parse(value.0)
    }
}

impl From<StockLevel> for i32 {
    fn from(s: StockLevel) -> Self {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::StockLevel;

    #[test]
    fn zero_is_allowed_negative_is_not() {
        assert_eq!(StockLevel::parse(0).unwrap().get(), 0);
        assert!(StockLevel::parse(-1).is_err());
        assert!(StockLevel::parse(1_000_001).is_err());
    }
}
