//! What the shop page at `/` needs from the service: its files (cacheable, with a
//! Content-Security-Policy), its settings, the checkout's `Server-Timing` and
//! `traceresponse`, and the customer's own cancel. The page itself is driven in a real
//! browser in `tests/external/storefront.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    self, CHECKOUT_STEPS, Ledger, black_hole, closed_port, eventually, expect_json, expect_problem,
    spawn_app, spawn_app_with,
};

/// `(name, milliseconds)` of each `Server-Timing` entry.
fn server_timing(response: &reqwest::Response) -> Vec<(String, f64)> {
    helpers::server_timing(response)
        .into_iter()
        .map(|entry| (entry.name, entry.duration))
        .collect()
}

/// The names of the `Server-Timing` entries, in order.
fn timed_step_names(response: &reqwest::Response) -> Vec<String> {
    server_timing(response)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test]
async fn the_blocking_checkout_times_each_of_its_steps_for_the_browser() {
    let app = spawn_app_with(&[("PAYMENT_DELAY_MS", "150"), ("EMAIL_DELAY_MS", "250")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let sent = Instant::now();
    let response = app.checkout(&alice).await;
    let took = sent.elapsed();
    assert_eq!(response.status(), StatusCode::CREATED);

    let timings = server_timing(&response);
    let names: Vec<&str> = timings.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names, CHECKOUT_STEPS,
        "exactly the steps that ran, in order"
    );
    let ms = |step: &str| timings.iter().find(|(n, _)| n == step).map(|(_, ms)| *ms);
    assert!(ms("process_payment") >= Some(150.0), "{timings:?}");
    assert!(ms("send_email") >= Some(250.0), "{timings:?}");
    let total: f64 = timings.iter().map(|(_, ms)| ms).sum();
    assert!(
        total <= took.as_secs_f64() * 1000.0,
        "the steps ({total} ms) fit in the request ({took:?})"
    );

    // The server span, for the browser: the same trace as X-Trace-Id.
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let trace_response = response.headers()["traceresponse"].to_str().unwrap();
    let parts: Vec<&str> = trace_response.split('-').collect();
    assert_eq!(parts.len(), 4, "{trace_response}");
    assert_eq!((parts[0], parts[1]), ("00", trace_id.as_str()));
    assert_eq!(parts[2].len(), 16, "a span id");
}

#[tokio::test]
async fn a_refused_checkout_times_only_the_steps_that_ran() {
    let app = spawn_app_with(&[("PAYMENT_SUCCESS_RATE", "0")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let response = app.checkout(&alice).await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let names = timed_step_names(&response);
    assert_eq!(
        names,
        CHECKOUT_STEPS[..6],
        "nothing after the declined payment"
    );
}

#[tokio::test]
async fn the_asynchronous_checkout_times_its_own_short_transaction() {
    let app = spawn_app_with(&[("CHECKOUT_MODE", "async")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let response = app.checkout(&alice).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let names = timed_step_names(&response);
    assert_eq!(
        names,
        ["validate_cart", "check_inventory", "place_order", "commit"]
    );
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_revalidated_cheaply() {
    let app = spawn_app().await;
    let page = app.get("/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let etag = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(headers["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");

    let again = app
        .request(reqwest::Method::GET, "/", None)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    expect_problem(
        app.get("/assets/no-such-file.js", None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn the_page_learns_its_links_and_the_demo_customer() {
    let app = spawn_app_with(&[
        (
            "STOREFRONT_OTLP_TRACES_URL",
            "http://localhost:4318/v1/traces",
        ),
        ("CHECKOUT_MODE", "async"),
    ])
    .await;
    let config = expect_json(
        app.get("/api/storefront/config", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(config["checkout_mode"], "async");
    assert_eq!(config["jaeger_url"], "http://localhost:16686");
    assert_eq!(config["grafana_url"], "http://localhost:3000");
    assert_eq!(
        config["browser_traces_url"],
        "http://localhost:4318/v1/traces"
    );
    assert_eq!(config["demo_customer"]["email"], "demo@example.com");
    // The browser may export to that origin, and to no other.
    let page = app.get("/", None).await;
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("connect-src 'self' http://localhost:4318;"),
        "{policy}"
    );
}

#[tokio::test]
async fn a_customer_cancels_a_confirmed_order_and_is_refunded() {
    let app = spawn_app().await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    let order = expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;
    let path = format!("/api/orders/{}/cancel", order["id"]);

    let mallory = app.customer("mallory@example.com").await;
    expect_problem(
        app.post(&path, Some(&mallory), &json!({})).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;

    let cancelled = expect_json(
        app.post(&path, Some(&alice), &json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["payment"]["status"], "refunded");
    assert_eq!(app.stock_of(kettle).await, (5, 0));
    expect_problem(
        app.post(&path, Some(&alice), &json!({})).await,
        StatusCode::CONFLICT,
        "invalid-transition",
    )
    .await;
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 1,
        without_order: 0,
    })
    .await;
}

#[tokio::test]
async fn the_demo_customer_exists_after_seeding() {
    let app = spawn_app().await;
    app.seed().await;
    let token = app.login("demo@example.com", "demo shopper").await;
    let me = expect_json(app.get("/api/auth/me", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(me["role"], "customer");
    // Seeding again leaves one account, with the configured password.
    app.seed().await;
    app.login("demo@example.com", "demo shopper").await;
    assert_eq!(app.count("users WHERE email = 'demo@example.com'").await, 1);
}

/// One round for the modules: the page names every module it imports as a
/// `modulepreload`; the favicon is asked for once (the header's mark is inline); the
/// assets and the JSON go gzipped to a client that asks.
#[tokio::test]
async fn the_page_asks_for_every_module_at_once_and_gets_them_gzipped() {
    let app = spawn_app().await;
    let html = app.get("/", None).await.text().await.expect("the page");
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut modules: Vec<String> = std::fs::read_dir(&web)
        .expect("web/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".js") && name != "app.js")
        .collect();
    modules.sort();
    assert!(modules.len() >= 10, "{modules:?}");
    for module in &modules {
        let preload = format!("<link rel=\"modulepreload\" href=\"/assets/{module}\">");
        assert!(html.contains(&preload), "{module} is not preloaded");
    }
    assert_eq!(
        html.matches("favicon.svg").count(),
        1,
        "one favicon request"
    );

    let plain = app
        .get("/assets/checkout.js", None)
        .await
        .bytes()
        .await
        .expect("the module");
    for path in ["/assets/checkout.js", "/openapi.json"] {
        let zipped = app
            .request(reqwest::Method::GET, path, None)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("an answer");
        assert_eq!(zipped.status(), StatusCode::OK);
        assert_eq!(zipped.headers()["content-encoding"], "gzip", "{path}");
        if path == "/assets/checkout.js" {
            let size = zipped.bytes().await.expect("the module").len();
            assert!(size * 2 < plain.len(), "{size} of {} bytes", plain.len());
        }
    }
}

/// The page links only to the tools that answer the service: one that does (another
/// app stands in for Jaeger, checked at its own address while the browser is sent to
/// the public one), one whose port is closed, one that accepts and never answers.
#[tokio::test]
async fn the_page_links_only_to_the_tools_that_answer() {
    let jaeger = spawn_app().await;
    let grafana = format!("http://127.0.0.1:{}", closed_port().await);
    let prometheus = format!("http://127.0.0.1:{}", black_hole().await);
    let app = spawn_app_with(&[
        ("STOREFRONT_JAEGER_URL", "http://localhost:16686"),
        ("STOREFRONT_JAEGER_CHECK_URL", jaeger.address.as_str()),
        ("STOREFRONT_GRAFANA_URL", grafana.as_str()),
        ("STOREFRONT_PROMETHEUS_URL", prometheus.as_str()),
        ("STOREFRONT_MAIL_URL", grafana.as_str()),
    ])
    .await;
    let tools = eventually(Duration::from_secs(10), "the first check", || async {
        let config = expect_json(
            app.get("/api/storefront/config", None).await,
            StatusCode::OK,
        )
        .await;
        let tools = config["tools"].clone();
        (tools.as_object().is_some_and(|t| !t.is_empty())).then_some(tools)
    })
    .await;
    assert_eq!(tools, json!({"jaeger": "http://localhost:16686"}));
}
