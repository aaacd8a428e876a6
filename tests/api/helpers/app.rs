//! The app in this process, on a free port against a fresh database: its settings, the
//! requests a client makes, and the set-ups the tests share.

use std::sync::Arc;
use std::time::Duration;

use ecommerce_monolith::checkout::workers::Workers;
use ecommerce_monolith::config::Settings;
use ecommerce_monolith::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::process::Process;
use super::{
    ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, PASSWORD, SmtpCapture, TestDatabase, eventually,
    sum_of,
};

/// Test settings: the production parser fed with a test environment, so tests run the
/// same configuration code as the service. Delays are zero and payments always pass.
pub fn test_environment(database_url: &str, smtp_port: u16) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url.to_string()),
        ("BIND_ADDR", "127.0.0.1:0".to_string()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("ADMIN_EMAIL", ADMIN_EMAIL.to_string()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ("SMTP_HOST", "127.0.0.1".to_string()),
        ("SMTP_PORT", smtp_port.to_string()),
        ("SMTP_TIMEOUT_MS", "3000".to_string()),
        ("PAYMENT_DELAY_MS", "0".to_string()),
        ("PAYMENT_SUCCESS_RATE", "1".to_string()),
        ("EMAIL_DELAY_MS", "0".to_string()),
        ("DB_MAX_CONNECTIONS", "10".to_string()),
        ("DB_ACQUIRE_TIMEOUT_SECONDS", "10".to_string()),
        ("OTEL_SDK_DISABLED", "true".to_string()),
        ("SHUTDOWN_METRICS_LINGER_SECONDS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn settings_from(environment: &[(String, String)]) -> Settings {
    let pairs: Vec<(&str, &str)> = environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Settings::from_source(&pairs.as_slice()).expect("valid test settings")
}

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub db: PgPool,
    /// Shared by the replicas of an app.
    pub smtp: Arc<SmtpCapture>,
    /// Set for apps started as a separate process.
    pub(super) process: Option<Process>,
    /// Set for an app whose outbox the test runs itself ([`spawn_app_running_jobs_by_hand`]).
    jobs: Option<Workers>,
    _database: Arc<TestDatabase>,
}

/// The app with the default test environment.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The app with some variables of the test environment changed, e.g.
/// `&[("PAYMENT_SUCCESS_RATE", "0")]`.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_in_process(overrides, true).await
}

/// The app without its outbox workers: the test runs the due jobs itself, when it
/// chooses and to the end, with [`TestApp::run_due_jobs`] — no waiting, no races.
pub async fn spawn_app_running_jobs_by_hand(overrides: &[(&str, &str)]) -> TestApp {
    spawn_in_process(overrides, false).await
}

async fn spawn_in_process(overrides: &[(&str, &str)], background_jobs: bool) -> TestApp {
    let database = TestDatabase::create().await;
    let smtp = SmtpCapture::start().await;
    let mut environment = test_environment(&database.url, smtp.port);
    for (key, value) in overrides {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_string(), value.to_string()));
    }
    let mut settings = settings_from(&environment);
    settings.workers.in_background = background_jobs;
    let app = Application::build(&settings, None)
        .await
        .expect("the app builds");
    let address = format!("http://{}", app.local_addr());
    let jobs = (!background_jobs).then(|| app.workers());
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let mut test_app = TestApp::new(address, Arc::new(database), Arc::new(smtp), None).await;
    test_app.jobs = jobs;
    test_app
}

