//! `Idempotency-Key` (IETF httpapi draft, Stripe's semantics) for requests that must not
//! run twice: the same user, key and request get the first answer again; the same key
//! with another request is refused; a retry while the first is still running is told
//! so, and when to come back. Keys live 24 hours.
//!
//! A running first request holds a lease on its key and renews it ([`keep_alive`]); a
//! key whose lease lapsed belongs to a request that died with its process, and a retry
//! takes it over within seconds.
//!
//! Stored here is the answer as bytes, whatever produced it: this module knows nothing
//! of HTTP or of the checkout.

use std::convert::Infallible;
use std::time::Duration;

use crate::db::Database;
use crate::domain::IdempotencyKey;

/// How long a key and its answer are kept.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a running request holds its key without renewing it; [`keep_alive`]
/// renews it every third of this.
pub const RUNNING_LEASE: Duration = Duration::from_secs(10);

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
    /// The first request with this key is still running; its lease lapses in this
    /// long at the most (then a retry takes the key over).
    InProgress(Duration),
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
    /// Seconds until the running request's lease lapses (negative once it has).
    lease_left: Option<f64>,
}

/// Claims `key` of `user_id` for `request` (its canonical form, compared byte for byte).
pub async fn claim(
    db: &Database,
    user_id: i64,
    key: &IdempotencyKey,
    request: &str,
) -> sqlx::Result<Claim> {
    let mut conn = db.acquire().await?;
    // An expired key counts as never used.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at < now()",
    )
    .bind(user_id)
    .bind(key.as_str())
    .execute(&mut *conn)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request, expires_at, locked_until) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(key.as_str())
    .bind(request)
    .bind(KEY_LIFETIME.as_secs_f64())
    .bind(RUNNING_LEASE.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::First);
    }
    let earlier: Option<Earlier> = sqlx::query_as(
        "SELECT request, response_status AS status, response_type AS content_type, \
                response_body AS body, \
                EXTRACT(EPOCH FROM locked_until - now())::float8 AS lease_left \
         FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(earlier) = earlier else {
        // Gone in the instant between the two statements.
        return Ok(Claim::InProgress(Duration::from_secs(1)));
    };
    if earlier.request != request {
        return Ok(Claim::Mismatch);
    }
    if let (Some(status), Some(content_type), Some(body)) =
        (earlier.status, earlier.content_type, earlier.body)
    {
        return Ok(Claim::Replay(StoredAnswer {
            status,
            content_type,
            body,
        }));
    }
    let lease_left = earlier.lease_left.unwrap_or(0.0);
    if lease_left > 0.0 {
        return Ok(Claim::InProgress(Duration::from_secs_f64(lease_left)));
    }
    // The first request died with its process: this one takes the key over (one of
    // several racing retries does).
    let taken = sqlx::query(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3) \
         WHERE user_id = $1 AND key = $2 AND response_status IS NULL \
           AND (locked_until IS NULL OR locked_until < now())",
    )
    .bind(user_id)
    .bind(key.as_str())
    .bind(RUNNING_LEASE.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    Ok(if taken.rows_affected() == 1 {
        Claim::First
    } else {
        Claim::InProgress(RUNNING_LEASE)
    })
}

/// Renews the lease of a key whose first request is running, every third of
/// [`RUNNING_LEASE`], until the caller stops polling it (the request has its answer).
pub async fn keep_alive(db: &Database, user_id: i64, key: &IdempotencyKey) -> Infallible {
    let mut tick = tokio::time::interval(RUNNING_LEASE / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let renewed = async {
            let mut conn = db.acquire().await?;
            sqlx::query(
                "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3) \
                 WHERE user_id = $1 AND key = $2 AND response_status IS NULL",
            )
            .bind(user_id)
            .bind(key.as_str())
            .bind(RUNNING_LEASE.as_secs_f64())
            .execute(&mut *conn)
            .await
        };
        if let Err(error) = renewed.await {
            tracing::debug!(%error, "could not renew an idempotency key's lease");
        }
    }
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
