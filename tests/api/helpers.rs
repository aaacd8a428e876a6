//! The test harness: every test gets its own app on a free port, its own fresh
//! database on the real Postgres, and a real SMTP listener that captures the mail.
//!
//! `DATABASE_URL` points at the server to use (default: the local one); each test
//! creates `emtest_<uuid>` there and drops it afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecommerce_monolith::config::Settings;
use ecommerce_monolith::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::otlp::OtlpReceiver;

pub const ADMIN_EMAIL: &str = "admin@shop.test";
pub const ADMIN_PASSWORD: &str = "admin password for tests";
pub const JWT_SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
pub const PASSWORD: &str = "customer password";

/// The Postgres server the tests use, without a database name.
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    match url.rsplit_once('/') {
        Some((server, _database)) if server.contains("://") && !server.ends_with('/') => {
            server.to_string()
        }
        _ => url,
    }
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// The name of a database that does not exist yet: the app creates it. Dropped
    /// afterwards like the others.
    pub fn not_yet_created() -> Self {
        let server = server_url();
        let name = format!("emtest_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: format!("{server}/{name}"),
            name,
            server,
        }
    }

    /// A database on another server (a Postgres of the test's own, say).
    pub async fn create_on(server: &str) -> Self {
        let name = format!("emtest_{}", uuid::Uuid::new_v4().simple());
        let server = server.to_string();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("cannot connect to Postgres: is it running, is DATABASE_URL right?");
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("create test database");
        Self {
            url: format!("{server}/{name}"),
            name,
            server,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let server = self.server.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&format!("{server}/postgres")).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A captured e-mail: the SMTP envelope and the raw message.
#[derive(Debug, Clone)]
pub struct CapturedMail {
    pub recipients: Vec<String>,
    pub data: String,
}

/// A minimal but real SMTP server on a free port, recording every message it accepts.
pub struct SmtpCapture {
    pub port: u16,
    messages: Arc<Mutex<Vec<CapturedMail>>>,
}

impl SmtpCapture {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let port = listener.local_addr().expect("smtp addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_smtp(stream, sink.clone()));
            }
        });
        Self { port, messages }
    }

    pub fn messages(&self) -> Vec<CapturedMail> {
        self.messages.lock().expect("smtp lock").clone()
    }
}

async fn serve_smtp(stream: tokio::net::TcpStream, sink: Arc<Mutex<Vec<CapturedMail>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut recipients = Vec::new();
    let _ = write.write_all(b"220 smtp.test ESMTP ready\r\n").await;
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 smtp.test\r\n",
            "MAIL" => {
                recipients.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                recipients.push(
                    line[line.find(':').map_or(0, |i| i + 1)..]
                        .trim()
                        .to_string(),
                );
                b"250 OK\r\n"
            }
            "DATA" => {
                let _ = write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await;
                let mut data = String::new();
                while let Ok(Some(body_line)) = lines.next_line().await {
                    if body_line == "." {
                        break;
                    }
                    data.push_str(&body_line);
                    data.push('\n');
                }
                sink.lock().expect("smtp lock").push(CapturedMail {
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                b"250 OK queued\r\n"
            }
            "RSET" | "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"502 command not implemented\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// A port on which nothing listens (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

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
    process: Option<Process>,
    _database: Arc<TestDatabase>,
}

/// The app with the default test environment.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The app with some variables of the test environment changed, e.g.
/// `&[("PAYMENT_SUCCESS_RATE", "0")]`.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create().await;
    let smtp = SmtpCapture::start().await;
    let mut environment = test_environment(&database.url, smtp.port);
    for (key, value) in overrides {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_string(), value.to_string()));
    }
    let settings = settings_from(&environment);
    let app = Application::build(&settings, None)
        .await
        .expect("the app builds");
    let address = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    TestApp::new(address, Arc::new(database), Arc::new(smtp), None).await
}

