//! The checkout: the cart becomes an order. The blocking one is the "before" picture of
//! a system-design course — eleven steps and a commit in ONE database transaction, with
//! a slow payment gateway and a slow mail server inside it; the asynchronous one is the
//! cure — the request does the database work and answers 202, outbox workers the rest.
//!
//! `Checkout::eleven_steps`, below, is the design's list, top to bottom. The steps
//! are small functions in `steps`, each run by the `step!` macro (`step`) in its
//! span `checkout.<step>` with its sample of `checkout_step_duration_seconds{step}`.
//! `asynchronous` has the asynchronous request's own steps, `jobs` what its outbox
//! jobs do, [`workers`] how they are claimed and run; `error` why a checkout did not
//! end in an order, `outcomes` how every checkout ends (counted once), `refund` the
//! payment of an earlier attempt that no longer matches the cart.
//!
//! Concurrency: the inventory rows are locked with `SELECT … FOR UPDATE` in product-id
//! order, and stock is compared only after the locks are held: racing buyers queue on
//! the row locks (a long `checkout.check_inventory` span), and the order rules out
//! deadlocks between carts that share products. The module knows nothing of HTTP: it
//! returns an order (`OrderView`) or a [`CheckoutError`], which the handler turns into a
//! response.

mod asynchronous;
mod error;
mod jobs;
mod outcomes;
mod refund;
mod request;
mod step;
mod steps;
pub mod workers;

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use self::asynchronous::{admit, match_earlier_payment, place_order};
pub use self::error::CheckoutError;
use self::outcomes::{answered, orphaned_payment};
pub use self::request::{CheckoutRequest, Placement};
use self::step::{step, unless_stopped};
use self::steps::{
    Placed, check_inventory, clear_cart, commit, create_notification, create_order,
    create_order_items, process_payment, record_payment, reduce_inventory, reserve_inventory,
    rollback, send_email, validate_cart,
};
use crate::db::Database;
use crate::domain::{CheckoutMode, IdempotencyKey};
use crate::live_settings::LiveSettings;
use crate::mailer::Mailer;
use crate::payment::{ChargeKey, PaymentGateway};

/// Counters exist from the start, at zero: `rate()` and `increase()` then see the first
/// event, and dashboards show 0 rather than "no data" on a quiet service.
pub fn start_metrics_at_zero() {
    outcomes::start_metrics_at_zero();
    workers::start_metrics_at_zero();
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

    /// Turns the customer's cart into an order in the mode in force: confirmed (blocking)
    /// or accepted, for workers to charge and confirm (async). A failure changes nothing.
    ///
    /// With an `Idempotency-Key` the charge is bound to it, in either mode: a retry of a
    /// checkout that lost its order after the charge gets that charge back — or, if the
    /// cart has changed since, that charge is refunded ([`CheckoutError::CartChanged`]).
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
        let in_flight = outcomes::in_flight();
        let result = async {
            let placed = match mode {
                CheckoutMode::Blocking => self.run(user_id, &request, key, started).await,
                CheckoutMode::Async => self.accept(user_id, &request, key).await,
            };
            match placed {
                Err(CheckoutError::CartChanged {
                    earlier,
                    total,
                    refunded: false,
                }) => Err(refund::give_back(&self.db, self.gateway.as_ref(), earlier, total).await),
                other => other,
            }
        }
        .instrument(span.clone())
        .await;
        drop(in_flight);
        answered(&span, mode, &result, started.elapsed().as_secs_f64());
        result
    }

    /// The blocking checkout: the eleven steps in one transaction, then the commit.
    async fn run(
        &self,
        user_id: i64,
        request: &CheckoutRequest,
        key: Option<&IdempotencyKey>,
        started: Instant,
    ) -> Result<Placement, CheckoutError> {
        let mut tx = unless_stopped(&self.stopping, async { Ok(self.db.begin().await?) }).await?;
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
                    .map(Placement::Confirmed)
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
        let (basket, order, items) = unless_stopped(&self.stopping, async {
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
        // The mail breaker open: refuse now, not charge for an order step 8 would lose.
        self.mailer.reserve()?;
        let charge = step!(process_payment(gateway, charge_key, &order, method, true))?;
        // From here on, losing the order orphans the payment.
        let payment = unless_stopped(&self.stopping, async {
            let payment = step!(record_payment(tx, &order, &charge, method))?;
            step!(reduce_inventory(tx, &basket.cart.units().collect()))?;
            step!(send_email(&self.mailer, tx, &basket, &order))?;
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

    /// The asynchronous checkout's request: the order `pending`, its payment enqueued,
    /// all or nothing, in one short transaction — the cart and the inventory locked and
    /// checked as in the blocking checkout's first steps, then everything it writes in
    /// one statement (`place_order`); the steps after the payment are the outbox jobs'
    /// ([`jobs`]).
    async fn accept(
        &self,
        user_id: i64,
        request: &CheckoutRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Placement, CheckoutError> {
        let _admitted = unless_stopped(&self.stopping, admit(&self.db)).await?;
        let mut tx = unless_stopped(&self.stopping, async { Ok(self.db.begin().await?) }).await?;
        let gateway = self.gateway.as_ref();
        let accepted = unless_stopped(&self.stopping, async {
            let tx = &mut *tx;
            let basket = step!(validate_cart(tx, user_id))?;
            if let Some(key) = key {
                step!(match_earlier_payment(gateway, user_id, key, &basket))?;
            }
            step!(check_inventory(tx, &basket.cart))?;
            step!(place_order(tx, basket, request, key))
        })
        .await;
        match accepted {
            Ok(order) => step!(asynchronous::commit(tx, order, key)).map(Placement::Accepted),
            Err(error) => {
                rollback(tx).await;
                Err(error)
            }
        }
    }
}
