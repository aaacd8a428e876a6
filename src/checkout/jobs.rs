//! What the asynchronous checkout's jobs do, each the continuation of the blocking
//! checkout's steps after the request answered (`super::workers` runs them):
//!
//! - `charge_order`: charge through the gateway (idempotency key `order-<id>`, so a
//!   retried job never charges twice), then in one transaction record the payment, take
//!   the units out of stock, confirm the order, notify the customer and enqueue the
//!   e-mail — or, if the card is declined, release the reservation and mark the order
//!   `payment_failed`;
//! - `send_confirmation`: send the e-mail; an outage delays it (retries with exponential
//!   backoff), it never fails an order or orphans a payment.
//!
//! Each finishes its job (`outbox::finish`, fenced by the lease token) in the same
//! transaction as its effects. Their database work takes a place in the asynchronous
//! checkout's share of the pool (`Database::enter_async_share`), as the requests do: a
//! hundred jobs finishing at once queue there, not in front of the catalog's reads.

use sqlx::PgConnection;
use tokio::sync::SemaphorePermit;

use super::asynchronous::current_traceparent;
use super::outcomes::{count_checkout, count_settled, settled};
use super::workers::{JobError, Workers};
use super::{
    CheckoutError, create_notification, observe_step, process_payment, record_payment,
    reduce_inventory,
};
use crate::domain::{CheckoutMode, CheckoutOutcome, SettledOutcome};
use crate::inventory::{self, Units};
use crate::mailer::{Confirmation, EmailError, Mailer};
use crate::notifications::{NotificationKind, notify};
use crate::orders::OrderStatus;
use crate::orders::store::{self, OrderRow};
use crate::outbox::{self, ChargeOrder, Job, SendConfirmation, Task};
use crate::payment::{Charge, ChargeKey, PaymentError};

impl Workers {
    /// Does what `job` is to do.
    pub(super) async fn perform(&self, job: &Job) -> Result<(), JobError> {
        let task = job
            .task()
            .map_err(|e| JobError::Retry(format!("unreadable job payload: {e}")))?;
        match task {
            Task::ChargeOrder(charge) => self.charge_order(job, &charge).await,
            Task::SendConfirmation(confirmation) => {
                self.send_confirmation(job, &confirmation).await
            }
        }
    }

    /// Charge the order, then confirm it — or, declined, fail it.
    async fn charge_order(&self, job: &Job, payload: &ChargeOrder) -> Result<(), JobError> {
        let order = self.pending_order(job).await?;
        let Some(order) = order else {
            // Settled by an earlier attempt whose answer was lost: only the job is left.
            return self.finish_alone(job).await;
        };
        let method = payload.payment_method;
        let charged = step!(process_payment(
            self.shared.gateway.as_ref(),
            ChargeKey::Order,
            &order,
            method
        ));
        match charged {
            Ok(charge) => self.confirm(job, &order, &charge, payload).await,
            Err(CheckoutError::Payment(PaymentError::Declined)) => {
                self.fail_payment(job, &order).await
            }
            Err(other) => Err(JobError::from(other)),
        }
    }

    /// A place in the asynchronous checkout's share of the pool, for one short piece of
    /// database work; an `outbox.admission` span when the job had to queue for it.
    async fn admitted(&self) -> Result<SemaphorePermit<'_>, JobError> {
        self.shared
            .db
            .enter_async_share(|| tracing::info_span!("outbox.admission"))
            .await
            .map_err(|_closed| JobError::Retry("the database share is closed".to_string()))
    }

    /// The order of a charge job, if it still waits for its payment.
    async fn pending_order(&self, job: &Job) -> Result<Option<OrderRow>, JobError> {
        let _admitted = self.admitted().await?;
        let mut conn = self.shared.db.acquire().await?;
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
        let _admitted = self.admitted().await?;
        let mut tx = self.shared.db.begin().await?;
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
        let _admitted = self.admitted().await?;
        let mut tx = self.shared.db.begin().await?;
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
            let _admitted = self.admitted().await?;
            let mut conn = self.shared.db.acquire().await?;
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
        step!(send_email(&self.shared.mailer, &confirmation))
            .map_err(|e| JobError::Retry(e.to_string()))?;
        self.finish_alone(job).await
    }

    /// Ends a job whose work left nothing to write.
    async fn finish_alone(&self, job: &Job) -> Result<(), JobError> {
        let _admitted = self.admitted().await?;
        let mut tx = self.shared.db.begin().await?;
        if !outbox::finish(&mut tx, job).await? {
            return Err(JobError::LeaseLost);
        }
        tx.commit().await?;
        Ok(())
    }
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
