use serde::{Deserialize, Serialize};

use super::whole_number::WholeNumber;

/// How many units of a product: at least 1. The upper bound keeps totals far from
/// overflow and is far beyond any stock in the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "WholeNumber", into = "i32")]
#[schema(value_type = i32, minimum = 1, maximum = 10000, example = 2)]
pub struct Quantity(i32);

impl Quantity {
    pub const MAX: i32 = 10_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        if value < 1 {
            return Err(format!("a quantity is at least 1, got {value}"));
        }
        if value > i64::from(Self::MAX) {
            return Err(format!("a quantity is at most {}, got {value}", Self::MAX));
        }
        Ok(Self(value as i32))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<WholeNumber> for Quantity {
    type Error = String;
    fn try_from(value: WholeNumber) -> Result<Self, Self::Error> {
        Self::parse(value.0)
    }
}

impl From<Quantity> for i32 {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

#[cfg(test)]
mod tests {
    use super::Quantity;

    #[test]
    fn bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(10_001).is_err());
        assert_eq!(Quantity::parse(3).unwrap().get(), 3);
    }
}