impl TestApp {
    async fn new(
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
            _database: database,
        }
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
        self.request(Method::POST, path, token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request(Method::PATCH, path, token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request(Method::PUT, path, token)
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

/// The binary's process, for tests that start the real executable.
pub struct Process {
    child: std::process::Child,
    output: Arc<Mutex<Vec<String>>>,
    /// What it was started with, to start it again.
    environment: Vec<(String, String)>,
}

/// The real binary, started as a separate process: the only way to observe its global
/// telemetry (tracing subscriber, metrics recorder) in isolation from other tests.
/// Its log output is JSON, collected line by line.
pub async fn spawn_process(overrides: &[(&str, &str)]) -> TestApp {
    spawn_process_on(&server_url(), overrides).await
}

/// [`spawn_process`] against another Postgres server.
pub async fn spawn_process_on(server: &str, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create_on(server).await;
    let smtp = SmtpCapture::start().await;
    let mut environment = test_environment(&database.url, smtp.port);
    environment.push(("LOG_FORMAT".into(), "json".into()));
    for (key, value) in overrides {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_string(), value.to_string()));
    }
    let (process, address) = start_binary(environment).await;
    TestApp::new(address, Arc::new(database), Arc::new(smtp), Some(process)).await
}

/// `count` processes of the real binary started at the same instant on one database
/// that does not exist yet, as replicas behind a load balancer would be. Each has a pool
/// of 5 connections, so that two such tests fit in Postgres' default 100.
pub async fn spawn_replicas(count: usize, overrides: &[(&str, &str)]) -> Vec<TestApp> {
    let database = Arc::new(TestDatabase::not_yet_created());
    let smtp = Arc::new(SmtpCapture::start().await);
    let mut environment = test_environment(&database.url, smtp.port);
    environment.retain(|(k, _)| k != "DB_MAX_CONNECTIONS");
    environment.push(("DB_MAX_CONNECTIONS".into(), "5".into()));
    environment.push(("LOG_FORMAT".into(), "json".into()));
    for (key, value) in overrides {
        environment.retain(|(k, _)| k != key);
        environment.push((key.to_string(), value.to_string()));
    }
    let started =
        futures::future::join_all((0..count).map(|_| start_binary(environment.clone()))).await;
    let mut replicas = Vec::new();
    for (process, address) in started {
        replicas.push(TestApp::new(address, database.clone(), smtp.clone(), Some(process)).await);
    }
    replicas
}

/// Starts `ecommerce-monolith serve` with exactly `environment`; returns the process and
/// the address it listens on.
async fn start_binary(environment: Vec<(String, String)>) -> (Process, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecommerce-monolith"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(environment.clone())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");

    let output = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let output = output.clone();
        let address_tx = address_tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "listening"
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = address_tx.send(address.to_string());
                }
                output.lock().expect("output lock").push(line);
            }
        });
    }
    let address =
        tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join");
    let Ok(address) = address else {
        let _ = child.kill();
        panic!(
            "the app did not start:\n{}",
            output.lock().expect("output lock").join("\n")
        );
    };
    let process = Process {
        child,
        output,
        environment,
    };
    (process, format!("http://{address}"))
}

impl TestApp {
    /// SIGKILL — no shutdown, no flush, a worker dropped mid-job — then the same binary
    /// again on the same database (on a new port).
    pub async fn kill_and_restart(&mut self) {
        let environment = self.process().environment.clone();
        let killed = self.process().child.kill();
        assert!(killed.is_ok(), "kill: {killed:?}");
        let _ = self.process().child.wait();
        let (process, address) = start_binary(environment).await;
        self.process = Some(process);
        self.address = address;
    }
}

impl TestApp {
    fn process(&mut self) -> &mut Process {
        self.process
            .as_mut()
            .expect("only for apps started with spawn_process")
    }

    /// Every line the process printed so far.
    pub fn output(&mut self) -> Vec<String> {
        self.process().output.lock().expect("output lock").clone()
    }

