//! One simulated shopper: signs up, then browses, looks at products, fills a cart and
//! checks out (or abandons the cart), with think time between the steps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Barrier, watch};

use super::Scenario;
use super::report::Recorder;
use crate::client::{ApiClient, ApiResponse};

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
    /// Where burst shoppers wait for each other before checking out together.
    pub all_ready: Barrier,
}

/// Runs until `stop` turns true. A request under way is finished and recorded first,
/// so the report counts exactly what the service saw.
pub async fn run(shop: Arc<Shop>, number: usize, stop: watch::Receiver<bool>) {
    let shopper = Shopper { shop, number, stop };
    let Some(token) = shopper.sign_up().await else {
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
                shopper.buy_own_product(&token).await;
                shopper.think().await;
            }
        }
        Scenario::Burst => {
            shopper.fill_cart_with_own_product(&token).await;
            shopper.shop.all_ready.wait().await;
            shopper.check_out(&token).await;
        }
    }
}

struct Shopper {
    shop: Arc<Shop>,
    number: usize,
    stop: watch::Receiver<bool>,
}

impl Shopper {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Option<ApiResponse> {
        let started = Instant::now();
        let response = self.shop.client.send(method, path, token, body).await;
        let status = response.as_ref().ok().map(|r| r.status);
        self.shop
            .recorder
            .record(operation, status, started.elapsed());
        if operation == "checkout" {
            self.shop.recorder.record_checkout(status);
        }
        response.ok()
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
                "register",
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
        let answer = self
            .call("login", Method::POST, "/api/auth/login", None, Some(&login))
            .await?;
        answer.body["access_token"].as_str().map(str::to_string)
    }

    /// One visit: browse a page, look at a few products, fill the cart, then check out
    /// or walk away.
    async fn visit(&self, token: &str) {
        let offset = rand::rng().random_range(0..self.shop.product_ids.len().max(1)) / 20 * 20;
        self.call(
            "browse",
            Method::GET,
            &format!("/api/products?limit=20&offset={offset}"),
            None,
            None,
        )
        .await;
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
                "view_product",
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

        for _ in 0..additions {
            self.add_to_cart(token, self.pick_product()).await;
            if self.think().await {
                return;
            }
        }

        let checks_out = rand::rng().random_bool(self.shop.checkout_ratio);
        if checks_out {
            let body = json!({"shipping_address": format!("{} Load Street, Testville", self.number), "payment_method": "credit_card"});
            self.call(
                "checkout",
                Method::POST,
                "/api/orders/checkout",
                Some(token),
                Some(&body),
            )
            .await;
        } else {
            self.call(
                "abandon_cart",
                Method::DELETE,
                "/api/cart",
                Some(token),
                None,
            )
            .await;
        }
        self.think().await;
    }

    async fn check_out(&self, token: &str) {
        let body = json!({
            "shipping_address": format!("{} Load Street, Testville", self.number),
            "payment_method": "credit_card",
        });
        self.call(
            "checkout",
            Method::POST,
            "/api/orders/checkout",
            Some(token),
            Some(&body),
        )
        .await;
    }

    async fn add_to_cart(&self, token: &str, product: i64) {
        let body = json!({"product_id": product, "quantity": 1});
        self.call(
            "add_to_cart",
            Method::POST,
            "/api/cart/items",
            Some(token),
            Some(&body),
        )
        .await;
    }

    /// Shopper i's own product: nobody else buys it, so no row-lock waits.
    async fn fill_cart_with_own_product(&self, token: &str) {
        let product = self.shop.product_ids[self.number % self.shop.product_ids.len()];
        self.add_to_cart(token, product).await;
    }

    async fn buy_own_product(&self, token: &str) {
        self.fill_cart_with_own_product(token).await;
        self.check_out(token).await;
    }

    fn pick_product(&self) -> i64 {
        let mut rng = rand::rng();
        if rng.random_bool(self.shop.hot_product_share) {
            return self.shop.hot_product;
        }
        let index = rng.random_range(0..self.shop.product_ids.len());
        self.shop.product_ids[index]
    }

    /// A pause of 0.5–1.5 × the think time, like a person reading the page; cut short
    /// when the run ends. True if the run has ended.
    async fn think(&self) -> bool {
        if !self.shop.think_time.is_zero() {
            let pause = self
                .shop
                .think_time
                .mul_f64(rand::rng().random_range(0.5..1.5));
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        }
        self.stopped()
    }
}
