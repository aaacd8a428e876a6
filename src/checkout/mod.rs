//! The blocking checkout: eleven steps and a commit in ONE database transaction, with a
//! slow payment gateway and a slow mail server inside it — the "before" picture of a
//! system-design course.
//!
//! Read [`Checkout::eleven_steps`] top to bottom: it is the list from the design. Each
//! step is a small function below it; the [`step!`] macro gives each one its span
//! `checkout.<step>` and its sample in `checkout_step_duration_seconds{step}`, so the
//! steps hold only their own logic. The gateway and the mailer measure their own calls.
//!
//! Concurrency: the inventory rows are locked with `SELECT … FOR UPDATE` in product-id
//! order, and stock is compared only after the locks are held. Racing buyers queue on
//! the row locks (visible as a long `checkout.check_inventory` span); the locking order
//! rules out deadlocks between carts that share products.
//!
//! The module knows nothing of HTTP: it returns an [`OrderView`] or a [`CheckoutError`],
//! and the handler turns either into a response.

pub mod email;
pub mod faults;
mod mode;
mod outcome;
pub mod payment;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge, histogram};
use opentelemetry::trace::Status;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;

use self::email::{Confirmation, EmailError, Mailer};
pub use self::mode::CheckoutMode;
pub use self::outcome::CheckoutOutcome;
use self::payment::{Charge, ChargeRequest, PaymentError, PaymentGateway};
use crate::db::Database;
use crate::domain::{LineItem, ShippingAddress, StockShortage};
use crate::inventory::{self, Units};
use crate::live_settings::LiveSettings;
use crate::notifications::{NotificationKind, notify};
use crate::orders::store::{self, OrderRow};
use crate::orders::{OrderStatus, OrderView, PaymentMethod, PaymentView};
use crate::telemetry::exemplars;
use crate::telemetry::metrics::{
    CHECKOUT_STEP_DURATION, CHECKOUTS, CHECKOUTS_IN_FLIGHT, INVENTORY_LOCK_WAIT, ORDERS_REVENUE,
    ORDERS_SETTLED, PAYMENTS_ORPHANED, PAYMENTS_ORPHANED_AMOUNT,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub shipping_address: ShippingAddress,
    pub payment_method: PaymentMethod,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the cart is empty")]
    EmptyCart,
    #[error("not enough stock for {}", StockShortage::describe(.0))]
    InsufficientStock(Vec<StockShortage>),
    #[error("{0}")]
    Payment(#[from] PaymentError),
    /// Only after the charge: the order was rolled back, the payment orphaned.
    #[error("the confirmation e-mail could not be sent ({0}); the order was rolled back")]
    EmailFailed(#[from] EmailError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The shutdown deadline came first; everything was rolled back.
    #[error("the service is shutting down; the checkout was rolled back, retry shortly")]
    Interrupted,
}

impl CheckoutError {
    pub fn outcome(&self) -> CheckoutOutcome {
        match self {
            Self::EmptyCart => CheckoutOutcome::EmptyCart,
            Self::InsufficientStock(_) => CheckoutOutcome::InsufficientStock,
            Self::Payment(PaymentError::Declined) => CheckoutOutcome::PaymentDeclined,
            Self::Payment(PaymentError::Unavailable(_)) | Self::Database(_) => {
                CheckoutOutcome::Error
            }
            Self::EmailFailed(_) => CheckoutOutcome::EmailFailed,
            Self::Interrupted => CheckoutOutcome::Shutdown,
        }
    }

    /// Why an order was lost after its payment, as `payments_orphaned_total{reason}`.
    fn orphan_reason(&self) -> &'static str {
        match self {
            Self::EmailFailed(_) => "email_failed",
            Self::Interrupted => "shutdown",
            _ => "database_error",
        }
    }
}

/// The reasons an order can be lost after its payment.
pub const ORPHAN_REASONS: [&str; 3] = ["email_failed", "database_error", "shutdown"];

/// Counters exist from the start, at zero: `rate()` and `increase()` then see the first
/// event, and dashboards show 0 rather than "no data" on a quiet service.
pub fn start_metrics_at_zero() {
    for mode in CheckoutMode::ALL {
        for outcome in CheckoutOutcome::ALL {
            counter!(CHECKOUTS, "mode" => mode.as_str(), "outcome" => outcome.as_str()).absolute(0);
        }
        for outcome in SETTLED_OUTCOMES {
            counter!(ORDERS_SETTLED, "mode" => mode.as_str(), "outcome" => outcome).absolute(0);
        }
    }
    for reason in ORPHAN_REASONS {
        counter!(PAYMENTS_ORPHANED, "reason" => reason).absolute(0);
        counter!(PAYMENTS_ORPHANED_AMOUNT, "reason" => reason).absolute(0);
    }
    counter!(ORDERS_REVENUE).absolute(0);
    gauge!(CHECKOUTS_IN_FLIGHT).set(0.0);
    workers::start_metrics_at_zero();
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

// After the macro: the asynchronous checkout and its workers use it too.
mod asynchronous;
pub mod workers;

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

/// The ends an order reaches after its payment (`orders_settled_total{outcome}`).
pub const SETTLED_OUTCOMES: [&str; 2] = ["confirmed", "payment_failed"];

/// What a checkout request achieved.
#[derive(Debug)]
pub enum Placement {
    /// The blocking checkout: the order is confirmed (201).
    Confirmed(OrderView),
    /// The asynchronous checkout: the order is accepted and `pending`; workers charge
    /// and confirm it (202).
    Accepted(OrderView),
}

/// What the checkout needs from the rest of the service.
#[derive(Clone)]
pub struct Checkout {
    db: Database,
    gateway: Arc<dyn PaymentGateway>,
    mailer: Mailer,
    live: LiveSettings,
    /// Cancelled when the shutdown deadline passes: checkouts still running roll back.
    stopping: CancellationToken,
    /// The asynchronous request path's front door (see `asynchronous::admitted_at_once`).
    admission: Arc<Semaphore>,
}

impl Checkout {
    pub fn new(
        db: Database,
        gateway: Arc<dyn PaymentGateway>,
        mailer: Mailer,
        live: LiveSettings,
        stopping: CancellationToken,
    ) -> Self {
        let admission = Semaphore::new(asynchronous::admitted_at_once(db.max_connections()));
        Self {
            db,
            gateway,
            mailer,
            live,
            stopping,
            admission: Arc::new(admission),
        }
    }

    /// Turns the customer's cart into an order, in the checkout mode in force: a
    /// confirmed one (blocking), or an accepted one that workers will charge and confirm
    /// (async). On any refusal or failure nothing at all is changed.
    pub async fn place_order(
        &self,
        user_id: i64,
        request: CheckoutRequest,
    ) -> Result<Placement, CheckoutError> {
        let started = Instant::now();
        let mode = self.live.checkout_mode();
        let span = tracing::info_span!(
            "checkout",
            enduser.id = user_id,
            checkout.mode = mode.as_str(),
            order.id = Empty,
            checkout.outcome = Empty,
        );
        let in_flight = gauge!(CHECKOUTS_IN_FLIGHT);
        in_flight.increment(1.0);
        let result = match mode {
            CheckoutMode::Blocking => self
                .run(user_id, &request, started)
                .instrument(span.clone())
                .await
                .map(Placement::Confirmed),
            CheckoutMode::Async => self
                .accept(user_id, &request)
                .instrument(span.clone())
                .await
                .map(Placement::Accepted),
        };
        in_flight.decrement(1.0);

        let response = match &result {
            Ok(Placement::Confirmed(order)) => {
                span.record("order.id", order.id);
                settled(&span, mode, order.total, started.elapsed().as_secs_f64());
                counter!(CHECKOUTS, "mode" => mode.as_str(), "outcome" => CheckoutOutcome::Success.as_str())
                    .increment(1);
                CheckoutOutcome::Success.as_str()
            }
            // Its outcome is counted when the payment is settled (see `workers`).
            Ok(Placement::Accepted(order)) => {
                span.record("order.id", order.id);
                asynchronous::ACCEPTED
            }
            Err(error) => {
                span.set_status(Status::error(error.to_string()));
                let outcome = error.outcome().as_str();
                counter!(CHECKOUTS, "mode" => mode.as_str(), "outcome" => outcome).increment(1);
                outcome
            }
        };
        span.record("checkout.outcome", response);
        exemplars::record_checkout(&span, mode, response, started.elapsed().as_secs_f64());
        result
    }

    async fn run(
        &self,
        user_id: i64,
        request: &CheckoutRequest,
        started: Instant,
    ) -> Result<OrderView, CheckoutError> {
        let mut tx = self
            .unless_stopped(async { Ok(self.db.begin().await?) })
            .await?;
        match self.eleven_steps(&mut tx, user_id, request).await {
            Ok(placed) => {
                let (order_id, charge) = (placed.order.id, placed.charge.clone());
                step!(commit(tx, placed, started))
                    .map_err(|error| orphaned_payment(error, order_id, &charge))
            }
            Err(error) => {
                rollback(tx).await;
                Err(error)
            }
        }
    }

    /// The original system's checkout, step by step, all inside the caller's transaction.
    ///
    /// The shutdown deadline interrupts it anywhere but in the payment: the gateway
    /// takes the money whether we wait or not, and only its answer tells whether
    /// losing the order afterwards orphans a payment.
    async fn eleven_steps(
        &self,
        tx: &mut PgConnection,
        user_id: i64,
        request: &CheckoutRequest,
    ) -> Result<Placed, CheckoutError> {
        let (cart, order, items) = self
            .unless_stopped(async {
                let cart = step!(validate_cart(tx, user_id))?;
                step!(check_inventory(tx, &cart))?;
                step!(reserve_inventory(tx, &cart))?;
                let order = step!(create_order(tx, &cart, request))?;
                let items = step!(create_order_items(tx, &order, &cart))?;
                Ok((cart, order, items))
            })
            .await?;
        let method = request.payment_method;
        let charge = step!(process_payment(self.gateway.as_ref(), &order, method))?;
        // From here on, losing the order orphans the payment.
        let payment = self
            .unless_stopped(async {
                let payment = step!(record_payment(tx, &order, &charge, method))?;
                step!(reduce_inventory(tx, &cart.units()))?;
                step!(send_email(&self.mailer, &cart, &order))?;
                step!(create_notification(tx, cart.user_id, &order))?;
                step!(clear_cart(tx, &cart))?;
                Ok(payment)
            })
            .await
            .map_err(|error| orphaned_payment(error, order.id, &charge))?;
        Ok(Placed {
            order,
            items,
            payment,
            charge,
        })
    }

    /// Runs `work` unless the shutdown deadline passes first.
    async fn unless_stopped<T>(
        &self,
        work: impl Future<Output = Result<T, CheckoutError>>,
    ) -> Result<T, CheckoutError> {
        tokio::select! {
            biased;
            result = work => result,
            () = self.stopping.cancelled() => Err(CheckoutError::Interrupted),
        }
    }
}

struct Cart {
    id: i64,
    user_id: i64,
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
    fn units(&self) -> Units {
        self.lines
            .iter()
            .map(|line| (line.product_id, line.quantity))
            .collect()
    }

    fn items(&self) -> Vec<LineItem> {
        self.lines
            .iter()
            .map(|line| {
                LineItem::new(
                    line.product_id,
                    line.product_name.clone(),
                    line.unit_price,
                    line.quantity,
                )
            })
            .collect()
    }

    fn total(&self) -> Decimal {
        self.lines
            .iter()
            .map(|line| line.unit_price * Decimal::from(line.quantity))
            .sum()
    }
}

/// Everything the steps wrote, for the response.
struct Placed {
    order: OrderRow,
    items: Vec<LineItem>,
    payment: PaymentView,
    charge: Charge,
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
        user_id,
        customer_email,
        customer_name,
        lines,
    })
}

