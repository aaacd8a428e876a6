//! The transactional outbox of the asynchronous checkout: a Postgres table of jobs.
//!
//! A job is written in the same transaction as the order it is about, so it exists
//! exactly when the order does, and `NOTIFY outbox_jobs` wakes the workers at commit.
//! Workers claim jobs in batches with `FOR UPDATE SKIP LOCKED` (two workers never take
//! the same one), each with a lease: the claim is one statement, so no connection is
//! held while a job waits on the gateway or the mail server. A running job's lease is
//! renewed ([`renew`]); a job is finished in the same transaction as its effects,
//! fenced by its lease token: if the lease ran out and another worker took the job, the
//! late one's transaction changes nothing. A worker that dies loses nothing; its lease
//! runs out (seconds) and another finishes the job. Every claim counts as an attempt,
//! so a job whose last attempt's lease ran out is dead-lettered
//! ([`dead_letter_exhausted`]) instead of being tried forever.
//!
//! Why not a crate: the job must be enqueued inside the checkout's own sqlx 0.9
//! transaction, and the Postgres job queues for Rust (underway, apalis, sqlxmq) are
//! built on sqlx 0.8 or older — a second sqlx, a second pool, no shared transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;

use crate::db::{Database, statement};
use crate::domain::{Customer, JobKind, LineItem, PaymentMethod};

/// The channel that tells workers a job is waiting.
pub const CHANNEL: &str = "outbox_jobs";

/// What a job is to do about its order, with what it needs besides the order: built
/// here ([`Task::payload`]) and read back here ([`Job::task`]), never as loose JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    ChargeOrder(ChargeOrder),
    SendConfirmation(SendConfirmation),
    SendCancellation(SendCancellation),
}

/// The payload of a `charge_order` job: how to charge, and whom to tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeOrder {
    pub payment_method: PaymentMethod,
    #[serde(flatten)]
    pub customer: Customer,
    /// The customer's `Idempotency-Key`, if the checkout carried one: the charge is
    /// made under it (and is the charge an earlier attempt with the key already took,
    /// if there is one), whichever checkout mode that attempt ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The order's lines, for the confirmation e-mail (no statement to read them
    /// again); empty in jobs enqueued before they were carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<LineItem>,
}

/// The payload of a `send_confirmation` job: whom to write to, and what they bought.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendConfirmation {
    #[serde(flatten)]
    pub customer: Customer,
    /// The order's lines; empty in jobs enqueued before they were carried (the job
    /// then reads them from the order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<LineItem>,
}

/// The payload of a `send_cancellation` job: whom to write to, and what was refunded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendCancellation {
    #[serde(flatten)]
    pub customer: Customer,
    /// The refund of the order's payment, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Refund>,
}

/// Money given back: how much, and the gateway's transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub transaction_id: String,
}

impl Task {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::ChargeOrder(_) => JobKind::ChargeOrder,
            Self::SendConfirmation(_) => JobKind::SendConfirmation,
            Self::SendCancellation(_) => JobKind::SendCancellation,
        }
    }

    /// The `payload` column.
    pub fn payload(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::ChargeOrder(charge) => serde_json::to_value(charge),
            Self::SendConfirmation(confirmation) => serde_json::to_value(confirmation),
            Self::SendCancellation(cancellation) => serde_json::to_value(cancellation),
        }
    }

    fn decode(kind: JobKind, payload: Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            JobKind::ChargeOrder => Self::ChargeOrder(serde_json::from_value(payload)?),
            JobKind::SendConfirmation => Self::SendConfirmation(serde_json::from_value(payload)?),
            JobKind::SendCancellation => Self::SendCancellation(serde_json::from_value(payload)?),
        })
    }
}

/// A claimed job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub order_id: i64,
    payload: Value,
    pub traceparent: Option<String>,
    /// Including this one.
    pub attempts: i32,
    /// Attempts ever made, this one included — also those before the job was put back
    /// from the dead letters (which starts `attempts` again).
    pub tries: i32,
    pub lease_token: uuid::Uuid,
    pub created_at: DateTime<Utc>,
    /// The job's order as the claim read it: no statement more to look it up.
    #[sqlx(flatten)]
    pub order: OrderAtClaim,
}

/// The columns of a job's order, read by the claim's own statement.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderAtClaim {
    pub order_user_id: i64,
    pub order_status: String,
    pub order_total: Decimal,
    pub order_shipping_address: String,
    pub order_processing_time_ms: Option<i32>,
    pub order_created_at: DateTime<Utc>,
    pub order_updated_at: DateTime<Utc>,
}

