use serde::{Deserialize, Serialize};

use super::whole_number::WholeNumber;

/// A review's star rating, 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "WholeNumber", into = "i16")]
#[schema(value_type = i16, minimum = 1, maximum = 5, example = 4)]
pub struct Rating(i16);

impl Rating {
    pub fn parse(value: i64) -> Result<Self, String> {
        if (1..=5).contains(&value) {
            Ok(Self(value as i16))
        } else {
            Err(format!("a rating is from 1 to 5, got {value}"))
        }
    }

    pub fn get(self) -> i16 {
        self.0
    }
}

impl TryFrom<WholeNumber> for Rating {
    type Error = String;
    fn try_from(value: WholeNumber) -> Result<Self, Self::Error> {
        Self::parse(value.0)
    }
}

impl From<Rating> for i16 {
    fn from(r: Rating) -> Self {
        r.0
    }
}

#[cfg(test)]
mod tests {
    use super::Rating;

    #[test]
    fn one_to_five() {
        assert!(Rating::parse(0).is_err());
        assert!(Rating::parse(6).is_err());
        assert!((1..=5).all(|r| Rating::parse(r).is_ok()));
    }
}
