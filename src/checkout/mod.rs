//! The blocking checkout: eleven steps and a commit in ONE database transaction, with a
//! slow payment gateway and a slow mail server inside it — the "before" picture of a
//! system-design course.
//!
//! Read [`Checkout::eleven_steps`] top to bottom: it is the list from the design. Each
//! step is a small function below it; the [`step!`] macro gives each one its span
//! `checkout.<step>` and its sample in `checkout_step_duration_seconds{step}`, so the
//! steps hold only their own logic. The gateway and the mailer measure their own calls;
//! how each checkout ends is counted in [`outcomes`].
//!
//! Concurrency: the inventory rows are locked with `SELECT … FOR UPDATE` in product-id
//! order, and stock is compared only after the locks are held. Racing buyers queue on
//! the row locks (visible as a long `checkout.check_inventory` span); the locking order
//! rules out deadlocks between carts that share products.
//!
//! The module knows nothing of HTTP: it returns an [`OrderView`] or a [`CheckoutError`],
//! and the handler turns either into a response.

mod outcomes;
pub mod timings;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use metrics::{gauge, histogram};
use opentelemetry::trace::Status;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;

use self::outcomes::{count_checkout, orphaned_payment, settled};
use crate::cart::{self, Cart};
use crate::db::Database;
use crate::domain::{
    ACCEPTED, CheckoutMode, CheckoutOutcome, Customer, IdempotencyKey, ORDER_TOTAL_MAX,
    OrphanReason, PaymentMethod, ShippingAddress, StockShortage,
};
use crate::idempotency;
use crate::inventory::{self, Units};
use crate::live_settings::LiveSettings;
use crate::mailer::{Confirmation, Email, EmailError, Mailer};
use crate::notifications::{NotificationKind, notify};
use crate::orders::store::{self, OrderRow};
use crate::orders::{OrderStatus, OrderView, PaymentView};
use crate::payment::{
    Charge, ChargeKey, ChargeRequest, ChargeStatus, EarlierCharge, PaymentError, PaymentGateway,
};
use crate::telemetry::exemplars;
use crate::telemetry::metrics::{CHECKOUT_STEP_DURATION, CHECKOUTS_IN_FLIGHT, INVENTORY_LOCK_WAIT};

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
    #[error("the cart's total {0} is more than an order can hold ({ORDER_TOTAL_MAX})")]
    TotalTooLarge(Decimal),
    /// An earlier attempt under the customer's `Idempotency-Key` took a payment and
    /// lost its order, and the cart's total is no longer that payment's (or the payment
    /// was given back since): the payment is refunded, nothing is charged now.
    #[error("{}", describe_cart_changed(.earlier, *.total, *.refunded))]
    CartChanged {
        earlier: EarlierCharge,
        total: Decimal,
        /// Whether the earlier payment has been given back yet ([`Checkout::place_order`]
        /// does it once the checkout's transaction is over).
        refunded: bool,
    },
    #[error("{0}")]
    Payment(#[from] PaymentError),
    /// Only after the charge (see [`CheckoutError::Charged`]).
    #[error("the confirmation e-mail could not be sent ({0})")]
    EmailFailed(#[from] EmailError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The shutdown deadline came first; everything was rolled back.
    #[error("the service is shutting down; the checkout was rolled back, retry shortly")]
    Interrupted,
    /// The gateway charged the customer, then the order was lost to `cause`: what
    /// happens to the money is part of the answer.
    #[error("{}", describe_charged(.cause, .charge, *.retry_recovers))]
    Charged {
        cause: Box<CheckoutError>,
        charge: Charge,
        /// A retry with the same `Idempotency-Key` places the order with this charge.
        retry_recovers: bool,
    },
}

impl CheckoutError {
    pub fn outcome(&self) -> CheckoutOutcome {
        match self {
            Self::EmptyCart => CheckoutOutcome::EmptyCart,
            Self::InsufficientStock(_) => CheckoutOutcome::InsufficientStock,
            Self::TotalTooLarge(_) => CheckoutOutcome::TotalTooLarge,
            Self::CartChanged { .. } => CheckoutOutcome::CartChanged,
            Self::Payment(PaymentError::Declined) => CheckoutOutcome::PaymentDeclined,
            Self::Payment(PaymentError::Unavailable(_) | PaymentError::KeyReused(_))
            | Self::Database(_) => CheckoutOutcome::Error,
            Self::EmailFailed(_) => CheckoutOutcome::EmailFailed,
            Self::Interrupted => CheckoutOutcome::Shutdown,
            Self::Charged { cause, .. } => cause.outcome(),
        }
    }

    /// The failure itself, whether or not money was taken before it.
    pub fn cause(&self) -> &CheckoutError {
        match self {
            Self::Charged { cause, .. } => cause,
            other => other,
        }
    }

    /// Why an order was lost after its payment, as `payments_orphaned_total{reason}`.
    fn orphan_reason(&self) -> OrphanReason {
        match self.cause() {
            Self::EmailFailed(_) => OrphanReason::EmailFailed,
            Self::Interrupted => OrphanReason::Shutdown,
            _ => OrphanReason::DatabaseError,
        }
    }
}

/// What a customer is told when the order was lost after the charge: never "rolled
/// back" alone, always what happened to the money.
fn describe_charged(cause: &CheckoutError, charge: &Charge, retry_recovers: bool) -> String {
    let lost = match cause {
        CheckoutError::EmailFailed(error) => format!(
            "the confirmation e-mail could not be sent ({error}), so the order was not saved"
        ),
        CheckoutError::Interrupted => {
            "the service is shutting down, so the order was not saved".to_string()
        }
        _ => "the order could not be saved".to_string(),
    };
    let money = if retry_recovers {
        "retry with the same Idempotency-Key: the order is placed with this payment, \
         which is not charged again (if your cart changes before you retry, the payment \
         is refunded instead)"
    } else {
        "it is recorded as a payment without an order and will be refunded"
    };
    format!(
        "{lost}, but your payment of {:.2} was taken ({}); {money}",
        charge.amount, charge.transaction_id
    )
}

fn describe_cart_changed(earlier: &EarlierCharge, total: Decimal, refunded: bool) -> String {
    let what = if refunded {
        "was refunded"
    } else {
        "is being refunded"
    };
    format!(
        "your cart's total is {total:.2} now, but an earlier checkout with this \
         Idempotency-Key took a payment of {:.2} and lost its order; that payment {what} \
         ({}) and nothing was charged now: check the cart and check out again with a new \
         Idempotency-Key",
        earlier.amount,
        earlier
            .transaction_id
            .as_deref()
            .unwrap_or("no transaction"),
    )
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

// After the macro: the asynchronous checkout and its jobs use it too.
mod asynchronous;
mod jobs;
pub mod workers;

/// Counters exist from the start, at zero: `rate()` and `increase()` then see the first
/// event, and dashboards show 0 rather than "no data" on a quiet service.
pub fn start_metrics_at_zero() {
    outcomes::start_metrics_at_zero();
    workers::start_metrics_at_zero();
}

fn observe_step<T, E: Display>(
    name: &'static str,
    span: Span,
    work: impl Future<Output = Result<T, E>>,
) -> impl Future<Output = Result<T, E>> {
    // Boxed before anything holds it, so a checkout (or a job) in flight holds only the
    // step that runs rather than room for the largest of its steps, for its whole life
    // (a burst has 100 of them waiting on the gateway at once).
    let work = Box::pin(work.instrument(span.clone()));
    async move {
        let started = Instant::now();
        let result = work.await;
        let took = started.elapsed();
        histogram!(CHECKOUT_STEP_DURATION, "step" => name).record(took.as_secs_f64());
        timings::note(name, took);
        if let Err(error) = &result {
            span.set_status(Status::error(error.to_string()));
        }
        result
    }
}

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
}

impl Checkout {
    pub fn new(
        db: Database,
        gateway: Arc<dyn PaymentGateway>,
        mailer: Mailer,
        live: LiveSettings,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            db,
            gateway,
            mailer,
            live,
            stopping,
        }
    }

    /// Turns the customer's cart into an order, in the checkout mode in force: a
    /// confirmed one (blocking), or an accepted one that workers will charge and confirm
    /// (async). On any refusal or failure nothing at all is changed.
    ///
    /// With an `Idempotency-Key`, the blocking checkout's charge is bound to it: a retry
    /// of a checkout that lost its order after the charge gets that charge back.
    pub async fn place_order(
        &self,
        user_id: i64,
        request: CheckoutRequest,
        key: Option<&IdempotencyKey>,
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
                .run(user_id, &request, key, started)
                .instrument(span.clone())
                .await
                .map(Placement::Confirmed),
            CheckoutMode::Async => self
                .accept(user_id, &request, key)
                .instrument(span.clone())
                .await
                .map(Placement::Accepted),
        };
        let result = match result {
            Err(CheckoutError::CartChanged {
                earlier,
                total,
                refunded: false,
            }) => Err(self
                .give_back(earlier, total)
                .instrument(span.clone())
                .await),
            other => other,
        };
        in_flight.decrement(1.0);

        let response = match &result {
            Ok(Placement::Confirmed(order)) => {
                span.record("order.id", order.id);
                settled(&span, mode, order.total, started.elapsed().as_secs_f64());
                count_checkout(mode, CheckoutOutcome::Success);
                CheckoutOutcome::Success.as_str()
            }
            // Its outcome is counted when the payment is settled (see `workers`).
            Ok(Placement::Accepted(order)) => {
                span.record("order.id", order.id);
                ACCEPTED
            }
            Err(error) => {
                span.set_status(Status::error(error.to_string()));
                let outcome = error.outcome();
                if outcome == CheckoutOutcome::Shutdown {
                    span.in_scope(|| {
                        tracing::warn!(%error, "checkout rolled back at the shutdown deadline");
                    });
                }
                count_checkout(mode, outcome);
                outcome.as_str()
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
        key: Option<&IdempotencyKey>,
        started: Instant,
    ) -> Result<OrderView, CheckoutError> {
        let mut tx = self
            .unless_stopped(async { Ok(self.db.begin().await?) })
            .await?;
        let charge_key = match key {
            Some(key) => ChargeKey::Client {
                user_id,
                key: key.as_str(),
            },
            None => ChargeKey::Order,
        };
        match self
            .eleven_steps(&mut tx, user_id, request, charge_key)
            .await
        {
            Ok(placed) => {
                let (order_id, charge) = (placed.order.id, placed.charge.clone());
                step!(commit(tx, placed, key, started))
                    .map_err(|error| orphaned_payment(error, order_id, charge, charge_key))
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
        charge_key: ChargeKey<'_>,
    ) -> Result<Placed, CheckoutError> {
        let (basket, order, items) = self
            .unless_stopped(async {
                let basket = step!(validate_cart(tx, user_id))?;
                step!(check_inventory(tx, &basket.cart))?;
                step!(reserve_inventory(tx, &basket.cart))?;
                let order = step!(create_order(tx, &basket, request))?;
                let items = step!(create_order_items(tx, &order, &basket.cart))?;
                Ok((basket, order, items))
            })
            .await?;
        let method = request.payment_method;
        let gateway = self.gateway.as_ref();
        let charge = step!(process_payment(gateway, charge_key, &order, method))?;
        // From here on, losing the order orphans the payment.
        let payment = self
            .unless_stopped(async {
                let payment = step!(record_payment(tx, &order, &charge, method))?;
                step!(reduce_inventory(tx, &basket.cart.units().collect()))?;
                step!(send_email(&self.mailer, &basket, &order))?;
                step!(create_notification(tx, basket.user_id, &order))?;
                step!(clear_cart(tx, basket.user_id))?;
                Ok(payment)
            })
            .await
            .map_err(|error| orphaned_payment(error, order.id, charge.clone(), charge_key))?;
        Ok(Placed {
            order,
            items,
            payment,
            charge,
        })
    }

    /// Gives back the payment an earlier attempt under the customer's key took for
    /// another cart, so that no money stays without an order; the customer is told to
    /// check out anew. Unless an order holds that payment: then the order is the key's
    /// answer, and the idempotency layer answers with it.
    #[tracing::instrument(name = "checkout.refund_earlier_payment", skip_all, fields(
        payment.transaction_id = earlier.transaction_id.as_deref(),
        payment.amount = %earlier.amount,
    ))]
    async fn give_back(&self, earlier: EarlierCharge, total: Decimal) -> CheckoutError {
        let transaction_id = match (&earlier.status, &earlier.transaction_id) {
            (ChargeStatus::Approved, Some(transaction_id)) => transaction_id.clone(),
            // Given back already (or nothing was taken).
            _ => {
                return CheckoutError::CartChanged {
                    earlier,
                    total,
                    refunded: true,
                };
            }
        };
        let paying = async {
            let mut conn = self.db.acquire().await?;
            store::order_paid_by(&mut conn, &transaction_id).await
        };
        match paying.await {
            Ok(None) => {}
            Ok(Some(_order)) => return CheckoutError::Payment(PaymentError::KeyReused(earlier)),
            Err(error) => return CheckoutError::Database(error),
        }
        if let Err(error) = self.gateway.refund(&transaction_id).await {
            return CheckoutError::Payment(PaymentError::Unavailable(error.to_string()));
        }
        tracing::warn!(
            payment.transaction_id = %transaction_id,
            payment.amount = %earlier.amount,
            order.total = %total,
            "refunded the payment of an earlier attempt under the same Idempotency-Key: \
             the cart changed since"
        );
        CheckoutError::CartChanged {
            earlier,
            total,
            refunded: true,
        }
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

/// The cart being checked out (locked until the transaction ends), and whose it is.
struct Basket {
    user_id: i64,
    customer: Customer,
    cart: Cart,
}

/// Everything the steps wrote, for the response.
struct Placed {
    order: OrderRow,
    items: Vec<crate::domain::LineItem>,
    payment: PaymentView,
    charge: Charge,
}

/// Step 1: load the cart (locking it, so a double-clicked checkout cannot order it twice).
async fn validate_cart(tx: &mut PgConnection, user_id: i64) -> Result<Basket, CheckoutError> {
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
async fn check_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
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
async fn reserve_inventory(tx: &mut PgConnection, cart: &Cart) -> Result<(), CheckoutError> {
    Ok(inventory::reserve(tx, &cart.units().collect()).await?)
}

/// Step 4: the order row, status `pending`.
async fn create_order(
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
async fn create_order_items(
    tx: &mut PgConnection,
    order: &OrderRow,
    cart: &Cart,
) -> Result<Vec<crate::domain::LineItem>, CheckoutError> {
    let items = cart.items();
    store::insert_items(tx, order.id, &items).await?;
    Ok(items)
}

/// Step 6: charge the customer through the (slow) gateway.
async fn process_payment(
    gateway: &dyn PaymentGateway,
    key: ChargeKey<'_>,
    order: &OrderRow,
    method: PaymentMethod,
) -> Result<Charge, CheckoutError> {
    let result = gateway
        .charge(ChargeRequest::new(key, order.id, order.total, method))
        .await;
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
async fn record_payment(
    tx: &mut PgConnection,
    order: &OrderRow,
    charge: &Charge,
    method: PaymentMethod,
) -> Result<PaymentView, CheckoutError> {
    let payment =
        store::insert_payment(tx, order.id, charge.amount, method, &charge.transaction_id).await?;
    store::set_status(tx, order.id, OrderStatus::Paid).await?;
    if charge.first_order_id != order.id {
        outcomes::reattached(order.id, charge);
    }
    Ok(payment)
}

/// Step 8: take the units out of stock and release the reservation.
async fn reduce_inventory(tx: &mut PgConnection, units: &Units) -> Result<(), CheckoutError> {
    Ok(inventory::reduce(tx, units).await?)
}

/// Step 9: the confirmation e-mail, through the slow SMTP server, still inside the transaction.
async fn send_email(mailer: &Mailer, basket: &Basket, order: &OrderRow) -> Result<(), EmailError> {
    let confirmation = Confirmation {
        to: &basket.customer,
        order_id: order.id,
        items: basket.cart.items(),
        total: order.total,
    };
    mailer.send(&Email::Confirmation(confirmation)).await
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
async fn clear_cart(tx: &mut PgConnection, user_id: i64) -> Result<(), CheckoutError> {
    Ok(cart::store::clear(tx, user_id).await?)
}

/// Then commit: the order is `confirmed` with its processing time (and is the answer of
/// the customer's `Idempotency-Key`, if the checkout carried one).
async fn commit(
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
