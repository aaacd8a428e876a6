//! The eleven steps of the design's checkout, in its order, then the commit — each a
//! small function that holds only its own logic (the `step!` macro gives it its span
//! and its sample of `checkout_step_duration_seconds`). The blocking checkout runs them
//! all in one transaction; the asynchronous one runs the first five and `clear_cart` in
//! its request, and its jobs the ones after the payment.

use std::time::Instant;

use metrics::{counter, histogram};
use rust_decimal::Decimal;
use sqlx::{PgConnection, Postgres, Transaction};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::CheckoutError;
use super::request::CheckoutRequest;
use crate::cart::{self, Cart};
use crate::db;
use crate::domain::{
    Customer, Dependency, IdempotencyKey, LineItem, ORDER_TOTAL_MAX, PaymentMethod, StockShortage,
};
use crate::idempotency;
use crate::inventory::{self, Units};
use crate::mailer::{Confirmation, Email, EmailError, Mailer};
use crate::notifications::{NotificationKind, notify};
use crate::orders::store::{self, OrderRow};
use crate::orders::{OrderStatus, OrderView, PaymentView};
use crate::outbox::{self, SendConfirmation, Task};
use crate::payment::{
    Charge, ChargeKey, ChargeRequest, ChargeStatus, PaymentError, PaymentGateway,
};
use crate::telemetry::current_traceparent;
use crate::telemetry::metrics::{INVENTORY_LOCK_WAIT, RESILIENCE_FALLBACKS};
use crate::telemetry::server_timing;

/// The cart being checked out (locked until the transaction ends), and whose it is.
pub(super) struct Basket {
    pub(super) user_id: i64,
    pub(super) customer: Customer,
    pub(super) cart: Cart,
}

/// Everything the steps wrote, for the response.
pub(super) struct Placed {
    pub(super) order: OrderRow,
    pub(super) items: Vec<LineItem>,
    pub(super) payment: PaymentView,
    pub(super) charge: Charge,
}

/// Step 1: load the cart (locking it, so a double-clicked checkout cannot order it twice).
pub(super) async fn validate_cart(
    tx: &mut PgConnection,
    user_id: i64,
) -> Result<Basket, CheckoutError> {
    let Some((cart, customer)) = cart::store::lock(tx, user_id).await? else {
        return Err(CheckoutError::EmptyCart);
    };
    Span::current().set_attribute("checkout.item_count", cart.lines.len() as i64);
    if cart.is_empty() {
        return Err(CheckoutError::EmptyCart);
    }
    if cart.total() > ORDER_TOTAL_MAX {
        return Err(CheckoutError::TotalTooLarge(cart.total()));
    }
    Ok(Basket {
        user_id,
        customer,
        cart,
    })
}

/// Step 2: lock the inventory rows in product-id order, then compare what is available.
/// A second buyer of the same product waits here until the first one commits.
pub(super) async fn check_inventory(
    tx: &mut PgConnection,
    cart: &Cart,
) -> Result<(), CheckoutError> {
    let units: Units = cart.units().collect();
    let waiting = Instant::now();
    let stock = inventory::lock(tx, &units.product_ids).await?;
    histogram!(INVENTORY_LOCK_WAIT).record(waiting.elapsed().as_secs_f64());

    let shortages: Vec<StockShortage> = cart
        .lines
        .iter()
        .filter_map(|line| {
            let available = stock
                .iter()
                .find(|s| s.product_id == line.product_id)
                .filter(|_| line.is_active)
                .map_or(0, inventory::Stock::available);
            (line.quantity > available).then(|| StockShortage {
                product_id: line.product_id,
                product_name: line.product_name.clone(),
                requested: line.quantity,
                available: available.max(0),
            })
        })
        .collect();
    if shortages.is_empty() {
        Ok(())
    } else {
        Err(CheckoutError::InsufficientStock(shortages))
    }
}

/// Step 3: hold the units for this checkout.
pub(super) async fn reserve_inventory(
    tx: &mut PgConnection,
    cart: &Cart,
) -> Result<(), CheckoutError> {
    Ok(inventory::reserve(tx, &cart.units().collect()).await?)
}

/// Step 4: the order row, status `pending`.
pub(super) async fn create_order(
    tx: &mut PgConnection,
    basket: &Basket,
    request: &CheckoutRequest,
) -> Result<OrderRow, CheckoutError> {
    let order = store::insert_pending(
        tx,
        basket.user_id,
        basket.cart.total(),
        request.shipping_address.as_str(),
    )
    .await?;
    Span::current().set_attribute("order.id", order.id);
    Ok(order)
}

/// Step 5: one row per product, with the name and price as they are now.
pub(super) async fn create_order_items(
    tx: &mut PgConnection,
    order: &OrderRow,
    cart: &Cart,
) -> Result<Vec<LineItem>, CheckoutError> {
    let items = cart.items();
    store::insert_items(tx, order.id, &items).await?;
    Ok(items)
}

/// Step 6: charge the customer through the (slow) gateway. `first_try`: no earlier
/// attempt of this order's checkout can have reached the gateway.
pub(super) async fn process_payment(
    gateway: &dyn PaymentGateway,
    key: ChargeKey<'_>,
    order: &OrderRow,
    method: PaymentMethod,
    first_try: bool,
) -> Result<Charge, CheckoutError> {
    // An order's own key is new on the order's first try; a customer's key may have
    // charged in an earlier checkout.
    let first_call = first_try && matches!(key, ChargeKey::Order);
    let request = ChargeRequest::new(key, order.id, order.total, method).first_call(first_call);
    let result = gateway.charge(request).await;
    let outcome = match &result {
        Ok(_) => "approved",
        Err(PaymentError::Declined) => "declined",
        Err(PaymentError::Unavailable(_)) => "unavailable",
        Err(PaymentError::KeyReused(_)) => "key_reused",
    };
    Span::current().set_attribute("payment.outcome", outcome);
    result.map_err(|error| unmatched_earlier_charge(error, order.total))
}