/// Step 2: lock the inventory rows in product-id order, then compare what is available.
/// A second buyer of the same product waits here until the first one commits.
async fn check_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    let waiting = Instant::now();
    let stock = inventory::lock(tx, &cart.units().product_ids).await?;
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
async fn reserve_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    Ok(inventory::reserve(tx, &cart.units()).await?)
}

/// Step 4: the order row, status `pending`.
async fn create_order(
    tx: &mut PgConnection,
    cart: &Cart,
    request: &CheckoutRequest,
) -> Result<OrderRow, CheckoutError> {
    let order = store::insert_pending(
        tx,
        cart.user_id,
        cart.total(),
        request.shipping_address.as_str(),
    )
    .await?;
    Span::current().set_attribute("order.id", order.id);
    Ok(order)
}

/// Step 5: one row per product, with the name and price as they are now.
async fn create_order_items(
    tx: &mut PgConnection,
    order: &OrderRow,
    cart: &Cart,
) -> Result<Vec<LineItem>, CheckoutError> {
    let items = cart.items();
    store::insert_items(tx, order.id, &items).await?;
    Ok(items)
}

/// Step 6: charge the customer through the (slow) gateway.
async fn process_payment(
    gateway: &dyn PaymentGateway,
    order: &OrderRow,
    method: PaymentMethod,
) -> Result<Charge, CheckoutError> {
    let result = gateway
        .charge(ChargeRequest::for_order(order.id, order.total, method))
        .await;
    let outcome = match &result {
        Ok(_) => "approved",
        Err(PaymentError::Declined) => "declined",
        Err(PaymentError::Unavailable(_)) => "unavailable",
    };
    Span::current().set_attribute("payment.outcome", outcome);
    Ok(result?)
}