impl TestApp {
    pub(super) async fn new(
        address: String,
        database: Arc<TestDatabase>,
        smtp: Arc<SmtpCapture>,
        process: Option<Process>,
    ) -> Self {
        TestApp {
            address,
            database_url: database.url.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            // Small: two tests at a time, each with up to three app processes, must fit
            // in Postgres' default 100 connections.
            db: sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&database.url)
                .await
                .expect("test pool"),
            smtp,
            process,
            jobs: None,
            _database: database,
        }
    }

    /// Runs every outbox job that is due, and those they enqueue, to the end; returns
    /// how many attempts it made.
    pub async fn run_due_jobs(&self) -> usize {
        self.jobs
            .as_ref()
            .expect("only for apps from spawn_app_running_jobs_by_hand")
            .run_due()
            .await
            .expect("the jobs ran")
    }

    /// The most common start of a checkout test: Alice, with `quantity` of a kettle
    /// (five in stock, 19.99 each) in her cart. Returns her token and the kettle's id.
    pub async fn alice_with_kettles(&self, quantity: i64) -> (String, i64) {
        let admin = self.admin_token().await;
        let alice = self.customer("alice@example.com").await;
        let kettle = self.create_product(&admin, "Kettle", "19.99", 5).await;
        expect_json(
            self.add_to_cart(&alice, kettle, quantity).await,
            StatusCode::CREATED,
        )
        .await;
        (alice, kettle)
    }

    /// `count` new customers (e-mails `<tag><i>@example.com`), each with one `product`
    /// in the cart; returns their tokens.
    pub async fn buyers(&self, count: usize, product: i64, tag: &str) -> Vec<String> {
        futures::future::join_all((0..count).map(|i| async move {
            let token = self.customer(&format!("{tag}{i}@example.com")).await;
            expect_json(
                self.add_to_cart(&token, product, 1).await,
                StatusCode::CREATED,
            )
            .await;
            token
        }))
        .await
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.address));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.send_json(Method::POST, path, token, body).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.send_json(Method::PATCH, path, token, body).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.send_json(Method::PUT, path, token, body).await
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Response {
        self.request(method, path, token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::DELETE, path, token)
            .send()
            .await
            .expect("request")
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let response = self
            .post(
                "/api/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        let body = expect_json(response, StatusCode::OK).await;
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers a customer and returns their token.
    pub async fn customer(&self, email: &str) -> String {
        let response = self
            .post(
                "/api/auth/register",
                None,
                &json!({"email": email, "password": PASSWORD, "full_name": "Test Customer"}),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await;
        self.login(email, PASSWORD).await
    }

    pub async fn create_category(&self, admin: &str, name: &str) -> i64 {
        let response = self
            .post(
                "/api/products/categories",
                Some(admin),
                &json!({"name": name}),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await["id"]
            .as_i64()
            .expect("category id")
    }

    /// A product in a fresh category; returns its id.
    pub async fn create_product(&self, admin: &str, name: &str, price: &str, stock: i64) -> i64 {
        let category = self
            .create_category(admin, &format!("Category of {name}"))
            .await;
        let response = self
            .post(
                "/api/products",
                Some(admin),
                &json!({"name": name, "price": price, "category_id": category, "initial_stock": stock}),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await["id"]
            .as_i64()
            .expect("product id")
    }

    pub async fn add_to_cart(&self, token: &str, product_id: i64, quantity: i64) -> Response {
        self.post(
            "/api/cart/items",
            Some(token),
            &json!({"product_id": product_id, "quantity": quantity}),
        )
        .await
    }

    pub async fn checkout(&self, token: &str) -> Response {
        self.post("/api/orders/checkout", Some(token), &checkout_body())
            .await
    }

    /// `POST /api/orders/checkout` with `body` and an `Idempotency-Key`.
    pub async fn checkout_with_key(&self, token: &str, key: &str, body: &Value) -> Response {
        self.request(Method::POST, "/api/orders/checkout", Some(token))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("checkout")
    }

    /// Switches the running service's checkout mode, as an admin would.
    pub async fn set_checkout_mode(&self, admin: &str, mode: &str) {
        let answer = expect_json(
            self.put(
                "/api/admin/checkout-mode",
                Some(admin),
                &json!({"mode": mode}),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(answer["mode"], mode);
    }

    /// A checkout inside the caller's trace `trace_id`, sampled (flags 01).
    pub async fn checkout_in_trace(&self, token: &str, trace_id: &str) -> Response {
        self.request(Method::POST, "/api/orders/checkout", Some(token))
            .header("traceparent", traceparent(trace_id, true))
            .json(&checkout_body())
            .send()
            .await
            .expect("checkout")
    }

    /// A product's reviews, inside a trace the caller's sampler dropped (flags 00).
    pub async fn reviews_in_unsampled_trace(&self, product_id: i64, trace_id: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/api/products/{product_id}/reviews"),
            None,
        )
        .header("traceparent", traceparent(trace_id, false))
        .send()
        .await
        .expect("reviews")
    }

    pub async fn stock_of(&self, product_id: i64) -> (i32, i32) {
        sqlx::query_as("SELECT quantity, reserved FROM inventory WHERE product_id = $1")
            .bind(product_id)
            .fetch_one(&self.db)
            .await
            .expect("inventory row")
    }

    /// Waits until `expected` orders are confirmed.
    pub async fn wait_for_confirmed_orders(&self, expected: i64, within: Duration) {
        eventually(within, "the orders confirmed", || async {
            let confirmed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'confirmed'")
                    .fetch_one(&self.db)
                    .await
                    .expect("orders");
            (confirmed == expected).then_some(())
        })
        .await;
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .expect("count")
    }
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts a problem-details answer of the given status and type; returns the body.
pub async fn expect_problem(response: Response, status: StatusCode, kind: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let has_trace_header = response.headers().contains_key("x-trace-id");
    let body = expect_json(response, status).await;
    assert_eq!(content_type, "application/problem+json", "body: {body}");
    assert_eq!(body["type"], format!("/problems/{kind}"), "body: {body}");
    assert_eq!(body["status"], status.as_u16(), "body: {body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "body: {body}"
    );
    assert!(has_trace_header, "X-Trace-Id missing");
    assert_eq!(
        body["trace_id"].as_str().map(str::len),
        Some(32),
        "trace_id missing: {body}"
    );
    body
}

/// The gateway's ledger against the shop's orders, each figure read on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    /// Charges the gateway approved, refunded ones included (its own table).
    pub approved: i64,
    /// Approved charges that are the payment of an order that exists and was not
    /// cancelled (the orders and payments tables).
    pub with_order: i64,
    /// Approved charges given back.
    pub refunded: i64,
    /// Approved charges, not refunded, that no order's payment is: money taken for
    /// nothing (counted from the tables, and the same in the admin's reconciliation).
    pub without_order: i64,
}

impl Ledger {
    /// `orders` charges, each the payment of its order; nothing refunded, nothing lost.
    pub fn paid(orders: i64) -> Self {
        Self {
            approved: orders,
            with_order: orders,
            refunded: 0,
            without_order: 0,
        }
    }
}

impl TestApp {
    /// Every cent accounted for, as `expected`: the ledger's figures are what the test
    /// says they are, they balance (approved = with order + refunded + without order),
    /// the admin's reconciliation sees the same charges without an order, and no order
    /// is paid twice (by two payments, or by two approved charges made for it).
    pub async fn assert_ledger(&self, expected: Ledger) -> Ledger {
        let ledger: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE g.status <> 'declined'), \
                    count(*) FILTER (WHERE g.status = 'approved' AND EXISTS ( \
                        SELECT 1 FROM payments p JOIN orders o ON o.id = p.order_id \
                        WHERE p.transaction_id = g.transaction_id \
                          AND o.status IN ('confirmed', 'shipped', 'delivered'))), \
                    count(*) FILTER (WHERE g.status = 'refunded'), \
                    count(*) FILTER (WHERE g.status = 'approved' AND NOT EXISTS ( \
                        SELECT 1 FROM payments p WHERE p.transaction_id = g.transaction_id)) \
             FROM gateway_charges g",
        )
        .fetch_one(&self.db)
        .await
        .expect("the gateway's ledger against the orders");
        let ledger = Ledger {
            approved: ledger.0,
            with_order: ledger.1,
            refunded: ledger.2,
            without_order: ledger.3,
        };
        assert_eq!(ledger, expected, "the ledger");
        assert_eq!(
            ledger.approved,
            ledger.with_order + ledger.refunded + ledger.without_order,
            "approved = with order + refunded + without order: {ledger:?}"
        );
        let paid_twice: Vec<i64> = sqlx::query_scalar(
            "SELECT order_id FROM payments GROUP BY order_id HAVING count(*) > 1 \
             UNION SELECT order_id FROM gateway_charges WHERE status <> 'declined' \
             GROUP BY order_id HAVING count(*) > 1",
        )
        .fetch_all(&self.db)
        .await
        .expect("orders paid twice");
        assert!(paid_twice.is_empty(), "orders paid twice: {paid_twice:?}");
        let admin = self.admin_token().await;
        let reconciliation = expect_json(
            self.get("/api/admin/reconciliation", Some(&admin)).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            reconciliation["without_order"], ledger.without_order,
            "the admin's reconciliation: {reconciliation}"
        );
        ledger
    }

    /// [`TestApp::assert_ledger`], and the service's own counters agree: every charge
    /// without an order was counted as an orphaned payment when it happened (less those
    /// a retry with the same key attached to an order later). Needs an app started with
    /// `spawn_process` (its own metrics).
    pub async fn assert_ledger_counted(&self, expected: Ledger) -> Ledger {
        let ledger = self.assert_ledger(expected).await;
        let metrics = self.metrics().await;
        let orphans = sum_of(&metrics, "payments_orphaned_total")
            - sum_of(&metrics, "payments_reattached_total");
        assert_eq!(
            orphans as i64, ledger.without_order,
            "orphaned payments counted by the service"
        );
        ledger
    }

    /// The e-mails the mail server received about each order, by subject: how many
    /// times each `Message-ID` arrived.
    pub fn emails_per_message_id(&self) -> std::collections::BTreeMap<String, usize> {
        let mut count = std::collections::BTreeMap::new();
        for mail in self.smtp.messages() {
            *count.entry(mail.message_id()).or_insert(0) += 1;
        }
        count
    }
}

/// The body of a checkout: an address and a card.
pub fn checkout_body() -> Value {
    json!({"shipping_address": "1 Test Street\n12345 Testville", "payment_method": "credit_card"})
}

/// A W3C `traceparent` for `trace_id` (32 hex digits), with a fixed parent span.
fn traceparent(trace_id: &str, sampled: bool) -> String {
    let flags = if sampled { "01" } else { "00" };
    format!("00-{trace_id}-00f067aa0ba902b7-{flags}")
}
