//! The "after" picture: the same checkout, asynchronous. The request does only what
//! must be synchronous, in one short transaction — validate the cart, lock and reserve
//! the inventory (so K units still give exactly K orders), create the order `pending`
//! with its items, clear the cart, and enqueue the payment in the outbox — and answers
//! 202 in milliseconds (`Checkout::accept`). Here are the steps only that request has;
//! the outbox jobs (`super::jobs`) charge, confirm and e-mail.

use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::SemaphorePermit;

use super::error::CheckoutError;
use super::request::CheckoutRequest;
use super::steps::Basket;
use crate::db::Database;
use crate::domain::IdempotencyKey;
use crate::idempotency;
use crate::orders::OrderView;
use crate::orders::store::OrderRow;
use crate::outbox::{self, ChargeOrder, Task};
use crate::payment::{ChargeKey, ChargeStatus, PaymentGateway};
use crate::telemetry::current_traceparent;

/// A place among the asynchronous checkouts in the database now; a
/// `checkout.admission` span when this one had to queue for it.
pub(super) async fn admit(db: &Database) -> Result<SemaphorePermit<'_>, CheckoutError> {
    db.enter_async_share(|| tracing::info_span!("checkout.admission"))
        .await
        // Never closed; if it were, this checkout could not start: as at shutdown.
        .map_err(|_closed| CheckoutError::Interrupted)
}

/// With an `Idempotency-Key` whose earlier attempt took a payment (in either mode) and
/// lost its order: that payment is this order's if the cart still costs what it paid,
/// and the worker attaches it instead of charging again; otherwise the customer is told
/// before anything is accepted ([`CheckoutError::CartChanged`]).
pub(super) async fn match_earlier_payment(
    gateway: &dyn PaymentGateway,
    user_id: i64,
    key: &IdempotencyKey,
    basket: &Basket,
) -> Result<(), CheckoutError> {
    let charge_key = ChargeKey::Client {
        user_id,
        key: key.as_str(),
    };
    // The key names no order: a client key's charge is the same for every order.
    let earlier = gateway.earlier_charge(charge_key.for_order(0)).await?;
    match earlier {
        Some(earlier)
            if earlier.status == ChargeStatus::Refunded
                || (earlier.status == ChargeStatus::Approved
                    && earlier.amount != basket.cart.total()) =>
        {
            Err(CheckoutError::CartChanged {
                earlier,
                total: basket.cart.total(),
                refunded: false,
            })
        }
        _ => Ok(()),
    }
}

/// The payment job, in the same transaction as the order, carrying the request's trace
/// context so that the job's spans continue this trace, and the customer's key.
pub(super) async fn enqueue_payment(
    tx: &mut PgConnection,
    order: &OrderRow,
    basket: Basket,
    request: &CheckoutRequest,
    key: Option<&IdempotencyKey>,
) -> Result<(), CheckoutError> {
    let task = Task::ChargeOrder(ChargeOrder {
        payment_method: request.payment_method,
        customer: basket.customer,
        idempotency_key: key.map(|key| key.as_str().to_string()),
    });
    let traceparent = current_traceparent();
    outbox::enqueue(tx, order.id, &task, traceparent.as_deref()).await?;
    Ok(())
}

/// Then commit: the order is accepted, `pending` until the workers settle it (and is
/// the answer of the customer's `Idempotency-Key`, if the checkout carried one).
pub(super) async fn commit(
    mut tx: Transaction<'static, Postgres>,
    order: OrderView,
    key: Option<&IdempotencyKey>,
) -> Result<OrderView, CheckoutError> {
    if let Some(key) = key {
        idempotency::bind_order(&mut tx, order.user_id, key, order.id).await?;
    }
    tx.commit().await?;
    Ok(order)
}
