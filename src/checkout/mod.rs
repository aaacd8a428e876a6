//! The blocking checkout: eleven steps and a commit in ONE database transaction, with a
//! slow payment gateway and a slow mail server inside it — the "before" picture of a
//! system-design course.
//!
//! Read [`Checkout::eleven_steps`] top to bottom: it is the list from the design. Each
//! step is a small function below it; the [`step!`] macro gives each one its span
//! `checkout.<step>` and its sample in `checkout_step_duration_seconds{step}`, so the
//! steps themselves contain no telemetry plumbing.
//!
//! Concurrency: the inventory rows are locked with `SELECT … FOR UPDATE` in product-id
//! order, and stock is compared only after the locks are held. Racing buyers queue on
//! the row locks (visible as a long `checkout.check_inventory` span); the locking order
//! rules out deadlocks between carts that share products.

pub mod email;
pub mod faults;
pub mod payment;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use opentelemetry::trace::Status;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use sqlx::{PgConnection, Postgres, Transaction};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;

use self::email::{Confirmation, ConfirmationLine, EmailError, Mailer};
use self::payment::{Charge, PaymentError, PaymentGateway, PaymentMethod};
use crate::db::Database;
use crate::domain::ShippingAddress;
use crate::http::error::{ApiError, StockShortage};
use crate::orders::{OrderItemView, OrderStatus, OrderView, PaymentView};
use crate::telemetry::metrics::{
    CHECKOUT_DURATION, CHECKOUT_STEP_DURATION, CHECKOUTS, CHECKOUTS_IN_FLIGHT, EMAIL_SEND_DURATION,
    INVENTORY_LOCK_WAIT, ORDERS_REVENUE, PAYMENT_GATEWAY_DURATION, PAYMENTS_ORPHANED,
    PAYMENTS_ORPHANED_AMOUNT,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub shipping_address: ShippingAddress,
    pub payment_method: PaymentMethod,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the cart is empty")]
    EmptyCart,
    #[error("not enough stock")]
    InsufficientStock(Vec<StockShortage>),
    #[error("{0}")]
    PaymentDeclined(#[from] PaymentError),
    /// The customer was charged, then the order was rolled back: an orphaned payment.
    #[error("the confirmation e-mail could not be sent ({reason}); the order was rolled back")]
    EmailFailed {
        reason: String,
        transaction_id: String,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl CheckoutError {
    /// The `outcome` label of `checkouts_total` and `checkout_duration_seconds`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::EmptyCart => "empty_cart",
            Self::InsufficientStock(_) => "insufficient_stock",
            Self::PaymentDeclined(_) => "payment_declined",
            Self::EmailFailed { .. } => "email_failed",
            Self::Database(_) => "error",
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(error: CheckoutError) -> Self {
        match error {
            CheckoutError::EmptyCart => ApiError::EmptyCart,
            CheckoutError::InsufficientStock(shortages) => ApiError::InsufficientStock(shortages),
            CheckoutError::PaymentDeclined(e) => ApiError::PaymentDeclined(e.to_string()),
            e @ CheckoutError::EmailFailed { .. } => ApiError::EmailFailed(e.to_string()),
            CheckoutError::Database(e) => ApiError::from(e),
        }
    }
}

/// Runs one step in its own span `checkout.<step>` and records its duration.
macro_rules! step {
    ($step:ident ( $($arg:expr),* $(,)? )) => {
        observe_step(
            stringify!($step),
            tracing::info_span!(concat!("checkout.", stringify!($step))),
            $step($($arg),*),
        )
        .await
    };
}

async fn observe_step<T, E: Display>(
    name: &'static str,
    span: Span,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    histogram!(CHECKOUT_STEP_DURATION, "step" => name).record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        span.set_status(Status::error(error.to_string()));
    }
    result
}

/// What the checkout needs from the rest of the service.
#[derive(Clone)]
pub struct Checkout {
    db: Database,
    gateway: Arc<dyn PaymentGateway>,
    mailer: Mailer,
}

impl Checkout {
    pub fn new(db: Database, gateway: Arc<dyn PaymentGateway>, mailer: Mailer) -> Self {
        Self {
            db,
            gateway,
            mailer,
        }
    }

    /// Turns the customer's cart into a confirmed order, or changes nothing at all.
    pub async fn place_order(
        &self,
        user_id: i64,
        request: CheckoutRequest,
    ) -> Result<OrderView, CheckoutError> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "checkout",
            enduser.id = user_id,
            order.id = Empty,
            checkout.outcome = Empty,
        );
        let in_flight = gauge!(CHECKOUTS_IN_FLIGHT);
        in_flight.increment(1.0);
        let result = self
            .run(user_id, &request, started)
            .instrument(span.clone())
            .await;
        in_flight.decrement(1.0);

        let outcome = match &result {
            Ok(order) => {
                span.record("order.id", order.id);
                counter!(ORDERS_REVENUE).increment(cents(order.total));
                "success"
            }
            Err(error) => {
                span.set_status(Status::error(error.to_string()));
                error.outcome()
            }
        };
        span.record("checkout.outcome", outcome);
        counter!(CHECKOUTS, "outcome" => outcome).increment(1);
        histogram!(CHECKOUT_DURATION, "outcome" => outcome).record(started.elapsed().as_secs_f64());
        result
    }

    async fn run(
        &self,
        user_id: i64,
        request: &CheckoutRequest,
        started: Instant,
    ) -> Result<OrderView, CheckoutError> {
        let mut tx = self.db.begin().await?;
        match self.eleven_steps(&mut tx, user_id, request).await {
            Ok(placed) => step!(commit(tx, placed, started)),
            Err(error) => {
                rollback(tx).await;
                Err(error)
            }
        }
    }

    /// The seed's checkout, step by step, all inside the caller's transaction.
    async fn eleven_steps(
        &self,
        tx: &mut PgConnection,
        user_id: i64,
        request: &CheckoutRequest,
    ) -> Result<Placed, CheckoutError> {
        let cart = step!(validate_cart(tx, user_id))?;
        step!(check_inventory(tx, &cart))?;
        step!(reserve_inventory(tx, &cart))?;
        let order = step!(create_order(tx, &cart, request))?;
        let items = step!(create_order_items(tx, &order, &cart))?;
        let charge = step!(process_payment(self.gateway.as_ref(), &order, request))?;
        let payment = step!(record_payment(tx, &order, &charge, request))?;
        step!(reduce_inventory(tx, &cart))?;
        step!(send_email(&self.mailer, &cart, &order))
            .map_err(|error| orphaned_payment(error, &order, &charge))?;
        step!(create_notification(tx, &cart, &order))?;
        step!(clear_cart(tx, &cart))?;
        Ok(Placed {
            order,
            items,
            payment,
        })
    }
}