/// Step 7: the payment row; the order becomes `paid`.
async fn record_payment(
    tx: &mut PgConnection,
    order: &OrderRow,
    charge: &Charge,
    method: PaymentMethod,
) -> Result<PaymentView, CheckoutError> {
    let payment =
        store::insert_payment(tx, order.id, charge.amount, method, &charge.transaction_id).await?;
    store::set_status(tx, order.id, OrderStatus::Paid).await?;
    Ok(payment)
}

/// Step 8: take the units out of stock and release the reservation.
async fn reduce_inventory(tx: &mut PgConnection, units: &Units) -> Result<(), CheckoutError> {
    Ok(inventory::reduce(tx, units).await?)
}

/// Step 9: the confirmation e-mail, through the slow SMTP server, still inside the transaction.
async fn send_email(mailer: &Mailer, cart: &Cart, order: &OrderRow) -> Result<(), EmailError> {
    let confirmation = Confirmation {
        to: &cart.customer_email,
        name: &cart.customer_name,
        order_id: order.id,
        items: cart.items(),
        total: order.total,
    };
    mailer.send_confirmation(&confirmation).await
}

/// Step 10: a notification for the customer's inbox in the app.
async fn create_notification(
    tx: &mut PgConnection,
    user_id: i64,
    order: &OrderRow,
) -> Result<(), CheckoutError> {
    let message = format!(
        "Your order #{} over {:.2} is confirmed.",
        order.id, order.total
    );
    Ok(notify(tx, user_id, NotificationKind::OrderConfirmed, &message).await?)
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
    let updated_at = store::confirm(&mut tx, placed.order.id, processing_time_ms).await?;
    tx.commit().await?;
    let order = OrderRow {
        status: OrderStatus::Confirmed,
        processing_time_ms: Some(processing_time_ms),
        updated_at,
        ..placed.order
    };
    Ok(order.into_view(placed.items, Some(placed.payment)))
}

