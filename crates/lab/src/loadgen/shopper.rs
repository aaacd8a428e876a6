//! One simulated shopper: signs up, then browses, looks at products, fills a cart and
//! checks out (or abandons the cart), with think time between the steps. Like a person:
//! it picks products the listing shows in stock, never checks out an empty cart, waits
//! when told to (429 `Retry-After`), and after a 202 it carries on shopping while its
//! order is followed until it is confirmed or failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Barrier, Semaphore, watch};
use tokio_util::task::TaskTracker;

use super::report::{Operation, Recorder};
use crate::client::{ApiClient, ApiResponse};
use ecommerce_monolith::domain::{CheckoutMode, CheckoutOutcome};

/// What the shoppers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Browse, look at products, fill a cart, then check out or abandon it.
    Browse,
    /// Only add to cart and check out, in a loop; each shopper buys its own product
    /// (the best-stocked ones), so shoppers never wait on each other's row locks.
    Checkout,
    /// Every shopper fills a cart with its own product, then all check out at the same
    /// moment, once; the run ends when the last checkout is answered (and, in the
    /// asynchronous checkout, confirmed).
    Burst,
    /// Buys its own product in a loop, like `checkout`, but gives up on an answer after
    /// `--patience` and sends the checkout again (up to five times), with the first
    /// attempt's `Idempotency-Key` if `--idempotency-key`, else none: a customer
    /// pressing the button again.
    Impatient,
}

/// How often an impatient shopper sends one purchase's checkout at the most.
const IMPATIENT_ATTEMPTS: usize = 5;

/// How long an accepted order is followed before it counts as unsettled.
const FOLLOW_AT_MOST: Duration = Duration::from_secs(60);
/// A followed order is first looked at after this, then ever less often (up to
/// `FOLLOW_EVERY_AT_MOST`), as a polite client does: a queue that runs behind must not
/// be buried under polls. (The time to confirmed comes from the order itself, so it
/// does not depend on when the poll happens.)
const FOLLOW_FIRST: Duration = Duration::from_millis(200);
const FOLLOW_EVERY_AT_MOST: Duration = Duration::from_secs(2);
/// The longest a throttled shopper waits, whatever `Retry-After` says.
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);

/// What every shopper shares.
pub struct Shop {
    pub client: ApiClient,
    pub recorder: Arc<Recorder>,
    /// Best-stocked first.
    pub product_ids: Vec<i64>,
    /// The scarcest product: buyers collide on its inventory row.
    pub hot_product: i64,
    pub run_id: String,
    pub checkout_ratio: f64,
    pub hot_product_share: f64,
    pub think_time: Duration,
    pub scenario: Scenario,
    /// Where the shoppers and the run's clock meet once every shopper has signed up:
    /// the run's duration (and a rate's arrivals) start then, so the password hashes of
    /// the sign-ups are not mixed into the load the run measures.
    pub signed_up: Barrier,
    /// Where burst shoppers wait for each other before checking out together.
    pub all_ready: Barrier,
    /// Accepted orders being followed; the run waits for them before it reports.
    pub following: TaskTracker,
    /// With `--rate`: the arrivals the shoppers take their checkouts from.
    pub arrivals: Option<Arrivals>,
    /// Whether accepted orders are followed until they settle (`--no-follow`: not).
    pub follow_orders: bool,
    /// The impatient scenario: how long a checkout's answer is waited for.
    pub patience: Duration,
    /// The impatient scenario: whether a retry carries the first attempt's key.
    pub idempotency_key: bool,
}

/// An offered rate (`--rate`), handed out by the run's arrival clock.
pub struct Arrivals {
    /// One permit per arrival; a shopper takes one before each checkout.
    pub permits: Semaphore,
}