struct Cart {
    id: i64,
    customer_email: String,
    customer_name: String,
    lines: Vec<CartLine>,
}

#[derive(sqlx::FromRow)]
struct CartLine {
    product_id: i64,
    product_name: String,
    unit_price: Decimal,
    quantity: i32,
    is_active: bool,
}

impl Cart {
    fn product_ids(&self) -> Vec<i64> {
        self.lines.iter().map(|line| line.product_id).collect()
    }

    fn quantities(&self) -> Vec<i32> {
        self.lines.iter().map(|line| line.quantity).collect()
    }

    fn total(&self) -> Decimal {
        self.lines
            .iter()
            .map(|line| line.unit_price * Decimal::from(line.quantity))
            .sum()
    }
}

struct NewOrder {
    id: i64,
    user_id: i64,
    total: Decimal,
    shipping_address: String,
    created_at: DateTime<Utc>,
}

/// Everything the steps wrote, for the response.
struct Placed {
    order: NewOrder,
    items: Vec<OrderItemView>,
    payment: PaymentView,
}

/// Step 1: load the cart (locking it, so a double-clicked checkout cannot order it twice).
async fn validate_cart(tx: &mut PgConnection, user_id: i64) -> Result<Cart, CheckoutError> {
    let owner: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT c.id, u.email, u.full_name \
         FROM carts c JOIN users u ON u.id = c.user_id \
         WHERE c.user_id = $1 FOR UPDATE OF c",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((cart_id, customer_email, customer_name)) = owner else {
        return Err(CheckoutError::EmptyCart);
    };
    // Sorted by product id: the order in which the next step takes its row locks.
    let lines: Vec<CartLine> = sqlx::query_as(
        "SELECT ci.product_id, p.name AS product_name, p.price AS unit_price, ci.quantity, \
                p.is_active \
         FROM cart_items ci JOIN products p ON p.id = ci.product_id \
         WHERE ci.cart_id = $1 ORDER BY ci.product_id",
    )
    .bind(cart_id)
    .fetch_all(&mut *tx)
    .await?;
    Span::current().set_attribute("checkout.item_count", lines.len() as i64);
    if lines.is_empty() {
        return Err(CheckoutError::EmptyCart);
    }
    Ok(Cart {
        id: cart_id,
        customer_email,
        customer_name,
        lines,
    })
}

