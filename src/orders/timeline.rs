//! What happened to an order, and when — placed, charged, confirmed, its e-mail sent —
//! as seconds after it was placed: the asynchronous checkout's background work on the
//! time axis of the customer's wait. Read from the order, its payment and its outbox
//! jobs; nothing more is written per order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::model::{OrderStatus, OrderView};
use crate::domain::JobKind;
use crate::outbox::{self, JobOfOrder};

/// An order's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderTimeline {
    pub order_id: i64,
    /// No work of the order waits any more (no pending job): the timeline is whole.
    pub settled: bool,
    /// In the order they happened.
    pub events: Vec<TimelineEvent>,
}

/// One thing that happened to an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub event: TimelineStep,
    pub at: DateTime<Utc>,
    /// Seconds after the order was placed.
    #[schema(example = 1.02)]
    pub seconds: f64,
    /// Done by an outbox job: the attempts it took.
    pub attempts: Option<i32>,
    /// Done by an outbox job: when each of its attempts began, in seconds after the
    /// order was placed (a retried e-mail shows each try).
    #[schema(example = json!([0.004, 1.01]))]
    pub attempt_seconds: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimelineStep {
    /// The order was written: the asynchronous checkout answers 202 right after; the
    /// blocking one only at `confirmed`.
    Placed,
    /// The payment was taken (asynchronous: by the `charge_order` job).
    Charged,
    /// The payment was declined (asynchronous): the order failed.
    Declined,
    Confirmed,
    /// The confirmation e-mail went out from the outbox (asynchronous, or queued by the
    /// blocking checkout's fallback); a blocking checkout's own e-mail is inside its
    /// request, before `confirmed`.
    EmailSent,
    /// Not sent: the order was cancelled first.
    EmailSkipped,
    /// The payment's job has begun and is not finished: under way, or waiting for its
    /// next attempt after a failure (`attempts` says which).
    ChargeTrying,
    /// The e-mail's job has begun and is not finished: being sent, or waiting for its
    /// next attempt after the mail server failed.
    EmailTrying,
    Cancelled,
}

/// The timeline of `order`.
pub async fn of(conn: &mut PgConnection, order: &OrderView) -> sqlx::Result<OrderTimeline> {
    let jobs = outbox::jobs_of(conn, order.id).await?;
    Ok(build(order, &jobs))
}

fn build(order: &OrderView, jobs: &[JobOfOrder]) -> OrderTimeline {
    let placed = order.created_at;
    let seconds = |at: DateTime<Utc>| (at - placed).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let event = |event, at: DateTime<Utc>, job: Option<&JobOfOrder>| TimelineEvent {
        event,
        at,
        seconds: seconds(at),
        attempts: job.map(|job| job.attempts),
        attempt_seconds: job
            .map(|job| job.attempted_at.iter().map(|at| seconds(*at)).collect())
            .unwrap_or_default(),
    };
    let job = |kind| jobs.iter().rev().find(|job| job.kind == kind);
    let charge_job = job(JobKind::ChargeOrder);
    let email_job = job(JobKind::SendConfirmation);
    let mut events = vec![event(TimelineStep::Placed, placed, None)];
    if let (Some(payment), Some(charge)) = (&order.payment, charge_job) {
        events.push(event(
            TimelineStep::Charged,
            payment.created_at,
            Some(charge),
        ));
    }
    if let Some(ms) = order.processing_time_ms {
        // Kept in whole milliseconds: not before the payment of the same transaction.
        let confirmed = placed + chrono::Duration::milliseconds(i64::from(ms));
        let paid = order.payment.as_ref().map(|payment| payment.created_at);
        let confirmed = paid.map_or(confirmed, |paid| confirmed.max(paid));
        events.push(event(TimelineStep::Confirmed, confirmed, None));
    }
    if order.status == OrderStatus::PaymentFailed
        && let Some(charge) = charge_job
        && let Some(at) = charge.finished_at
    {
        events.push(event(TimelineStep::Declined, at, Some(charge)));
    }
    if let Some(email) = email_job
        && let Some(at) = email.finished_at
    {
        let step = match email.status.as_str() {
            "skipped" => TimelineStep::EmailSkipped,
            _ => TimelineStep::EmailSent,
        };
        events.push(event(step, at, Some(email)));
    }
    // Work begun and not finished: shown at its last attempt.
    for (job, step) in [
        (charge_job, TimelineStep::ChargeTrying),
        (email_job, TimelineStep::EmailTrying),
    ] {
        if let Some(job) = job
            && job.status == "pending"
            && let Some(last) = job.attempted_at.last()
            && (job.kind != JobKind::ChargeOrder || order.payment.is_none())
        {
            events.push(event(step, *last, Some(job)));
        }
    }
    if order.status == OrderStatus::Cancelled {
        events.push(event(TimelineStep::Cancelled, order.updated_at, None));
    }
    events.sort_by_key(|event| event.at);
    OrderTimeline {
        order_id: order.id,
        settled: jobs.iter().all(|job| job.status != "pending"),
        events,
    }
}
