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
        // Checked before trimming, as the OpenAPI pattern does: Postgres refuses NUL,
        // and no name or comment needs the others.
        if raw.chars().any(is_forbidden_control) {
            return Err(format!("{} contains control characters", R::WHAT));
        }
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

/// Control characters other than tab, line feed and carriage return.
fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// [`is_forbidden_control`] as a regular-expression class body.
const FORBIDDEN_CONTROLS: &str = r"\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F";
/// What `str::trim` removes (Unicode White_Space) that is not a forbidden control.
const WHITE_SPACE: &str = r"\t\n\r \xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

impl<R: TextRule> utoipa::PartialSchema for BoundedText<R> {
    /// The same rules as [`BoundedText::parse`], so that a client generating data from
    /// the OpenAPI document produces what the service accepts: no control characters,
    /// and at least one character that is not white space unless empty is allowed.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let pattern = if R::ALLOW_EMPTY {
            format!("^[^{FORBIDDEN_CONTROLS}]*$")
        } else {
            format!(
                "^[^{FORBIDDEN_CONTROLS}]*[^{FORBIDDEN_CONTROLS}{WHITE_SPACE}][^{FORBIDDEN_CONTROLS}]*$"
            )
        };
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(usize::from(!R::ALLOW_EMPTY)))
            .max_length(Some(R::MAX_CHARS))
            .pattern(Some(pattern))
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
text_kind!(
    /// A lab experiment's or phase's name, as `lab run` announces it.
    LabName, LabNameRule, "a name", 100
);
text_kind!(
    /// A lab experiment's title.
    LabTitle, LabTitleRule, "a title", 200
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
        assert!(FullName::parse("\u{b}Vertical tab").is_err());
        assert!(ShippingAddress::parse("1 Main St\nSpringfield").is_ok());
        assert_eq!(Description::parse("  ").unwrap().as_str(), "");
    }

    /// The schema's pattern says yes exactly when the parser does (within the length
    /// bounds, which the schema states separately).
    #[test]
    fn the_openapi_pattern_agrees_with_the_parser() {
        use utoipa::PartialSchema;
        let pattern = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            let json = serde_json::to_value(schema).unwrap();
            regex::Regex::new(json["pattern"].as_str().unwrap()).unwrap()
        };
        let name = pattern(FullName::schema());
        let comment = pattern(ReviewComment::schema());
        for text in [
            "Ada",
            " Ada ",
            "\tAda\n",
            "A\u{3000}B",
            "\u{3000}",
            "   ",
            "",
            "\u{a0}x",
            "a\u{0}b",
            "\u{b}x",
            "x\u{85}",
            "\u{85}",
            "line\r\nbreak",
            "\u{9f}",
            "\u{feff}",
            "\u{2028}",
            "emoji 🦀",
        ] {
            assert_eq!(
                name.is_match(text),
                FullName::parse(text).is_ok(),
                "name {text:?}"
            );
            assert_eq!(
                comment.is_match(text),
                ReviewComment::parse(text).is_ok(),
                "comment {text:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_kind_of_text() {
        let err = ProductName::parse("").unwrap_err();
        assert!(err.contains("product name"));
    }
}
