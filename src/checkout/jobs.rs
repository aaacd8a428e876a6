//! What the asynchronous checkout's jobs do, each the continuation of the blocking
//! checkout's steps after the request answered (`super::workers` runs them):
//!
//! - `charge_order`: charge through the gateway (idempotency key `order-<id>`, or the
//!   customer's `Idempotency-Key` if the checkout carried one, so a retried job never
//!   charges twice), then in one statement record the payment, take the units out of
//!   stock, confirm the order, notify the customer and enqueue the e-mail — or, if the
//!   card is declined, release the reservation and mark the order `payment_failed`;
//! - `send_confirmation`: send the e-mail; an outage delays it (retries with exponential
//!   backoff), it never fails an order or orphans a payment. An order cancelled before
//!   its confirmation went out gets none: the job ends `skipped`;
//! - `send_cancellation`: tell the customer their order was cancelled and what was
//!   refunded (enqueued by the cancellation, `orders::lifecycle`).
//!
//! The order a job is about comes with the claim (one statement for both). Each job
//! finishes (fenced by the lease token) in the same statement or transaction as its
//! effects, and that transaction is retried on its own
//! ([`Workers::record`]) rather than the job run again: a charge taken or an e-mail sent
//! stays done when the database is away for a moment. Their database work takes a
//! place in the asynchronous checkout's share of the pool (`Database::enter_async_share`),
//! as the requests do: a hundred jobs finishing at once queue there, not in front of the
//! catalog's reads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::error::CheckoutError;
use super::outcomes::{count_checkout, count_settled, settled};
use super::step::step;
use super::steps::{confirmation_notice, process_payment};
use crate::cart;
use crate::db::{self, Database};
use crate::domain::{CheckoutMode, CheckoutOutcome, SettledOutcome};
use crate::inventory;
use crate::mailer::{Cancellation, Confirmation, Email, EmailError, Mailer};
use crate::notifications::{NotificationKind, notify};
use crate::orders::store::{self, OrderRow, PaidCharge};
use crate::orders::{OrderStatus, OrderView};
use crate::outbox::{self, ChargeOrder, Finished, Job, SendCancellation, SendConfirmation, Task};
use crate::payment::{Charge, ChargeKey, PaymentError, PaymentGateway};
use crate::telemetry::current_traceparent;

/// What the jobs need: the database, the gateway and the mail server — and the
/// shutdown deadline, past which a job stops writing.
pub(super) struct Jobs {
    db: Database,
    gateway: Arc<dyn PaymentGateway>,
    mailer: Mailer,
    stopping: CancellationToken,
}

/// Why a job did not finish this time.
#[derive(Debug)]
pub(super) enum JobError {
    /// Try again later (or give up after the last attempt).
    Retry(String),
    /// The database went away: hand the job back as soon as it answers again.
    DatabaseAway(String),
    /// Another worker holds the job now (this one's lease ran out): nothing to do.
    LeaseLost,
}

impl<E: Into<CheckoutError>> From<E> for JobError {
    fn from(error: E) -> Self {
        match error.into() {
            CheckoutError::Database(error) if db::is_unavailable(&error) => {
                JobError::DatabaseAway(error.to_string())
            }
            other => JobError::Retry(other.to_string()),
        }
    }
}