/// An earlier attempt's payment under the same key that is not this cart's (another
/// amount, or given back since) is [`CheckoutError::CartChanged`]; other failures are
/// what they are.
fn unmatched_earlier_charge(error: PaymentError, total: Decimal) -> CheckoutError {
    match error {
        PaymentError::KeyReused(earlier) if earlier.status != ChargeStatus::Declined => {
            CheckoutError::CartChanged {
                earlier,
                total,
                refunded: false,
            }
        }
        other => CheckoutError::Payment(other),
    }
}

/// Step 7: the payment row; the order becomes `paid`.
pub(super) async fn record_payment(
    tx: &mut PgConnection,
    order: &OrderRow,
    charge: &Charge,
    method: PaymentMethod,
) -> Result<PaymentView, CheckoutError> {
    let payment =
        store::insert_payment(tx, order.id, charge.amount, method, &charge.transaction_id).await?;
    if charge.first_order_id != order.id {
        super::outcomes::reattached(order.id, charge);
    }
    Ok(payment)
}

/// Step 8: take the units out of stock and release the reservation.
pub(super) async fn reduce_inventory(
    tx: &mut PgConnection,
    units: &Units,
) -> Result<(), CheckoutError> {
    Ok(inventory::reduce(tx, units).await?)
}

/// Step 9: the confirmation e-mail, through the slow SMTP server, still inside the
/// transaction — or, when the mail server fails and its fallback is on, the e-mail
/// queued in the outbox with the order (a worker sends it, once) and the order
/// confirmed all the same.
pub(super) async fn send_email(
    mailer: &Mailer,
    tx: &mut PgConnection,
    basket: &Basket,
    order: &OrderRow,
) -> Result<(), CheckoutError> {
    let confirmation = Confirmation {
        to: &basket.customer,
        order_id: order.id,
        items: basket.cart.items(),
        total: order.total,
    };
    match mailer.send(&Email::Confirmation(confirmation)).await {
        Err(error) if mailer.falls_back() => queue_email(tx, basket, order, &error).await,
        sent => Ok(sent?),
    }
}

/// The fallback: the confirmation waits in the outbox, committed with the order or not
/// at all; counted, logged, and said in the request's `Server-Timing`.
async fn queue_email(
    tx: &mut PgConnection,
    basket: &Basket,
    order: &OrderRow,
    error: &EmailError,
) -> Result<(), CheckoutError> {
    let started = Instant::now();
    let task = Task::SendConfirmation(SendConfirmation {
        customer: basket.customer.clone(),
        items: basket.cart.items(),
    });
    outbox::enqueue(tx, order.id, &task, current_traceparent().as_deref()).await?;
    counter!(RESILIENCE_FALLBACKS, "dependency" => Dependency::MailServer.as_str()).increment(1);
    tracing::info!(order.id = order.id, %error, "confirmation e-mail queued (fallback)");
    server_timing::note_described(
        "mail_server.fallback",
        started.elapsed(),
        format!("the mail server failed ({error}); the e-mail waits in the outbox"),
    );
    Ok(())
}

/// Step 10: a notification for the customer's inbox in the app.
pub(super) async fn create_notification(
    tx: &mut PgConnection,
    user_id: i64,
    order: &OrderRow,
) -> Result<(), CheckoutError> {
    let message = confirmation_notice(order);
    Ok(notify(tx, user_id, NotificationKind::OrderConfirmed, &message).await?)
}

/// The in-app notification of a confirmed order.
pub(super) fn confirmation_notice(order: &OrderRow) -> String {
    format!(
        "Your order #{} over {:.2} is confirmed.",
        order.id, order.total
    )
}

/// Step 11: empty the cart.
pub(super) async fn clear_cart(tx: &mut PgConnection, user_id: i64) -> Result<(), CheckoutError> {
    Ok(cart::store::clear(tx, user_id).await?)
}

/// Then commit: the order is `confirmed` with its processing time (and is the answer of
/// the customer's `Idempotency-Key`, if the checkout carried one).
pub(super) async fn commit(
    mut tx: Transaction<'static, Postgres>,
    placed: Placed,
    key: Option<&IdempotencyKey>,
    started: Instant,
) -> Result<OrderView, CheckoutError> {
    let processing_time_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let updated_at = store::confirm(&mut tx, placed.order.id, processing_time_ms).await?;
    if let Some(key) = key {
        idempotency::bind_order(&mut tx, placed.order.user_id, key, placed.order.id).await?;
    }
    db::commit(tx).await?;
    let order = OrderRow {
        status: OrderStatus::Confirmed,
        processing_time_ms: Some(processing_time_ms),
        updated_at,
        ..placed.order
    };
    Ok(order.into_view(placed.items, Some(placed.payment)))
}

/// Undo everything the steps wrote; the span shows that it happened and how long it took.
pub(super) async fn rollback(tx: Transaction<'static, Postgres>) {
    let span = tracing::info_span!("checkout.rollback");
    if let Err(error) = db::rollback(tx).instrument(span).await {
        // The connection is discarded by the pool; Postgres rolls back on its own.
        tracing::warn!(%error, "rollback failed");
    }
}
