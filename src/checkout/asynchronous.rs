//! The "after" picture: the same checkout, asynchronous. The request does only what
//! must be synchronous, in one short transaction of five statements — lock the cart,
//! lock and check the inventory (so K units still give exactly K orders), then in one
//! statement reserve the units, create the order `pending` with its items, clear the
//! cart and enqueue the payment in the outbox — and answers 202 in milliseconds
//! (`Checkout::accept`). Here are the steps only that request has;
//! the outbox jobs (`super::jobs`) charge, confirm and e-mail.

use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::SemaphorePermit;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::CheckoutError;
use super::request::CheckoutRequest;
use super::steps::Basket;
use crate::db::{self, Database};
use crate::domain::IdempotencyKey;
use crate::idempotency;
use crate::orders::OrderView;
use crate::orders::store::{self, NewOrder};
use crate::outbox::{ChargeOrder, Task};
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

/// What the request writes, in one statement (`orders::store::place_pending`): the
/// units reserved, the order `pending` with its items, the cart emptied, and the
/// payment job queued in the same transaction — carrying this span's trace context, so
/// that the job's spans continue the trace, and the customer's key.
pub(super) async fn place_order(
    tx: &mut PgConnection,
    basket: Basket,
    request: &CheckoutRequest,
    key: Option<&IdempotencyKey>,
) -> Result<OrderView, CheckoutError> {
    let items = basket.cart.items();
    let task = Task::ChargeOrder(ChargeOrder {
        payment_method: request.payment_method,
        customer: basket.customer,
        idempotency_key: key.map(|key| key.as_str().to_string()),
        items: items.clone(),
    });
    let payload = task
        .payload()
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let new_order = NewOrder {
        user_id: basket.user_id,
        total: basket.cart.total(),
        shipping_address: request.shipping_address.as_str(),
        items: &items,
    };
    let traceparent = current_traceparent();
    let order = store::place_pending(tx, new_order, &payload, traceparent.as_deref()).await?;
    Span::current().set_attribute("order.id", order.id);
    Ok(order.into_view(items, None))
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
    db::commit(tx).await?;
    Ok(order)
}