impl Jobs {
    pub(super) fn new(
        db: Database,
        gateway: Arc<dyn PaymentGateway>,
        mailer: Mailer,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            db,
            gateway,
            mailer,
            stopping,
        }
    }

    /// Does what `job` is to do.
    pub(super) async fn perform(&self, job: &Job) -> Result<Finished, JobError> {
        let task = job
            .task()
            .map_err(|e| JobError::Retry(format!("unreadable job payload: {e}")))?;
        match task {
            Task::ChargeOrder(charge) => self.charge_order(job, &charge).await,
            Task::SendConfirmation(confirmation) => {
                self.send_confirmation(job, &confirmation).await
            }
            Task::SendCancellation(cancellation) => {
                self.send_cancellation(job, &cancellation).await
            }
        }
    }

    /// Charge the order, then confirm it — or, declined, fail it.
    async fn charge_order(&self, job: &Job, payload: &ChargeOrder) -> Result<Finished, JobError> {
        let Some(order) = pending_order(job) else {
            // Settled by an earlier attempt whose answer was lost: only the job is left.
            return self.finish_alone(job, Finished::Done).await;
        };
        let method = payload.payment_method;
        // Under the customer's key, if the checkout had one: the charge an earlier
        // attempt with it took (blocking or not) is then this order's, not charged again.
        let charge_key = match payload.idempotency_key.as_deref() {
            Some(key) => ChargeKey::Client {
                user_id: order.user_id,
                key,
            },
            None => ChargeKey::Order,
        };
        let charged = step!(process_payment(
            self.gateway.as_ref(),
            charge_key,
            &order,
            method,
            job.attempts == 1 && job.tries == 1
        ));
        match charged {
            Ok(charge) => {
                let waited = self
                    .record(|| self.confirm(job, &order, &charge, payload))
                    .await?;
                settled(
                    &tracing::Span::current(),
                    CheckoutMode::Async,
                    order.total,
                    waited,
                );
                count_checkout(CheckoutMode::Async, CheckoutOutcome::Success);
            }
            Err(CheckoutError::Payment(PaymentError::Declined)) => {
                self.record(|| self.fail_payment(job, &order)).await?;
                count_settled(CheckoutMode::Async, SettledOutcome::PaymentFailed);
                count_checkout(CheckoutMode::Async, CheckoutOutcome::PaymentDeclined);
            }
            Err(other) => return Err(JobError::from(other)),
        }
        Ok(Finished::Done)
    }

    /// A place in the asynchronous checkout's share of the pool, for one short piece of
    /// database work; an `outbox.admission` span when the job had to queue for it.
    async fn admitted(&self) -> Result<SemaphorePermit<'_>, JobError> {
        self.db
            .enter_async_share(|| tracing::info_span!("outbox.admission"))
            .await
            .map_err(|_closed| JobError::Retry("the database share is closed".to_string()))
    }

    /// The payment is taken: everything the blocking checkout did after it, with the end
    /// of the job, in one statement (`confirm_order`). Returns the seconds since the
    /// order was accepted.
    async fn confirm(
        &self,
        job: &Job,
        order: &OrderRow,
        charge: &Charge,
        payload: &ChargeOrder,
    ) -> Result<f64, JobError> {
        let _admitted = self.admitted().await?;
        let mut conn = self.db.acquire().await?;
        step!(confirm_order(&mut conn, job, order, charge, payload))?.ok_or(JobError::LeaseLost)
    }

    /// Declined: the reserved units go back to the stock and to the customer's cart (so
    /// that they can try again, as after a blocking checkout's decline), the order
    /// fails, the customer is told.
    async fn fail_payment(&self, job: &Job, order: &OrderRow) -> Result<(), JobError> {
        let _admitted = self.admitted().await?;
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
        if !outbox::finish(&mut tx, job, Finished::Done).await? {
            return Err(JobError::LeaseLost);
        }
        db::commit(tx).await?;
        Ok(())
    }

    /// The confirmation e-mail of a confirmed order — none for an order cancelled
    /// before it went out (the cancellation sends its own notice). The order is looked
    /// at again when the slow mail server is ready to take the message, so a
    /// cancellation made while it kept us waiting counts too.
    async fn send_confirmation(
        &self,
        job: &Job,
        payload: &SendConfirmation,
    ) -> Result<Finished, JobError> {
        // The order as the claim read it: cancelled already, no e-mail.
        let mut wanted = claimed_status(job) != Some(OrderStatus::Cancelled);
        if wanted {
            let items = if payload.items.is_empty() {
                self.order_of(job).await?.items // a job queued before items were carried
            } else {
                payload.items.clone()
            };
            let confirmation = Confirmation {
                to: &payload.customer,
                order_id: job.order_id,
                items,
                total: job.order.order_total,
            };
            let still_wanted = async {
                let status = self.status_of(job).await;
                status
                    .map(|status| status != OrderStatus::Cancelled)
                    .map_err(|e| EmailError::Check(format!("{e:?}")))
            };
            wanted = step!(send_email(
                &self.mailer,
                &Email::Confirmation(confirmation),
                still_wanted
            ))
            .map_err(|e| JobError::Retry(e.to_string()))?;
        }
        if !wanted {
            tracing::info!(
                order.id = job.order_id,
                "no confirmation for a cancelled order"
            );
            return self.finish_alone(job, Finished::Skipped).await;
        }
        self.finish_alone(job, Finished::Done).await
    }

    /// The notice of a cancelled order, with its refund.
    async fn send_cancellation(
        &self,
        job: &Job,
        payload: &SendCancellation,
    ) -> Result<Finished, JobError> {
        let order = self.order_of(job).await?;
        let cancellation = Cancellation {
            to: &payload.customer,
            order_id: order.id,
            total: order.total,
            refund: payload
                .refund
                .as_ref()
                .map(|refund| (refund.amount, refund.transaction_id.as_str())),
        };
        let always = async { Ok(true) };
        step!(send_email(
            &self.mailer,
            &Email::Cancellation(cancellation),
            always
        ))
        .map_err(|e| JobError::Retry(e.to_string()))?;
        self.finish_alone(job, Finished::Done).await
    }

    /// The order a job is about, with its items.
    async fn order_of(&self, job: &Job) -> Result<OrderView, JobError> {
        let order = {
            let _admitted = self.admitted().await?;
            let mut conn = self.db.acquire().await?;
            store::fetch(&mut conn, job.order_id).await?
        };
        order.ok_or_else(|| JobError::Retry(format!("order {} is gone", job.order_id)))
    }

    /// The status of a job's order now (one short statement).
    async fn status_of(&self, job: &Job) -> Result<OrderStatus, JobError> {
        let _admitted = self.admitted().await?;
        let mut conn = self.db.acquire().await?;
        store::status_of(&mut conn, job.order_id)
            .await?
            .ok_or_else(|| JobError::Retry(format!("order {} is gone", job.order_id)))
    }

    /// Writes down what a job did (`write`: a transaction that also finishes the job).
    /// The work cannot be undone — money taken, an e-mail sent — so a failure to write
    /// it down must not let the job run again: while the database is away, wait for it
    /// and try again (the heartbeat renews the lease the moment it answers, and the
    /// attempt ends if another worker took the job meanwhile); when it answers and
    /// still fails, try a few times more before the job is given back.
    pub(super) async fn record<T, Fut>(&self, mut write: impl FnMut() -> Fut) -> Result<T, JobError>
    where
        Fut: Future<Output = Result<T, JobError>>,
    {
        const TRIES_WHILE_REACHABLE: u32 = 5;
        let mut failures = 0;
        let mut pause = Duration::from_millis(100);
        loop {
            let error = match write().await {
                Err(JobError::DatabaseAway(error)) => error,
                Err(JobError::Retry(error)) if failures < TRIES_WHILE_REACHABLE => {
                    failures += 1;
                    error
                }
                done => return done,
            };
            tracing::warn!(%error, "could not record a finished job's work; trying again");
            tokio::select! {
                () = self.db.until_reachable() => {}
                () = self.stopping.cancelled() => return Err(JobError::DatabaseAway(error)),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Ends a job whose work left nothing else to write (an e-mail sent, say): recorded
    /// with retries, so the work is not done twice.
    async fn finish_alone(&self, job: &Job, how: Finished) -> Result<Finished, JobError> {
        self.record(|| async {
            let _admitted = self.admitted().await?;
            // One statement: its own transaction.
            let mut conn = self.db.acquire().await?;
            if !outbox::finish(&mut conn, job, how).await? {
                return Err(JobError::LeaseLost);
            }
            Ok(how)
        })
        .await
    }
}

/// The declined order's reservation is given up, and its units go back in the cart.
async fn release_inventory(tx: &mut PgConnection, order: &OrderRow) -> Result<(), CheckoutError> {
    let units = inventory::units_of_order(tx, order.id).await?;
    inventory::release(tx, &units).await?;
    let (products, quantities) = (&units.product_ids, &units.quantities);
    Ok(cart::store::restore(tx, order.user_id, products, quantities).await?)
}

/// Everything after the payment in one statement (`orders::store::settle_paid`): the
/// payment recorded, the units out of stock, the order confirmed, the customer
/// notified, and the e-mail queued as a job of its own (an outage delays it, and
/// nothing else) under this span — all only while the job is still this worker's.
/// Returns the seconds since the order was accepted; `None` when the lease was lost.
async fn confirm_order(
    conn: &mut PgConnection,
    job: &Job,
    order: &OrderRow,
    charge: &Charge,
    payload: &ChargeOrder,
) -> Result<Option<f64>, CheckoutError> {
    let email = Task::SendConfirmation(SendConfirmation {
        customer: payload.customer.clone(),
        items: payload.items.clone(),
    })
    .payload()
    .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let notice = confirmation_notice(order);
    let paid = PaidCharge {
        amount: charge.amount,
        method: payload.payment_method,
        transaction_id: &charge.transaction_id,
    };
    let traceparent = current_traceparent();
    let waited =
        store::settle_paid(conn, job, paid, &notice, &email, traceparent.as_deref()).await?;
    if waited.is_some() && charge.first_order_id != order.id {
        super::outcomes::reattached(order.id, charge);
    }
    Ok(waited)
}

/// The order a charge job is about, as the claim read it, if it still waits for its
/// payment.
fn pending_order(job: &Job) -> Option<OrderRow> {
    let claimed = &job.order;
    (claimed_status(job)? == OrderStatus::Pending).then(|| OrderRow {
        id: job.order_id,
        user_id: claimed.order_user_id,
        status: OrderStatus::Pending,
        total: claimed.order_total,
        shipping_address: claimed.order_shipping_address.clone(),
        processing_time_ms: claimed.order_processing_time_ms,
        created_at: claimed.order_created_at,
        updated_at: claimed.order_updated_at,
    })
}

/// The status of the job's order when the job was claimed.
fn claimed_status(job: &Job) -> Option<OrderStatus> {
    job.order.order_status.parse().ok()
}

/// Returns whether the e-mail went out (`still_wanted` may say it should not).
async fn send_email(
    mailer: &Mailer,
    email: &Email<'_>,
    still_wanted: impl std::future::Future<Output = Result<bool, EmailError>>,
) -> Result<bool, EmailError> {
    mailer.send_if(email, still_wanted).await
}