    /// Sends SIGTERM (what `docker stop` sends) and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.process().child.id();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        for _ in 0..300 {
            if let Some(exit) = self.process().child.try_wait().expect("wait") {
                return exit;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the app did not exit within 15 s of SIGTERM");
    }

    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics body")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a metric in Prometheus text format over the series that carry `labels`
/// (summed, like PromQL's `sum`; `None` if there is no such series), e.g.
/// `sample(&text, "checkouts_total", &[("outcome", "success")])`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels.iter().all(|(k, v)| {
                    series_labels
                        .split(',')
                        .any(|l| l == format!("{k}=\"{v}\""))
                });
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The sum of every series of one metric (all label values).
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Runs the binary as a command-line tool and returns its output; fails the test if it
/// cannot start.
pub async fn run_tool(args: &[&str], environment: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ecommerce-monolith"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_SDK_DISABLED", "true")
        .envs(environment.iter().copied())
        .output()
        .await
        .expect("run the binary")
}

impl TestApp {
    /// Every cent accounted for: each charge the gateway approved (its ledger) is a
    /// confirmed order, an orphaned payment the service counted, or a refund. Needs an
    /// app started with `spawn_process` (its own metrics).
    pub async fn assert_every_cent_accounted(&self) {
        let orphans = sum_of(&self.metrics().await, "payments_orphaned_total") as i64;
        self.assert_charges_reconcile(orphans).await;
    }

    /// [`TestApp::assert_every_cent_accounted`] for an app without its own metrics: the
    /// test says how many orphaned payments it caused (the 502s it saw, say).
    pub async fn assert_charges_reconcile(&self, orphans: i64) {
        let (approved, refunded): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status <> 'declined'), \
                    count(*) FILTER (WHERE status = 'refunded') FROM gateway_charges",
        )
        .fetch_one(&self.db)
        .await
        .expect("the gateway's ledger");
        let confirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE status IN ('confirmed', 'shipped', 'delivered')",
        )
        .fetch_one(&self.db)
        .await
        .expect("orders");
        assert_eq!(
            approved,
            confirmed + orphans + refunded,
            "charges approved {approved} != confirmed orders {confirmed} + orphans counted \
             {orphans} + refunds {refunded}"
        );
    }

    /// The demo catalog, created with `ecommerce-monolith seed` like a user would.
    pub async fn seed(&self) {
        let output = run_tool(&["seed"], &[("DATABASE_URL", &self.database_url)]).await;
        assert!(output.status.success(), "seed failed: {output:?}");
    }

    /// `ecommerce-monolith faults …` against this app, as the admin.
    pub async fn faults(&self, args: &[&str]) -> serde_json::Value {
        self.admin_tool("faults", args).await
    }

    /// `ecommerce-monolith <command> …` (`faults`, `mode`) against this app, as the admin.
    pub async fn admin_tool(&self, command: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec![command];
        all.extend_from_slice(args);
        let output = run_tool(
            &all,
            &[
                ("BASE_URL", &self.address),
                ("ADMIN_EMAIL", ADMIN_EMAIL),
                ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
        )
        .await;
        assert!(output.status.success(), "{command} failed: {output:?}");
        serde_json::from_slice(&output.stdout).expect("the tool prints JSON")
    }
}

/// The real binary exporting every span to `receiver` (batches every 100 ms), with
/// `overrides` on top.
pub async fn traced_app(receiver: &OtlpReceiver, overrides: &[(&str, &str)]) -> TestApp {
    let endpoint = receiver.endpoint();
    let mut environment = vec![
        ("OTEL_SDK_DISABLED", "false"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    environment.extend_from_slice(overrides);
    spawn_process(&environment).await
}

fn checkout_body() -> Value {
    json!({"shipping_address": "1 Test Street\n12345 Testville", "payment_method": "credit_card"})
}

/// A W3C `traceparent` for `trace_id` (32 hex digits), with a fixed parent span.
fn traceparent(trace_id: &str, sampled: bool) -> String {
    let flags = if sampled { "01" } else { "00" };
    format!("00-{trace_id}-00f067aa0ba902b7-{flags}")
}