impl Job {
    /// What the job is to do; an unreadable payload is an error of this attempt.
    pub fn task(&self) -> Result<Task, serde_json::Error> {
        Task::decode(self.kind, self.payload.clone())
    }
}

/// Adds a job in the caller's transaction; workers are woken when it commits.
pub async fn enqueue(
    conn: &mut PgConnection,
    order_id: i64,
    task: &Task,
    traceparent: Option<&str>,
) -> sqlx::Result<()> {
    let payload = task
        .payload()
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    statement!(
        "WITH job AS ( \
             INSERT INTO outbox_jobs (kind, order_id, payload, traceparent) \
             VALUES ($1, $2, $3, $4) RETURNING kind) \
         SELECT pg_notify($5, kind) FROM job"
    )
    .query()
    .bind(task.kind())
    .bind(order_id)
    .bind(payload)
    .bind(traceparent)
    .bind(CHANNEL)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes up to `at_most` of the oldest jobs that are due, not held by a live lease and
/// not out of attempts, each for `lease` with a token of its own, and with its order
/// as it is now (one statement).
///
/// A claimed job is due again when another worker may take it over (`run_after` moves
/// with the lease, to [`takeover_after`] it): the scan of the ready index then ends at
/// the first job not yet due, instead of stepping over every job in flight — hundreds
/// at 100 orders/s, each visited by every claim (5× the tuples Postgres read,
/// BENCHMARKS.md). The `locked_until` test stays for jobs claimed before this was so.
pub async fn claim(
    db: &Database,
    at_most: usize,
    lease: Duration,
    max_attempts: u32,
) -> sqlx::Result<Vec<Job>> {
    let mut conn = db.acquire().await?;
    statement!(
        "UPDATE outbox_jobs j \
         SET attempts = j.attempts + 1, attempted_at = j.attempted_at || now(), \
             lease_token = gen_random_uuid(), locked_until = now() + make_interval(secs => $2), \
             run_after = now() + make_interval(secs => $4) \
         FROM orders o \
         WHERE o.id = j.order_id AND j.id IN ( \
             SELECT id FROM outbox_jobs \
             WHERE status = 'pending' AND run_after <= now() \
               AND (locked_until IS NULL OR locked_until < now()) AND attempts < $3 \
             ORDER BY run_after, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING j.id, j.kind, j.order_id, j.payload, j.traceparent, j.attempts, \
                   cardinality(j.attempted_at) AS tries, j.lease_token, j.created_at, o.user_id AS order_user_id, \
                   o.status AS order_status, o.total AS order_total, \
                   o.shipping_address AS order_shipping_address, \
                   o.processing_time_ms AS order_processing_time_ms, \
                   o.created_at AS order_created_at, o.updated_at AS order_updated_at",
    ).query_as()
    .bind(i64::try_from(at_most).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
    .bind(takeover_after(lease).as_secs_f64())
    .fetch_all(&mut *conn)
    .await
}

/// When another worker may take over a job whose lease was last renewed `lease` ago:
/// one heartbeat (a third of the lease) after the lease's end. A worker cut off from
/// the database renews its leases the moment it answers again; after an outage shorter
/// than the lease, this margin keeps every other worker from taking the job in that
/// same instant and doing its work — an e-mail, say — a second time.
pub fn takeover_after(lease: Duration) -> Duration {
    lease + lease / 3
}

/// Extends the leases of the jobs a worker still runs, `(id, lease token)` pairs, by
/// `lease` from now; returns the ids of those another worker has taken meanwhile (their
/// lease ran out and the job was claimed again, under another token): they must stop.
/// A job finished or handed back since the pairs were read is neither renewed nor taken.
pub async fn renew(
    db: &Database,
    held: &[(i64, uuid::Uuid)],
    lease: Duration,
) -> sqlx::Result<Vec<i64>> {
    let (ids, tokens): (Vec<i64>, Vec<uuid::Uuid>) = held.iter().copied().unzip();
    let mut conn = db.acquire().await?;
    statement!(
        "WITH held AS (SELECT * FROM UNNEST($1::bigint[], $2::uuid[]) AS h(id, token)), \
              renewed AS ( \
                  UPDATE outbox_jobs j SET locked_until = now() + make_interval(secs => $3), \
                         run_after = now() + make_interval(secs => $4) \
                  FROM held h \
                  WHERE j.id = h.id AND j.lease_token = h.token AND j.status = 'pending') \
         SELECT j.id FROM outbox_jobs j JOIN held h ON j.id = h.id \
         WHERE j.status = 'pending' AND j.lease_token <> h.token"
    )
    .query_scalar()
    .bind(ids)
    .bind(tokens)
    .bind(lease.as_secs_f64())
    .bind(takeover_after(lease).as_secs_f64())
    .fetch_all(&mut *conn)
    .await
}

/// A job given up because its last attempt's lease ran out (its worker died, or lost
/// the database, in that attempt).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Exhausted {
    pub id: i64,
    pub kind: JobKind,
    pub order_id: i64,
    pub attempts: i32,
}

/// Dead-letters the jobs whose `max_attempts`-th lease ran out (and could be taken over,
/// see [`takeover_after`]): an expired lease is an attempt like a failed one, so
/// `OUTBOX_MAX_ATTEMPTS` holds whatever ends an attempt.
pub async fn dead_letter_exhausted(
    db: &Database,
    max_attempts: u32,
) -> sqlx::Result<Vec<Exhausted>> {
    let mut conn = db.acquire().await?;
    statement!(
        "UPDATE outbox_jobs SET status = 'dead', finished_at = now(), locked_until = NULL, \
                last_error = concat_ws('; ', last_error, 'the lease of the last attempt ran out') \
         WHERE status = 'pending' AND attempts >= $1 AND locked_until < now() \
           AND run_after <= now() \
         RETURNING id, kind, order_id, attempts"
    )
    .query_as()
    .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
    .fetch_all(&mut *conn)
    .await
}

/// Puts dead-lettered jobs back in the queue with their attempts reset (all, or those of
/// one kind), due now; returns how many of each kind.
pub async fn replay_dead(
    db: &Database,
    kind: Option<JobKind>,
) -> sqlx::Result<Vec<(JobKind, i64)>> {
    let mut conn = db.acquire().await?;
    let replayed = statement!(
        "WITH replayed AS ( \
             UPDATE outbox_jobs SET status = 'pending', attempts = 0, run_after = now(), \
                    finished_at = NULL, lease_token = NULL, locked_until = NULL \
             WHERE status = 'dead' AND ($1::text IS NULL OR kind = $1) \
             RETURNING kind) \
         SELECT kind, count(*) FROM replayed GROUP BY kind"
    )
    .query_as()
    .bind(kind)
    .fetch_all(&mut *conn)
    .await?;
    if !replayed.is_empty() {
        statement!("SELECT pg_notify($1, 'replayed')")
            .query()
            .bind(CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(replayed)
}

/// How a job ended well: its work done, or skipped because there was nothing left to
/// do (the confirmation of an order cancelled meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Finished {
    Done,
    Skipped,
}

/// Marks the job finished in the caller's transaction, with the job's effects. False if
/// the job is no longer this worker's (its lease ran out and another took it): the
/// caller must roll back.
pub async fn finish(conn: &mut PgConnection, job: &Job, how: Finished) -> sqlx::Result<bool> {
    let finished = statement!(
        "UPDATE outbox_jobs SET status = $3, finished_at = now(), locked_until = NULL \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'"
    )
    .query()
    .bind(job.id)
    .bind(job.lease_token)
    .bind(how)
    .execute(conn)
    .await?;
    Ok(finished.rows_affected() == 1)
}

/// Gives the job back, to be tried again after `delay`.
pub async fn retry_later(
    db: &Database,
    job: &Job,
    error: &str,
    delay: Duration,
) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    statement!(
        "UPDATE outbox_jobs SET run_after = now() + make_interval(secs => $3), \
                locked_until = NULL, lease_token = NULL, last_error = $4 \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'"
    )
    .query()
    .bind(job.id)
    .bind(job.lease_token)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Gives up on the job: it stays in the table as `dead` for a person to look at.
pub async fn dead_letter(db: &Database, job: &Job, error: &str) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    statement!(
        "UPDATE outbox_jobs SET status = 'dead', finished_at = now(), locked_until = NULL, \
                last_error = $3 \
         WHERE id = $1 AND lease_token = $2 AND status = 'pending'"
    )
    .query()
    .bind(job.id)
    .bind(job.lease_token)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How long to wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, … at most a minute,
/// give or take a fifth, so that jobs failed together do not all retry together.
pub fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 6)).unwrap_or(6);
    let base = Duration::from_secs(1 << exponent).min(Duration::from_secs(60));
    base.mul_f64(rand::random_range(0.8..1.2))
}

