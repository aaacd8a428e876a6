/// A key as the client sent it: 1 to 255 visible ASCII characters. A structured-field
/// string (`"abc"`, as the draft writes it) is accepted and unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let key = raw
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(raw);
        if key.is_empty() || key.len() > 255 {
            return Err("must be 1 to 255 characters".to_string());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters".to_string());
        }
        Ok(Self(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    #[test]
    fn keys_are_visible_ascii_and_may_be_quoted() {
        assert_eq!(
            IdempotencyKey::parse("abc-123").unwrap().as_str(),
            "abc-123"
        );
        assert_eq!(
            IdempotencyKey::parse("\"8e03978e\"").unwrap().as_str(),
            "8e03978e"
        );
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("\"\"").is_err());
        assert!(IdempotencyKey::parse("with space").is_err());
        assert!(IdempotencyKey::parse("nul\0").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }
}
