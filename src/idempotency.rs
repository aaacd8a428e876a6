//! `Idempotency-Key` (IETF httpapi draft, Stripe's semantics) for requests that must not
//! run twice: the same user, key and request get the first answer again; the same key
//! with another request is refused; a retry while the first is still running is told
//! so. Keys live 24 hours.
//!
//! Stored here is the answer as bytes, whatever produced it: this module knows nothing
//! of HTTP or of the checkout.

use std::time::Duration;

use crate::db::Database;

/// How long a key and its answer are kept.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// A first request still unanswered after this long died with its process (a checkout
/// takes seconds, and the shutdown deadline bounds it): a retry may take the key over.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(5 * 60);

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

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredAnswer {
    pub status: i16,
    pub content_type: String,
    pub body: String,
}

/// What a request carrying a key may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The first request with this key: run it, then [`complete`] or [`release`].
    First,
    /// Answered before: send the same answer again.
    Replay(StoredAnswer),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// A key's row: the first request, and its answer once there is one.
#[derive(sqlx::FromRow)]
struct Earlier {
    request: String,
    status: Option<i16>,
    content_type: Option<String>,
    body: Option<String>,
}

/// Claims `key` of `user_id` for `request` (its canonical form, compared byte for byte).
pub async fn claim(
    db: &Database,
    user_id: i64,
    key: &IdempotencyKey,
    request: &str,
) -> sqlx::Result<Claim> {
    let mut conn = db.acquire().await?;
    // An expired key, or one whose first request died, counts as never used.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 \
           AND (expires_at < now() \
                OR (response_status IS NULL AND created_at < now() - make_interval(secs => $3)))",
    )
    .bind(user_id)
    .bind(key.as_str())
    .bind(ABANDONED_AFTER.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(key.as_str())
    .bind(request)
    .bind(KEY_LIFETIME.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::First);
    }
    let earlier: Option<Earlier> = sqlx::query_as(
        "SELECT request, response_status AS status, response_type AS content_type, \
                response_body AS body \
         FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match earlier {
        Some(earlier) if earlier.request != request => Claim::Mismatch,
        Some(Earlier {
            status: Some(status),
            content_type: Some(content_type),
            body: Some(body),
            ..
        }) => Claim::Replay(StoredAnswer {
            status,
            content_type,
            body,
        }),
        // Unanswered, or gone in the instant between the two statements.
        _ => Claim::InProgress,
    })
}

/// Keeps the answer of the first request for replays.
pub async fn complete(
    db: &Database,
    user_id: i64,
    key: &IdempotencyKey,
    answer: &StoredAnswer,
) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $3, response_type = $4, response_body = $5 \
         WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key.as_str())
    .bind(answer.status)
    .bind(&answer.content_type)
    .bind(&answer.body)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Frees the key after a transient failure (nothing was done): a retry runs anew.
pub async fn release(db: &Database, user_id: i64, key: &IdempotencyKey) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2")
        .bind(user_id)
        .bind(key.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes expired keys; returns how many.
pub async fn purge_expired(db: &Database) -> sqlx::Result<u64> {
    let mut conn = db.acquire().await?;
    let purged = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    Ok(purged.rows_affected())
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