/// One job of an order, as its timeline shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobOfOrder {
    pub kind: JobKind,
    /// `pending`, `done`, `skipped` or `dead`.
    pub status: String,
    pub attempts: i32,
    /// When each attempt began, the first first (put back from the dead letters, a job
    /// starts counting its attempts again but keeps these).
    pub attempted_at: Vec<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The jobs an order caused, oldest first (finished ones until `purge_done` removes them).
pub async fn jobs_of(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Vec<JobOfOrder>> {
    statement!(
        "SELECT kind, status, attempts, attempted_at, finished_at FROM outbox_jobs \
         WHERE order_id = $1 ORDER BY id"
    )
    .query_as()
    .bind(order_id)
    .fetch_all(conn)
    .await
}

/// The queue of one kind of job, for the gauges.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Depth {
    pub kind: JobKind,
    pub pending: i64,
    pub oldest_pending_seconds: f64,
    pub dead: i64,
}

pub async fn depth(db: &Database) -> sqlx::Result<Vec<Depth>> {
    let mut conn = db.acquire().await?;
    statement!(
        "SELECT kind, \
                count(*) FILTER (WHERE status = 'pending') AS pending, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) \
                    FILTER (WHERE status = 'pending'))::float8, 0) AS oldest_pending_seconds, \
                count(*) FILTER (WHERE status = 'dead') AS dead \
         FROM outbox_jobs WHERE status IN ('pending', 'dead') GROUP BY kind"
    )
    .query_as()
    .fetch_all(&mut *conn)
    .await
}