/// Step 2: lock the inventory rows in product-id order, then compare what is available.
/// A second buyer of the same product waits here until the first one commits.
async fn check_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    let waiting = Instant::now();
    let stock: Vec<(i64, i32, i32)> = sqlx::query_as(
        "SELECT product_id, quantity, reserved FROM inventory \
         WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
    )
    .bind(cart.product_ids())
    .fetch_all(&mut *tx)
    .await?;
    histogram!(INVENTORY_LOCK_WAIT).record(waiting.elapsed().as_secs_f64());

    let shortages: Vec<StockShortage> = cart
        .lines
        .iter()
        .filter_map(|line| {
            let available = stock
                .iter()
                .find(|(product_id, _, _)| *product_id == line.product_id)
                .filter(|_| line.is_active)
                .map(|(_, quantity, reserved)| quantity - reserved)
                .unwrap_or(0);
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
async fn reserve_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    sqlx::query(
        "UPDATE inventory SET reserved = inventory.reserved + wanted.quantity, updated_at = now() \
         FROM UNNEST($1::bigint[], $2::int[]) AS wanted(product_id, quantity) \
         WHERE inventory.product_id = wanted.product_id",
    )
    .bind(cart.product_ids())
    .bind(cart.quantities())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Step 4: the order row, status `pending`.
async fn create_order(
    tx: &mut PgConnection,
    cart: &Cart,
    request: &CheckoutRequest,
) -> Result<NewOrder, CheckoutError> {
    let total = cart.total();
    let (id, user_id, created_at): (i64, i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO orders (user_id, status, total, shipping_address) \
         SELECT user_id, 'pending', $2, $3 FROM carts WHERE id = $1 \
         RETURNING id, user_id, created_at",
    )
    .bind(cart.id)
    .bind(total)
    .bind(request.shipping_address.as_str())
    .fetch_one(&mut *tx)
    .await?;
    Span::current().set_attribute("order.id", id);
    Ok(NewOrder {
        id,
        user_id,
        total,
        shipping_address: request.shipping_address.as_str().to_string(),
        created_at,
    })
}

/// Step 5: one row per product, with the name and price as they are now.
async fn create_order_items(
    tx: &mut PgConnection,
    order: &NewOrder,
    cart: &Cart,
) -> Result<Vec<OrderItemView>, CheckoutError> {
    let names: Vec<&str> = cart.lines.iter().map(|l| l.product_name.as_str()).collect();
    let prices: Vec<Decimal> = cart.lines.iter().map(|l| l.unit_price).collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, product_id, product_name, unit_price, quantity) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::numeric[], $5::int[])",
    )
    .bind(order.id)
    .bind(cart.product_ids())
    .bind(names)
    .bind(prices)
    .bind(cart.quantities())
    .execute(&mut *tx)
    .await?;
    Ok(cart
        .lines
        .iter()
        .map(|line| OrderItemView {
            product_id: line.product_id,
            product_name: line.product_name.clone(),
            unit_price: line.unit_price,
            quantity: line.quantity,
            subtotal: line.unit_price * Decimal::from(line.quantity),
        })
        .collect())
}

