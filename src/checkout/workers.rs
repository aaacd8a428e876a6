//! The workers of the asynchronous checkout, in the same binary: they take jobs from
//! the outbox (`crate::outbox`) and do what the blocking checkout does inside its
//! transaction, without holding a database connection while they wait:
//!
//! - `charge_order`: charge through the gateway (idempotency key `order-<id>`, so a
//!   retried job never charges twice), then in one transaction record the payment,
//!   take the units out of stock, confirm the order, notify the customer and enqueue the
//!   e-mail — or, if the card is declined, release the reservation and mark the order
//!   `payment_failed`;
//! - `send_confirmation`: send the e-mail; an outage delays it (retries with exponential
//!   backoff), it never fails an order or orphans a payment. After
//!   `OUTBOX_MAX_ATTEMPTS` a job is dead-lettered, counted and alerted on.
//!
//! Each job's spans continue the trace of the request that enqueued it (the stored
//! `traceparent` is their parent, and a span link), so one trace shows the 202 and the
//! work seconds later.

use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge, histogram};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use sqlx::PgConnection;
use strum::{IntoStaticStr, VariantArray};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::asynchronous::current_traceparent;
use super::outcomes::{count_checkout, count_settled, settled};
use super::{
    CheckoutError, create_notification, observe_step, process_payment, record_payment,
    reduce_inventory,
};
use crate::config::WorkerSettings;
use crate::db::Database;
use crate::domain::{CheckoutMode, CheckoutOutcome, SettledOutcome};
use crate::inventory::{self, Units};
use crate::mailer::{Confirmation, EmailError, Mailer};
use crate::notifications::{NotificationKind, notify};
use crate::orders::OrderStatus;
use crate::orders::store::{self, OrderRow};
use crate::outbox::{self, ChargeOrder, Job, JobKind, SendConfirmation, Task};
use crate::payment::{Charge, PaymentError, PaymentGateway};
use crate::telemetry::metrics::{
    OUTBOX_ATTEMPTS, OUTBOX_DEAD, OUTBOX_JOB_DURATION, OUTBOX_OLDEST_AGE, OUTBOX_PENDING,
    OUTBOX_PROCESSED,
};

/// How one attempt at a job ended: `outbox_jobs_processed_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
enum JobOutcome {
    Done,
    Retried,
    DeadLettered,
    /// Another worker holds the job now: this attempt's result was refused.
    LeaseLost,
}

impl JobOutcome {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The job counters exist from the start, at zero (see `checkout::start_metrics_at_zero`).
pub(super) fn start_metrics_at_zero() {
    for kind in JobKind::VARIANTS {
        counter!(OUTBOX_ATTEMPTS, "kind" => kind.as_str()).absolute(0);
        for outcome in JobOutcome::VARIANTS {
            counter!(OUTBOX_PROCESSED, "kind" => kind.as_str(), "outcome" => outcome.as_str())
                .absolute(0);
        }
    }
}

/// How often the queue's gauges are read.
const DEPTH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a job did not finish this time.
#[derive(Debug)]
enum JobError {
    /// Try again later (or give up after the last attempt).
    Retry(String),
    /// Another worker holds the job now (this one's lease ran out): nothing to do.
    LeaseLost,
}

impl<E: Into<CheckoutError>> From<E> for JobError {
    fn from(error: E) -> Self {
        JobError::Retry(error.into().to_string())
    }
}

pub struct Workers {
    db: Database,
    gateway: Arc<dyn PaymentGateway>,
    mailer: Mailer,
    settings: WorkerSettings,
    /// Told when a job was enqueued (by LISTEN/NOTIFY); polling covers missed ones.
    wake: Arc<Notify>,
    /// SIGTERM: take no new job.
    draining: CancellationToken,
    /// The shutdown deadline: drop the job in hand; its lease runs out, and another
    /// worker (after a restart, this one) finishes it.
    stopping: CancellationToken,
}

impl Workers {
    pub fn new(
        db: Database,
        gateway: Arc<dyn PaymentGateway>,
        mailer: Mailer,
        settings: WorkerSettings,
        draining: CancellationToken,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            db,
            gateway,
            mailer,
            settings,
            wake: Arc::new(Notify::new()),
            draining,
            stopping,
        }
    }

    /// Wakes every idle worker (a job was enqueued).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Starts `CHECKOUT_WORKERS` workers and the queue's gauges on `tracker`.
    pub fn spawn(self, tracker: &TaskTracker) {
        let workers = Arc::new(self);
        for _ in 0..workers.settings.count {
            tracker.spawn(workers.clone().work());
        }
        tokio::spawn(poll(workers.wake.clone(), workers.settings.poll_every));
        tokio::spawn(export_depth(workers.db.clone()));
    }