/// Undo everything the steps wrote; the span shows that it happened and how long it took.
async fn rollback(tx: Transaction<'static, Postgres>) {
    let span = tracing::info_span!("checkout.rollback");
    if let Err(error) = tx.rollback().instrument(span).await {
        // The connection is discarded by the pool; Postgres rolls back on its own.
        tracing::warn!(%error, "rollback failed");
    }
}

/// The gateway charged the customer, but the order is rolled back (the e-mail failed,
/// the database failed, or the shutdown deadline came): the money is taken for an
/// order that does not exist. The original system's all-or-nothing design causes
/// this; the counters and the reconciliation make the damage visible.
fn orphaned_payment(error: CheckoutError, order_id: i64, charge: &Charge) -> CheckoutError {
    let reason = error.orphan_reason();
    counter!(PAYMENTS_ORPHANED, "reason" => reason).increment(1);
    counter!(PAYMENTS_ORPHANED_AMOUNT, "reason" => reason).increment(cents(charge.amount));
    tracing::error!(
        order.id = order_id,
        transaction_id = %charge.transaction_id,
        amount = %charge.amount,
        reason,
        %error,
        "orphaned payment: the customer was charged but the order is rolled back; refund by hand"
    );
    error
}

/// An order paid and confirmed: its revenue, and how long from request to confirmed
/// (with `span`, of the checkout's trace, as the exemplar).
fn settled(span: &tracing::Span, mode: CheckoutMode, total: Decimal, seconds_since_request: f64) {
    counter!(ORDERS_REVENUE).increment(cents(total));
    counter!(ORDERS_SETTLED, "mode" => mode.as_str(), "outcome" => "confirmed").increment(1);
    exemplars::record_time_to_confirmed(span, mode, seconds_since_request);
}

/// Money counters count whole cents: counters are integers, and money is never a float.
pub fn cents(amount: Decimal) -> u64 {
    (amount * Decimal::ONE_HUNDRED)
        .round()
        .to_u64()
        .unwrap_or(0)
}
