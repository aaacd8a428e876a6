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
    Cancelled,
}

/// The timeline of `order`.
pub async fn of(conn: &mut PgConnection, order: &OrderView) -> sqlx::Result<OrderTimeline> {
    let jobs = outbox::jobs_of(conn, order.id).await?;
    Ok(build(order, &jobs))
}

fn build(order: &OrderView, jobs: &[JobOfOrder]) -> OrderTimeline {
    let placed = order.created_at;
    let event = |event, at: DateTime<Utc>, attempts| TimelineEvent {
        event,
        at,
        seconds: (at - placed).num_microseconds().unwrap_or(0) as f64 / 1e6,
        attempts,
    };
    let job = |kind| jobs.iter().rev().find(|job| job.kind == kind);
    let charge_job = job(JobKind::ChargeOrder);
    let mut events = vec![event(TimelineStep::Placed, placed, None)];
    if let (Some(payment), Some(charge)) = (&order.payment, charge_job) {
        events.push(event(
            TimelineStep::Charged,
            payment.created_at,
            Some(charge.attempts),
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
        events.push(event(TimelineStep::Declined, at, Some(charge.attempts)));
    }
    if let Some(email) = job(JobKind::SendConfirmation)
        && let Some(at) = email.finished_at
    {
        let step = match email.status.as_str() {
            "skipped" => TimelineStep::EmailSkipped,
            _ => TimelineStep::EmailSent,
        };
        events.push(event(step, at, Some(email.attempts)));
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
