use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

/// Limits for one kind of free text: what the field is called in messages and how long it may be.
pub trait TextRule: Clone {
    /// The schema name in the OpenAPI document.
    const NAME: &'static str;
    const WHAT: &'static str;
    const MAX_CHARS: usize;
    /// Descriptions and comments may be empty; names may not.
    const ALLOW_EMPTY: bool = false;
}

/// Trimmed text of bounded length (non-blank unless the rule allows empty text),
/// without control characters other than line breaks and tabs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[serde(bound(serialize = "", deserialize = ""))]
pub struct BoundedText<R: TextRule> {
    text: String,
    #[serde(skip)]
    rule: PhantomData<R>,
}

impl<R: TextRule> BoundedText<R> {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        if text.is_empty() && !R::ALLOW_EMPTY {
            return Err(format!("{} must not be blank", R::WHAT));
        }
        if text.chars().count() > R::MAX_CHARS {
            return Err(format!(
                "{} has at most {} characters",
                R::WHAT,
                R::MAX_CHARS
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            return Err(format!("{} contains control characters", R::WHAT));
        }
        Ok(Self {
            text: text.to_string(),
            rule: PhantomData,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<R: TextRule> TryFrom<String> for BoundedText<R> {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl<R: TextRule> From<BoundedText<R>> for String {
    fn from(value: BoundedText<R>) -> Self {
        value.text
    }
}

impl<R: TextRule> std::fmt::Debug for BoundedText<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl<R: TextRule> utoipa::PartialSchema for BoundedText<R> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(usize::from(!R::ALLOW_EMPTY)))
            .max_length(Some(R::MAX_CHARS))
            .into()
    }
}

impl<R: TextRule> utoipa::ToSchema for BoundedText<R> {
    fn name() -> std::borrow::Cow<'static, str> {
        R::NAME.into()
    }
}

macro_rules! text_kind {
    ($(#[$doc:meta])* $alias:ident, $rule:ident, $what:literal, $max:literal $(, allow_empty = $empty:literal)?) => {
        #[derive(Clone, PartialEq, Eq)]
        pub struct $rule;
        impl TextRule for $rule {
            const NAME: &'static str = stringify!($alias);
            const WHAT: &'static str = $what;
            const MAX_CHARS: usize = $max;
            $(const ALLOW_EMPTY: bool = $empty;)?
        }
        $(#[$doc])*
        pub type $alias = BoundedText<$rule>;
    };
}

text_kind!(
    /// A person's name as they want to be addressed.
    FullName, FullNameRule, "a full name", 100
);
text_kind!(
    /// A product's display name.
    ProductName, ProductNameRule, "a product name", 200
);
text_kind!(
    /// A category's display name (unique, case-insensitively).
    CategoryName, CategoryNameRule, "a category name", 100
);
text_kind!(
    /// A description of a product or category; may be empty.
    Description, DescriptionRule, "a description", 2000, allow_empty = true
);
text_kind!(
    /// A review's text; may be empty.
    ReviewComment, ReviewCommentRule, "a comment", 2000, allow_empty = true
);
text_kind!(
    /// Words to look for in the catalog; may be empty.
    SearchText, SearchTextRule, "a search", 200, allow_empty = true
);
text_kind!(
    /// Where an order is shipped: free text, several lines allowed.
    ShippingAddress, ShippingAddressRule, "a shipping address", 500
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(
            FullName::parse("  Ada Lovelace ").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(FullName::parse("   ").is_err());
        assert!(FullName::parse(&"x".repeat(101)).is_err());
        assert!(FullName::parse("bell\u{7}").is_err());
        assert!(ShippingAddress::parse("1 Main St\nSpringfield").is_ok());
        assert_eq!(Description::parse("  ").unwrap().as_str(), "");
    }

    #[test]
    fn errors_name_the_kind_of_text() {
        let err = ProductName::parse("").unwrap_err();
        assert!(err.contains("product name"));
    }
}