/// Runs until `stop` turns true. A request under way is finished and recorded first,
/// so the report counts exactly what the service saw.
pub async fn run(shop: Arc<Shop>, number: usize, stop: watch::Receiver<bool>) {
    let shopper = Shopper {
        shop,
        number,
        stop,
        in_stock: Vec::new(),
    };
    let mut shopper = shopper;
    let token = shopper.sign_up().await;
    // A shopper that could not sign up shows up too, or the clock would never start.
    shopper.shop.signed_up.wait().await;
    let Some(token) = token else {
        if shopper.shop.scenario == Scenario::Burst {
            // Still show up at the barrier, or everybody else would wait forever.
            shopper.shop.all_ready.wait().await;
        }
        return;
    };
    match shopper.shop.scenario {
        Scenario::Browse => {
            while !shopper.stopped() {
                shopper.visit(&token).await;
            }
        }
        Scenario::Checkout => {
            while !shopper.stopped() {
                if !shopper.next_arrival().await {
                    break;
                }
                if shopper.fill_cart_with_own_product(&token).await {
                    shopper.check_out(&token).await;
                }
                if shopper.shop.arrivals.is_none() {
                    shopper.think().await;
                }
            }
        }
        Scenario::Burst => {
            let filled = shopper.fill_cart_with_own_product(&token).await;
            shopper.shop.all_ready.wait().await;
            if filled {
                shopper.check_out(&token).await;
            }
        }
        Scenario::Impatient => {
            let mut purchase = 0;
            while !shopper.stopped() {
                if shopper.fill_cart_with_own_product(&token).await {
                    purchase += 1;
                    shopper.check_out_impatiently(&token, purchase).await;
                }
                shopper.think().await;
            }
        }
    }
}

struct Shopper {
    shop: Arc<Shop>,
    number: usize,
    stop: watch::Receiver<bool>,
    /// Products the last listing showed in stock.
    in_stock: Vec<i64>,
}