    /// Idle workers sleep until told: a new job (NOTIFY wakes them all), the poll (one
    /// of them looks, for retries that fell due and notifications that were lost), or a
    /// busy worker that found a job and asks for help with the rest.
    async fn work(self: Arc<Self>) {
        while !self.draining.is_cancelled() {
            match outbox::claim(&self.db, self.settings.lease).await {
                Ok(Some(job)) => {
                    self.wake.notify_one();
                    tokio::select! {
                        () = self.run(job) => {}
                        () = self.stopping.cancelled() => break,
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "cannot claim outbox jobs"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.draining.cancelled() => break,
            }
        }
    }

    /// One attempt at `job`, in a span that continues the trace that enqueued it.
    async fn run(&self, job: Job) {
        let kind = job.kind.as_str();
        let span = tracing::info_span!(
            "outbox.job",
            otel.name = %format!("outbox.{kind}"),
            otel.kind = "consumer",
            messaging.system = "postgresql",
            messaging.destination.name = outbox::CHANNEL,
            messaging.operation.type = "process",
            job.id = job.id,
            job.kind = kind,
            job.attempt = job.attempts,
            order.id = job.order_id,
        );
        if let Some(enqueued_by) = job.traceparent.as_deref().map(parent_context) {
            let link = enqueued_by.span().span_context().clone();
            if link.is_valid() {
                let _ = span.set_parent(enqueued_by);
                span.add_link(link);
            }
        }
        let started = Instant::now();
        counter!(OUTBOX_ATTEMPTS, "kind" => kind).increment(1);
        let result = async {
            let task = job
                .task()
                .map_err(|e| JobError::Retry(format!("unreadable job payload: {e}")))?;
            match task {
                Task::ChargeOrder(charge) => self.charge_order(&job, &charge).await,
                Task::SendConfirmation(confirmation) => {
                    self.send_confirmation(&job, &confirmation).await
                }
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = match result {
            Ok(()) => JobOutcome::Done,
            Err(JobError::LeaseLost) => JobOutcome::LeaseLost,
            Err(JobError::Retry(error)) => {
                span.set_status(Status::error(error.clone()));
                self.give_back(&job, &error).instrument(span).await
            }
        }
        .as_str();
        counter!(OUTBOX_PROCESSED, "kind" => kind, "outcome" => outcome).increment(1);
        histogram!(OUTBOX_JOB_DURATION, "kind" => kind, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
    }

    /// A failed attempt: try again after a backoff, or give up after the last one.
    async fn give_back(&self, job: &Job, error: &str) -> JobOutcome {
        let last = u32::try_from(job.attempts).unwrap_or(u32::MAX) >= self.settings.max_attempts;
        if !last {
            let delay = outbox::backoff(job.attempts);
            tracing::warn!(delay_ms = delay.as_millis() as u64, %error, "outbox job failed; retrying");
            if let Err(db) = outbox::retry_later(&self.db, job, error, delay).await {
                tracing::warn!(error = %db, "could not reschedule; the lease will run out");
            }
            return JobOutcome::Retried;
        }
        tracing::error!(
            order.id = job.order_id,
            job.kind = job.kind.as_str(),
            attempts = job.attempts,
            %error,
            "outbox job dead-lettered: it needs a person (the order itself is unchanged)"
        );
        if let Err(db) = outbox::dead_letter(&self.db, job, error).await {
            tracing::warn!(error = %db, "could not dead-letter; the lease will run out");
        }
        if job.kind == JobKind::ChargeOrder {
            // The checkout ended without a settled payment.
            count_checkout(CheckoutMode::Async, CheckoutOutcome::Error);
        }
        JobOutcome::DeadLettered
    }

    /// Charge the order, then confirm it — or, declined, fail it.
    async fn charge_order(&self, job: &Job, payload: &ChargeOrder) -> Result<(), JobError> {
        let order = self.pending_order(job).await?;
        let Some(order) = order else {
            // Settled by an earlier attempt whose answer was lost: only the job is left.
            return self.finish_alone(job).await;
        };
        let method = payload.payment_method;
        match step!(process_payment(self.gateway.as_ref(), &order, method)) {
            Ok(charge) => self.confirm(job, &order, &charge, payload).await,
            Err(CheckoutError::Payment(PaymentError::Declined)) => {
                self.fail_payment(job, &order).await
            }
            Err(other) => Err(JobError::Retry(other.to_string())),
        }
    }

    /// The order of a charge job, if it still waits for its payment.
    async fn pending_order(&self, job: &Job) -> Result<Option<OrderRow>, JobError> {
        let mut conn = self.db.acquire().await?;
        let order = store::fetch_row(&mut conn, job.order_id)
            .await?
            .ok_or_else(|| JobError::Retry(format!("order {} does not exist", job.order_id)))?;
        Ok((order.status == OrderStatus::Pending).then_some(order))
    }

    /// The payment is taken: everything the blocking checkout did after it, in one
    /// transaction with the end of the job.
    async fn confirm(
        &self,
        job: &Job,
        order: &OrderRow,
        charge: &Charge,
        payload: &ChargeOrder,
    ) -> Result<(), JobError> {
        let mut tx = self.db.begin().await?;
        step!(record_payment(
            &mut tx,
            order,
            charge,
            payload.payment_method
        ))?;
        let units = inventory::units_of_order(&mut tx, order.id).await?;
        step!(take_out_of_stock(&mut tx, &units))?;
        step!(create_notification(&mut tx, order.user_id, order))?;
        step!(enqueue_email(&mut tx, order, payload))?;
        let waited = step!(confirm_order(&mut tx, order))?;
        if !outbox::finish(&mut tx, job).await? {
            return Err(JobError::LeaseLost);
        }
        tx.commit().await?;
        settled(
            &tracing::Span::current(),
            CheckoutMode::Async,
            order.total,
            waited,
        );
        count_checkout(CheckoutMode::Async, CheckoutOutcome::Success);
        Ok(())
    }

    /// Declined: the reserved units go back, the order fails, the customer is told.
    async fn fail_payment(&self, job: &Job, order: &OrderRow) -> Result<(), JobError> {
        let mut tx = self.db.begin().await?;
        step!(release_inventory(&mut tx, order))?;
        store::set_status(&mut tx, order.id, OrderStatus::PaymentFailed).await?;
        let message = format!(
            "The payment for your order #{} over {:.2} was declined; nothing was charged.",
            order.id, order.total
        );
        notify(
            &mut tx,
            order.user_id,
            NotificationKind::PaymentFailed,
            &message,
        )
        .await?;
        if !outbox::finish(&mut tx, job).await? {
            return Err(JobError::LeaseLost);
        }
        tx.commit().await?;
        count_settled(CheckoutMode::Async, SettledOutcome::PaymentFailed);
        count_checkout(CheckoutMode::Async, CheckoutOutcome::PaymentDeclined);
        Ok(())
    }

    /// The confirmation e-mail of a confirmed order.
    async fn send_confirmation(
        &self,
        job: &Job,
        payload: &SendConfirmation,
    ) -> Result<(), JobError> {
        let order = {
            let mut conn = self.db.acquire().await?;
            store::fetch(&mut conn, job.order_id).await?
        };
        let order =
            order.ok_or_else(|| JobError::Retry(format!("order {} is gone", job.order_id)))?;
        let confirmation = Confirmation {
            to: &payload.customer,
            order_id: order.id,
            items: order.items.clone(),
            total: order.total,
        };
        step!(send_email(&self.mailer, &confirmation))
            .map_err(|e| JobError::Retry(e.to_string()))?;
        self.finish_alone(job).await
    }

    /// Ends a job whose work left nothing to write.
    async fn finish_alone(&self, job: &Job) -> Result<(), JobError> {
        let mut tx = self.db.begin().await?;
        if !outbox::finish(&mut tx, job).await? {
            return Err(JobError::LeaseLost);
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Wakes one idle worker every `every`: one query per interval while all is quiet.
async fn poll(wake: Arc<Notify>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        wake.notify_one();
    }
}

/// The trace context a job was enqueued in.
fn parent_context(traceparent: &str) -> opentelemetry::Context {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The units leave the warehouse; their rows locked first in product-id order, like
/// every other statement that touches several of them.
async fn take_out_of_stock(tx: &mut PgConnection, units: &Units) -> Result<(), CheckoutError> {
    inventory::lock(tx, &units.product_ids).await?;
    reduce_inventory(tx, units).await
}

/// The declined order's reservation is given up.
async fn release_inventory(tx: &mut PgConnection, order: &OrderRow) -> Result<(), CheckoutError> {
    let units = inventory::units_of_order(tx, order.id).await?;
    Ok(inventory::release(tx, &units).await?)
}

/// The e-mail, as a job of its own: an outage delays it, and nothing else.
async fn enqueue_email(
    tx: &mut PgConnection,
    order: &OrderRow,
    payload: &ChargeOrder,
) -> Result<(), CheckoutError> {
    let task = Task::SendConfirmation(SendConfirmation {
        customer: payload.customer.clone(),
    });
    let traceparent = current_traceparent();
    outbox::enqueue(tx, order.id, &task, traceparent.as_deref()).await?;
    Ok(())
}

/// The order is `confirmed`; returns the seconds since it was accepted.
async fn confirm_order(tx: &mut PgConnection, order: &OrderRow) -> Result<f64, CheckoutError> {
    Ok(store::confirm_since_created(tx, order.id).await?)
}

async fn send_email(mailer: &Mailer, confirmation: &Confirmation<'_>) -> Result<(), EmailError> {
    mailer.send_confirmation(confirmation).await
}

/// Keeps the queue's gauges current: depth and age of the oldest job per kind, dead
/// letters.
async fn export_depth(db: Database) {
    let mut tick = tokio::time::interval(DEPTH_EVERY);
    loop {
        tick.tick().await;
        if !db.is_reachable() {
            continue;
        }
        let Ok(depths) = outbox::depth(&db).await else {
            continue;
        };
        for &kind in JobKind::VARIANTS {
            let depth = depths.iter().find(|d| d.kind == kind);
            let label = kind.as_str();
            gauge!(OUTBOX_PENDING, "kind" => label).set(depth.map_or(0.0, |d| d.pending as f64));
            gauge!(OUTBOX_OLDEST_AGE, "kind" => label)
                .set(depth.map_or(0.0, |d| d.oldest_pending_seconds));
            gauge!(OUTBOX_DEAD, "kind" => label).set(depth.map_or(0.0, |d| d.dead as f64));
        }
    }
}