/// Deletes finished jobs (done or skipped) older than `age`; dead ones stay until a
/// person looks.
pub async fn purge_done(db: &Database, age: Duration) -> sqlx::Result<u64> {
    let mut conn = db.acquire().await?;
    let purged = statement!(
        "DELETE FROM outbox_jobs \
         WHERE status IN ('done', 'skipped') \
           AND finished_at < now() - make_interval(secs => $1)"
    )
    .query()
    .bind(age.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    Ok(purged.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn payloads_read_back_as_they_were_written() {
        let customer = Customer {
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        let charge = Task::ChargeOrder(ChargeOrder {
            payment_method: PaymentMethod::Paypal,
            customer: customer.clone(),
            idempotency_key: None,
            items: Vec::new(),
        });
        let payload = charge.payload().unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"payment_method": "paypal", "email": "ada@example.com", "name": "Ada"})
        );
        assert_eq!(Task::decode(JobKind::ChargeOrder, payload).unwrap(), charge);
        let keyed = Task::ChargeOrder(ChargeOrder {
            payment_method: PaymentMethod::Paypal,
            customer: customer.clone(),
            idempotency_key: Some("k-1".into()),
            items: Vec::new(),
        });
        let payload = keyed.payload().unwrap();
        assert_eq!(payload["idempotency_key"], "k-1");
        assert_eq!(Task::decode(JobKind::ChargeOrder, payload).unwrap(), keyed);
        let confirmation = Task::SendConfirmation(SendConfirmation {
            customer: customer.clone(),
            items: vec![LineItem::new(7, "Kettle".into(), Decimal::new(1999, 2), 2)],
        });
        let payload = confirmation.payload().unwrap();
        assert_eq!(payload["items"][0]["unit_price"], "19.99", "money as text");
        assert_eq!(
            Task::decode(JobKind::SendConfirmation, payload).unwrap(),
            confirmation
        );
        let cancellation = Task::SendCancellation(SendCancellation {
            customer,
            refund: Some(Refund {
                amount: Decimal::new(1999, 2),
                transaction_id: "txn_1".into(),
            }),
        });
        let payload = cancellation.payload().unwrap();
        assert_eq!(payload["refund"]["amount"], "19.99");
        assert_eq!(
            Task::decode(JobKind::SendCancellation, payload).unwrap(),
            cancellation
        );
        assert!(Task::decode(JobKind::ChargeOrder, serde_json::json!({})).is_err());
        // As jobs were written before the payloads were typed.
        let older = serde_json::json!({"payment_method": "paypal",
            "customer_email": "ada@example.com", "customer_name": "Ada"});
        assert_eq!(Task::decode(JobKind::ChargeOrder, older).unwrap(), charge);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_with_jitter() {
        for (attempts, nominal) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (6, 32.0),
            (7, 60.0),
            (30, 60.0),
        ] {
            let wait = backoff(attempts).as_secs_f64();
            assert!(
                (nominal * 0.8..=nominal * 1.2).contains(&wait),
                "attempt {attempts}: {wait}"
            );
        }
        assert!(backoff(0) <= Duration::from_secs(2));
    }
}