impl Shopper {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn call(
        &self,
        operation: Operation,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Option<ApiResponse> {
        call(&self.shop, operation, method, path, token, body).await
    }

    async fn sign_up(&self) -> Option<String> {
        let email = format!(
            "shopper-{}-{}@loadgen.example",
            self.shop.run_id, self.number
        );
        let password = "loadgen-password";
        let body = json!({"email": email, "password": password, "full_name": format!("Shopper {}", self.number)});
        let registered = self
            .call(
                Operation::Register,
                Method::POST,
                "/api/auth/register",
                None,
                Some(&body),
            )
            .await?;
        if registered.status != StatusCode::CREATED {
            tracing::warn!(status = %registered.status, "a shopper could not register; it stops");
            return None;
        }
        let login = json!({"email": email, "password": password});
        for _attempt in 0..5 {
            let answer = self
                .call(
                    Operation::Login,
                    Method::POST,
                    "/api/auth/login",
                    None,
                    Some(&login),
                )
                .await?;
            if answer.status == StatusCode::TOO_MANY_REQUESTS {
                // Throttled: wait as told, as a person (or a well-behaved client) would.
                self.pause(retry_after(&answer)).await;
                continue;
            }
            return answer.body["access_token"].as_str().map(str::to_string);
        }
        None
    }

    /// One visit: browse a page, look at a few products, fill the cart, then check out
    /// or walk away.
    async fn visit(&mut self, token: &str) {
        let offset = rand::rng().random_range(0..self.shop.product_ids.len().max(1)) / 20 * 20;
        let page = self
            .call(
                Operation::Browse,
                Method::GET,
                &format!("/api/products?limit=20&offset={offset}"),
                None,
                None,
            )
            .await;
        self.in_stock = page.map(|p| in_stock(&p.body["items"])).unwrap_or_default();
        if self.think().await {
            return;
        }

        let (views, additions) = {
            let mut rng = rand::rng();
            (rng.random_range(1..=3), rng.random_range(1..=2))
        };
        for _ in 0..views {
            let product = self.pick_product();
            self.call(
                Operation::ViewProduct,
                Method::GET,
                &format!("/api/products/{product}"),
                None,
                None,
            )
            .await;
            if self.think().await {
                return;
            }
        }

        let mut in_cart = 0;
        for _ in 0..additions {
            if self.add_to_cart(token, self.pick_product()).await {
                in_cart += 1;
            }
            if self.think().await {
                return;
            }
        }

        let checks_out = rand::rng().random_bool(self.shop.checkout_ratio);
        if in_cart == 0 {
            // Nothing made it into the cart (sold out): there is nothing to buy.
        } else if checks_out {
            self.check_out(token).await;
        } else {
            self.abandon_cart(token).await;
        }
        self.think().await;
    }

    /// Checks out; a 202 is followed in the background while the shopper carries on.
    async fn check_out(&self, token: &str) {
        let body = json!({
            "shipping_address": format!("{} Load Street, Testville", self.number),
            "payment_method": "credit_card",
        });
        let started = Instant::now();
        let answer = self
            .call(
                Operation::Checkout,
                Method::POST,
                "/api/orders/checkout",
                Some(token),
                Some(&body),
            )
            .await;
        let took = started.elapsed();
        let status = answer.as_ref().map(|a| a.status);
        match (status, answer) {
            (Some(StatusCode::ACCEPTED), Some(answer)) => {
                self.shop
                    .recorder
                    .record_response(CheckoutMode::Async, took);
                if let Some(order) = answer.body["id"].as_i64() {
                    // With --no-follow the service's metrics tell the rest.
                    if self.shop.follow_orders {
                        let shop = self.shop.clone();
                        let token = token.to_string();
                        self.shop.following.spawn(follow(shop, token, order, took));
                    }
                } else {
                    self.shop.recorder.record_unsettled();
                }
            }
            (Some(StatusCode::CREATED), _) => {
                self.shop
                    .recorder
                    .record_response(CheckoutMode::Blocking, took);
                self.shop
                    .recorder
                    .record_confirmed(CheckoutMode::Blocking, took);
                self.shop.recorder.record_checkout(CheckoutOutcome::Success);
            }
            (status, _) => {
                let outcome = status.map_or(CheckoutOutcome::Error, |status| {
                    CheckoutOutcome::of_answer(status.as_u16())
                });
                self.shop.recorder.record_checkout(outcome);
                // Start afresh next time: a person would not keep a refused cart forever.
                self.abandon_cart(token).await;
            }
        }
    }

    /// One purchase, checked out by a customer who gives up on the answer after the
    /// shop's patience and presses the button again, until an answer comes in time.
    /// With an `Idempotency-Key` (the same for every press) the service knows it is the
    /// same purchase. Without one it cannot: the first press went through meanwhile, so
    /// the cart is empty (400), and the customer — who never saw that answer — puts the
    /// product back and buys again.
    async fn check_out_impatiently(&self, token: &str, purchase: usize) {
        self.shop.recorder.record_purchase();
        let key = format!("{}-{}-{purchase}", self.shop.run_id, self.number);
        let key = self.shop.idempotency_key.then_some(key.as_str());
        let body = json!({
            "shipping_address": format!("{} Load Street, Testville", self.number),
            "payment_method": "credit_card",
        });
        for _press in 0..IMPATIENT_ATTEMPTS {
            let started = Instant::now();
            let answer = self
                .shop
                .client
                .send_within(
                    Method::POST,
                    "/api/orders/checkout",
                    token,
                    &body,
                    key,
                    self.shop.patience,
                )
                .await;
            let status = answer.as_ref().ok().map(|a| a.status);
            self.shop
                .recorder
                .record(Operation::Checkout, status, started.elapsed());
            let problem = answer
                .as_ref()
                .ok()
                .and_then(|a| a.body["type"].as_str().map(str::to_string));
            match (status, problem.as_deref()) {
                // Given up on: press again.
                (None, _) => {}
                // The first press still runs: wait as told, then ask again.
                (Some(StatusCode::CONFLICT), Some("/problems/request-in-progress")) => {
                    self.pause(Duration::from_millis(500)).await;
                }
                // An earlier press went through unseen: the customer buys again.
                (Some(StatusCode::BAD_REQUEST), Some("/problems/empty-cart")) => {
                    if !self.fill_cart_with_own_product(token).await {
                        return;
                    }
                }
                (Some(StatusCode::CREATED), _) => {
                    self.shop.recorder.record_checkout(CheckoutOutcome::Success);
                    return;
                }
                // Accepted: the service's metrics follow it from here.
                (Some(StatusCode::ACCEPTED), _) => {
                    self.shop
                        .recorder
                        .record_response(CheckoutMode::Async, started.elapsed());
                    return;
                }
                (Some(status), _) => {
                    let outcome = CheckoutOutcome::of_answer(status.as_u16());
                    self.shop.recorder.record_checkout(outcome);
                    self.abandon_cart(token).await;
                    return;
                }
            }
            if self.stopped() {
                return;
            }
        }
        // Gave up for good; whatever the service did with the presses stands.
        self.abandon_cart(token).await;
    }

    /// Empties the cart.
    async fn abandon_cart(&self, token: &str) {
        self.call(
            Operation::AbandonCart,
            Method::DELETE,
            "/api/cart",
            Some(token),
            None,
        )
        .await;
    }

    /// True if the product is now in the cart.
    async fn add_to_cart(&self, token: &str, product: i64) -> bool {
        let body = json!({"product_id": product, "quantity": 1});
        self.call(
            Operation::AddToCart,
            Method::POST,
            "/api/cart/items",
            Some(token),
            Some(&body),
        )
        .await
        .is_some_and(|answer| answer.status == StatusCode::CREATED)
    }

    /// Shopper i's own product: nobody else buys it, so no row-lock waits.
    async fn fill_cart_with_own_product(&self, token: &str) -> bool {
        let product = self.shop.product_ids[self.number % self.shop.product_ids.len()];
        self.add_to_cart(token, product).await
    }

    /// The scarce product now and then (row-lock contention), else one in stock.
    fn pick_product(&self) -> i64 {
        let mut rng = rand::rng();
        if rng.random_bool(self.shop.hot_product_share)
            && (self.in_stock.is_empty() || self.in_stock.contains(&self.shop.hot_product))
        {
            return self.shop.hot_product;
        }
        self.in_stock
            .choose(&mut rng)
            .or_else(|| self.shop.product_ids.choose(&mut rng))
            .copied()
            .unwrap_or(self.shop.hot_product)
    }

    /// Waits for the next arrival (with `--rate`; at once without). False if the run
    /// ended first.
    async fn next_arrival(&self) -> bool {
        let Some(arrivals) = &self.shop.arrivals else {
            return true;
        };
        let mut stop = self.stop.clone();
        tokio::select! {
            permit = arrivals.permits.acquire() => match permit {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            },
            _ = stop.wait_for(|stopped| *stopped) => false,
        }
    }

    /// A pause of 0.5–1.5 × the think time, like a person reading the page; cut short
    /// when the run ends. True if the run has ended.
    async fn think(&self) -> bool {
        if !self.shop.think_time.is_zero() {
            let pause = self
                .shop
                .think_time
                .mul_f64(rand::rng().random_range(0.5..1.5));
            self.pause(pause).await;
        }
        self.stopped()
    }

    async fn pause(&self, pause: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }
}

/// One request, recorded.
async fn call(
    shop: &Shop,
    operation: Operation,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<ApiResponse> {
    let started = Instant::now();
    let response = shop.client.send(method, path, token, body).await;
    let status = response.as_ref().ok().map(|r| r.status);
    shop.recorder.record(operation, status, started.elapsed());
    response.ok()
}

/// Looks at an accepted order until it is confirmed or failed (bounded).
async fn follow(shop: Arc<Shop>, token: String, order: i64, answered_in: Duration) {
    let started = Instant::now();
    let path = format!("/api/orders/{order}");
    let mut pause = FOLLOW_FIRST;
    while started.elapsed() < FOLLOW_AT_MOST {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(FOLLOW_EVERY_AT_MOST);
        let Some(answer) = call(
            &shop,
            Operation::FollowOrder,
            Method::GET,
            &path,
            Some(&token),
            None,
        )
        .await
        else {
            continue;
        };
        match answer.body["status"].as_str() {
            Some("pending") | None => continue,
            Some("payment_failed") => {
                shop.recorder
                    .record_checkout(CheckoutOutcome::PaymentDeclined);
                return;
            }
            Some(_) => {
                // The service measured acceptance → confirmation; add the request's own time.
                let processing = answer.body["processing_time_ms"].as_u64().unwrap_or(0);
                let confirmed_after = answered_in + Duration::from_millis(processing);
                shop.recorder
                    .record_confirmed(CheckoutMode::Async, confirmed_after);
                shop.recorder.record_checkout(CheckoutOutcome::Success);
                return;
            }
        }
    }
    shop.recorder.record_unsettled();
}

/// The ids of the listed products that are in stock.
fn in_stock(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["stock"].as_i64().unwrap_or(0) > 0)
        .filter_map(|item| item["id"].as_i64())
        .collect()
}

/// How long a 429 asks to wait.
fn retry_after(answer: &ApiResponse) -> Duration {
    answer
        .retry_after
        .unwrap_or(Duration::from_secs(1))
        .min(LONGEST_BACKOFF)
}
