//! `Idempotency-Key` (IETF httpapi draft, Stripe's semantics) for requests that must not
//! run twice: the same user, key and request get the first answer again; the same key
//! with another request is refused; a retry while the first is still running is told
//! so, and when to come back. Keys live 24 hours.
//!
//! A running first request holds a lease on its key and renews it ([`keep_alive`]); a
//! key whose lease lapsed belongs to a request that died with its process, and a retry
//! takes it over within seconds.
//!
//! The first committed answer wins: a checkout binds its order to the key in the
//! order's own transaction ([`bind_order`]), and from then on the key's answer is that
//! order — a run that took the key over while the first one stalled, and found the
//! cart already ordered, cannot store its "empty cart" over it ([`complete`]).
//!
//! Stored here is the answer as bytes, whatever produced it: this module knows nothing
//! of HTTP or of the checkout.

use std::convert::Infallible;
use std::time::Duration;

use sqlx::PgConnection;

use crate::db::{Database, statement};
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
    /// A run under this key committed this order, and its answer was not kept (the
    /// run died after its commit): answer with the order.
    Order(i64),
}

/// A key's row: the first request, and its answer once there is one.
#[derive(sqlx::FromRow)]
struct Earlier {
    request: String,
    status: Option<i16>,
    content_type: Option<String>,
    body: Option<String>,
    /// The order a run under this key committed, if one did.
    order_id: Option<i64>,
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
    statement!(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at < now()"
    )
    .query()
    .bind(user_id)
    .bind(key.as_str())
    .execute(&mut *conn)
    .await?;
    let inserted = statement!(
        "INSERT INTO idempotency_keys (user_id, key, request, expires_at, locked_until) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5)) \
         ON CONFLICT DO NOTHING"
    )
    .query()
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
    let earlier: Option<Earlier> = statement!(
        "SELECT request, response_status AS status, response_type AS content_type, \
                response_body AS body, order_id, \
                EXTRACT(EPOCH FROM locked_until - now())::float8 AS lease_left \
         FROM idempotency_keys WHERE user_id = $1 AND key = $2"
    )
    .query_as()
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
    match (
        earlier.order_id,
        earlier.status,
        earlier.content_type,
        earlier.body,
    ) {
        // A failure stored by a run that overlapped the one that committed the order,
        // and the committing run died before it could store its own: the order wins.
        (Some(order_id), Some(status), ..) if !is_success(status) => {
            return Ok(Claim::Order(order_id));
        }
        (_, Some(status), Some(content_type), Some(body)) => {
            return Ok(Claim::Replay(StoredAnswer {
                status,
                content_type,
                body,
            }));
        }
        _ => {}
    }
    let lease_left = earlier.lease_left.unwrap_or(0.0);
    if lease_left > 0.0 {
        return Ok(Claim::InProgress(Duration::from_secs_f64(lease_left)));
    }
    if let Some(order_id) = earlier.order_id {
        return Ok(Claim::Order(order_id));
    }
    // The first request died with its process: this one takes the key over (one of
    // several racing retries does).
    let taken = statement!(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3) \
         WHERE user_id = $1 AND key = $2 AND response_status IS NULL \
           AND (locked_until IS NULL OR locked_until < now())"
    )
    .query()
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
            statement!(
                "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3) \
                 WHERE user_id = $1 AND key = $2 AND response_status IS NULL"
            )
            .query()
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

/// Binds the order a run under `key` placed to the key, in the order's own
/// transaction: committed together, so no later run can give the key another answer.
pub async fn bind_order(
    conn: &mut PgConnection,
    user_id: i64,
    key: &IdempotencyKey,
    order_id: i64,
) -> sqlx::Result<()> {
    statement!("UPDATE idempotency_keys SET order_id = $3 WHERE user_id = $1 AND key = $2")
        .query()
        .bind(user_id)
        .bind(key.as_str())
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What became of a run's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    /// It is the key's answer now.
    Stored,
    /// Another run under the key answered first: send its answer instead.
    Earlier(StoredAnswer),
    /// Another run under the key committed this order and has not stored its answer
    /// yet: answer with the order.
    Order(i64),
}

/// Keeps a run's answer for replays — unless another run under the key answered
/// first, or committed an order: the first committed answer wins. A run that placed
/// `order_id` stores its answer over a failure another run stored meanwhile.
pub async fn complete(
    db: &Database,
    user_id: i64,
    key: &IdempotencyKey,
    answer: &StoredAnswer,
    order_id: Option<i64>,
) -> sqlx::Result<Kept> {
    #[derive(sqlx::FromRow)]
    struct Outcome {
        stored: bool,
        status: Option<i16>,
        content_type: Option<String>,
        body: Option<String>,
        order_id: Option<i64>,
    }
    let mut conn = db.acquire().await?;
    // The outer SELECT reads the row as it was before the UPDATE: what another run
    // left there, when this one's answer was not stored.
    let outcome: Option<Outcome> = statement!(
        "WITH stored AS ( \
             UPDATE idempotency_keys \
             SET response_status = $3, response_type = $4, response_body = $5, \
                 locked_until = NULL \
             WHERE user_id = $1 AND key = $2 \
               AND ((response_status IS NULL AND order_id IS NULL) OR order_id = $6) \
             RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM stored) AS stored, response_status AS status, \
                response_type AS content_type, response_body AS body, order_id \
         FROM idempotency_keys WHERE user_id = $1 AND key = $2"
    )
    .query_as()
    .bind(user_id)
    .bind(key.as_str())
    .bind(answer.status)
    .bind(&answer.content_type)
    .bind(&answer.body)
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(outcome) = outcome.filter(|outcome| !outcome.stored) else {
        // Stored; or the key expired and was purged meanwhile: nobody else's answer.
        return Ok(Kept::Stored);
    };
    Ok(
        match (
            outcome.order_id,
            outcome.status,
            outcome.content_type,
            outcome.body,
        ) {
            // Another run's order, with a failure a third run stored before it.
            (Some(order_id), Some(status), ..) if !is_success(status) => Kept::Order(order_id),
            (_, Some(status), Some(content_type), Some(body)) => Kept::Earlier(StoredAnswer {
                status,
                content_type,
                body,
            }),
            (Some(order_id), ..) => Kept::Order(order_id),
            // Neither answer nor order, yet not stored: a race with a purge; ours stands.
            _ => Kept::Stored,
        },
    )
}

fn is_success(status: i16) -> bool {
    (200..300).contains(&status)
}

/// Frees the key after a transient failure (nothing was done): a retry runs anew. The
/// key stays bound to its request (another body is still a mismatch) and to any order
/// a run under it committed.
pub async fn release(db: &Database, user_id: i64, key: &IdempotencyKey) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    statement!(
        "UPDATE idempotency_keys SET locked_until = NULL \
         WHERE user_id = $1 AND key = $2 AND response_status IS NULL"
    )
    .query()
    .bind(user_id)
    .bind(key.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes expired keys; returns how many.
pub async fn purge_expired(db: &Database) -> sqlx::Result<u64> {
    let mut conn = db.acquire().await?;
    let purged = statement!("DELETE FROM idempotency_keys WHERE expires_at < now()")
        .query()
        .execute(&mut *conn)
        .await?;
    Ok(purged.rows_affected())
}