/// Step 6: charge the customer through the (slow) gateway.
async fn process_payment(
    gateway: &dyn PaymentGateway,
    order: &NewOrder,
    request: &CheckoutRequest,
) -> Result<Charge, CheckoutError> {
    let started = Instant::now();
    let result = gateway
        .charge(order.id, order.total, request.payment_method)
        .await;
    let outcome = if result.is_ok() {
        "approved"
    } else {
        "declined"
    };
    histogram!(PAYMENT_GATEWAY_DURATION, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    Span::current().set_attribute("payment.outcome", outcome);
    Ok(result?)
}

/// Step 7: the payment row; the order becomes `paid`.
async fn record_payment(
    tx: &mut PgConnection,
    order: &NewOrder,
    charge: &Charge,
    request: &CheckoutRequest,
) -> Result<PaymentView, CheckoutError> {
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO payments (order_id, amount, method, status, transaction_id) \
         VALUES ($1, $2, $3, 'completed', $4) RETURNING id, created_at",
    )
    .bind(order.id)
    .bind(charge.amount)
    .bind(request.payment_method.as_str())
    .bind(&charge.transaction_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE orders SET status = 'paid', updated_at = now() WHERE id = $1")
        .bind(order.id)
        .execute(&mut *tx)
        .await?;
    Ok(PaymentView {
        id,
        amount: charge.amount,
        method: request.payment_method.as_str().to_string(),
        status: "completed".to_string(),
        transaction_id: charge.transaction_id.clone(),
        created_at,
    })
}

/// Step 8: take the units out of stock and release the reservation.
async fn reduce_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    sqlx::query(
        "UPDATE inventory SET quantity = inventory.quantity - sold.quantity, \
                              reserved = inventory.reserved - sold.quantity, \
                              updated_at = now() \
         FROM UNNEST($1::bigint[], $2::int[]) AS sold(product_id, quantity) \
         WHERE inventory.product_id = sold.product_id",
    )
    .bind(cart.product_ids())
    .bind(cart.quantities())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Step 9: the confirmation e-mail, through the slow SMTP server, still inside the transaction.
async fn send_email(mailer: &Mailer, cart: &Cart, order: &NewOrder) -> Result<(), EmailError> {
    let started = Instant::now();
    let confirmation = Confirmation {
        to: &cart.customer_email,
        name: &cart.customer_name,
        order_id: order.id,
        lines: cart
            .lines
            .iter()
            .map(|line| ConfirmationLine {
                product_name: line.product_name.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price,
            })
            .collect(),
        total: order.total,
    };
    let result = mailer.send_confirmation(&confirmation).await;
    let outcome = if result.is_ok() { "sent" } else { "failed" };
    histogram!(EMAIL_SEND_DURATION, "outcome" => outcome).record(started.elapsed().as_secs_f64());
    result
}

/// Step 10: a notification for the customer's inbox in the app.
async fn create_notification(
    tx: &mut PgConnection,
    cart: &Cart,
    order: &NewOrder,
) -> Result<(), CheckoutError> {
    sqlx::query(
        "INSERT INTO notifications (user_id, kind, message) \
         SELECT user_id, 'order_confirmed', $2 FROM carts WHERE id = $1",
    )
    .bind(cart.id)
    .bind(format!(
        "Your order #{} over {:.2} is confirmed.",
        order.id, order.total
    ))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Step 11: empty the cart.
async fn clear_cart(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    sqlx::query("DELETE FROM cart_items WHERE cart_id = $1")
        .bind(cart.id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Then commit: the order is `confirmed` with its processing time.
async fn commit(
    mut tx: Transaction<'static, Postgres>,
    placed: Placed,
    started: Instant,
) -> Result<OrderView, CheckoutError> {
    let processing_time_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE orders SET status = 'confirmed', processing_time_ms = $2, updated_at = now() \
         WHERE id = $1 RETURNING updated_at",
    )
    .bind(placed.order.id)
    .bind(processing_time_ms)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let order = placed.order;
    Ok(OrderView {
        id: order.id,
        user_id: order.user_id,
        status: OrderStatus::Confirmed,
        total: order.total,
        shipping_address: order.shipping_address,
        processing_time_ms: Some(processing_time_ms),
        created_at: order.created_at,
        updated_at,
        items: placed.items,
        payment: Some(placed.payment),
    })
}

/// Undo everything the steps wrote; the span shows that it happened and how long it took.
async fn rollback(tx: Transaction<'static, Postgres>) {
    let span = tracing::info_span!("checkout.rollback");
    if let Err(error) = tx.rollback().instrument(span).await {
        // The connection is discarded by the pool; Postgres rolls back on its own.
        tracing::warn!(%error, "rollback failed");
    }
}

/// The gateway charged the customer, but the e-mail failed and the order is rolled
/// back: the money is taken for an order that does not exist. The seed's
/// all-or-nothing design causes this; the counters make the damage visible.
fn orphaned_payment(error: EmailError, order: &NewOrder, charge: &Charge) -> CheckoutError {
    counter!(PAYMENTS_ORPHANED).increment(1);
    counter!(PAYMENTS_ORPHANED_AMOUNT).increment(cents(charge.amount));
    tracing::error!(
        order.id = order.id,
        transaction_id = %charge.transaction_id,
        amount = %charge.amount,
        %error,
        "orphaned payment: the customer was charged but the order is rolled back; refund by hand"
    );
    CheckoutError::EmailFailed {
        reason: error.to_string(),
        transaction_id: charge.transaction_id.clone(),
    }
}

/// Money counters count whole cents: counters are integers, and money is never a float.
fn cents(amount: Decimal) -> u64 {
    (amount * Decimal::ONE_HUNDRED)
        .round()
        .to_u64()
        .unwrap_or(0)
}
