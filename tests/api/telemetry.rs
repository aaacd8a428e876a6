//! Traces and logs, observed from the outside: the real binary exports to a real OTLP
//! receiver, and its log lines are read from its output.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    TestApp, black_hole, checkout_body, eventually, expect_json, spawn_process, traced_app,
};
use crate::otlp::{OtlpReceiver, ReceivedSpan};

const STEPS: [&str; 12] = [
    "checkout.validate_cart",
    "checkout.check_inventory",
    "checkout.reserve_inventory",
    "checkout.create_order",
    "checkout.create_order_items",
    "checkout.process_payment",
    "checkout.record_payment",
    "checkout.reduce_inventory",
    "checkout.send_email",
    "checkout.create_notification",
    "checkout.clear_cart",
    "checkout.commit",
];
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

/// A customer with a product in the cart; returns the token.
async fn customer_with_cart(app: &TestApp) -> String {
    app.alice_with_kettles(2).await.0
}

fn trace_id_of(response: &reqwest::Response) -> String {
    response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one span {name}, got {}",
        found.len()
    );
    found[0]
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut children: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect();
    children.sort_by_key(|s| s.start);
    children
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_is_one_trace_with_a_span_per_step_in_order() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(
        &receiver,
        &[("PAYMENT_DELAY_MS", "50"), ("EMAIL_DELAY_MS", "80")],
    )
    .await;
    let alice = customer_with_cart(&app).await;
    let response = app.checkout(&alice).await;
    let trace_id = trace_id_of(&response);
    let order = expect_json(response, StatusCode::CREATED).await;

    let spans = receiver
        .wait_for_trace(&trace_id, "POST /api/orders/checkout")
        .await;
    assert!(spans.iter().all(|s| s.trace_id == trace_id));

    // The server span, with the HTTP semantic conventions.
    let server = one(&spans, "POST /api/orders/checkout");
    assert_eq!(server.kind, SERVER);
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(server.attribute("http.request.method"), Some("POST"));
    assert_eq!(server.attribute("http.route"), Some("/api/orders/checkout"));
    assert_eq!(server.attribute("url.path"), Some("/api/orders/checkout"));
    assert_eq!(server.attribute("http.response.status_code"), Some("201"));
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("ecommerce-monolith")
    );
    assert_eq!(
        server.resource.get("service.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // The checkout span and its eleven steps plus the commit, in order.
    let checkout = one(&spans, "checkout");
    assert_eq!(checkout.parent_span_id, server.span_id);
    // The caller, on both: the server span's from the authentication, the checkout's own.
    assert!(server.attribute("enduser.id").is_some(), "{server:?}");
    assert_eq!(
        server.attribute("enduser.id"),
        checkout.attribute("enduser.id")
    );
    assert_eq!(
        checkout.attribute("order.id"),
        Some(order["id"].to_string().as_str())
    );
    assert_eq!(checkout.attribute("checkout.outcome"), Some("success"));
    let steps: Vec<&str> = children(&spans, checkout)
        .into_iter()
        .map(|s| s.name.as_str())
        .filter(|name| name.starts_with("checkout."))
        .collect();
    assert_eq!(steps, STEPS);
    let step_spans: Vec<&ReceivedSpan> = STEPS.iter().map(|name| one(&spans, name)).collect();
    for pair in step_spans.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "{} overlaps {}",
            pair[0].name,
            pair[1].name
        );
    }
    assert_eq!(
        one(&spans, "checkout.validate_cart").attribute("checkout.item_count"),
        Some("1")
    );
    assert_eq!(
        one(&spans, "checkout.process_payment").attribute("payment.outcome"),
        Some("approved")
    );

    // The gateway call and the SMTP send, as client spans under their steps.
    let gateway = one(&spans, "payment_gateway.charge");
    assert_eq!(
        gateway.parent_span_id,
        one(&spans, "checkout.process_payment").span_id
    );
    assert_eq!(gateway.kind, CLIENT);
    assert!(
        gateway.end - gateway.start >= 50_000_000,
        "the 50 ms gateway delay is inside"
    );
    let smtp = one(&spans, "smtp.send");
    assert_eq!(
        smtp.parent_span_id,
        one(&spans, "checkout.send_email").span_id
    );
    assert_eq!(smtp.kind, CLIENT);
    assert!(
        smtp.end - smtp.start >= 80_000_000,
        "the 80 ms mail delay is inside"
    );

    // Database statements as client spans, with placeholders instead of values. (A
    // `db.pool.acquire` span, for a wait on the pool, has no statement.)
    let statements: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.attribute("db.system.name") == Some("postgresql"))
        .filter(|s| s.name != "db.pool.acquire")
        .collect();
    assert!(
        statements.len() >= 12,
        "got {} statements",
        statements.len()
    );
    for statement in &statements {
        assert_eq!(statement.kind, CLIENT);
        let text = statement.attribute("db.query.text").unwrap();
        assert!(
            !text.contains("alice@example.com") && !text.contains("Test Street"),
            "{text}"
        );
    }
    let lock = statements
        .iter()
        .find(|s| {
            s.attribute("db.query.text").unwrap().contains("FOR UPDATE")
                && s.name == "SELECT inventory"
        })
        .expect("the row-lock statement");
    assert_eq!(
        lock.parent_span_id,
        one(&spans, "checkout.check_inventory").span_id
    );
    assert!(lock.attribute("db.query.text").unwrap().contains("$1"));
    assert_eq!(
        lock.attribute("db.response.returned_rows"),
        Some("1"),
        "one product's row locked"
    );
    assert_eq!(lock.attribute("db.operation.name"), Some("SELECT"));
    assert_eq!(lock.attribute("db.collection.name"), Some("inventory"));
    // The transaction's first and last statements are spans too.
    let checkout = one(&spans, "checkout");
    assert!(
        children(&spans, checkout).iter().any(|s| s.name == "BEGIN"),
        "the BEGIN statement is under the checkout"
    );
    let commit = one(&spans, "checkout.commit");
    assert!(
        children(&spans, commit).iter().any(|s| s.name == "COMMIT"),
        "the COMMIT statement is under the commit step"
    );
}

/// A client that gives up on a checkout does not take the checkout with it (it runs to
/// its end on its own), nor its server span: the request's span is written as it is
/// dropped, marked cancelled, and the checkout's spans keep their parent.
#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_whose_client_left_keeps_its_server_span() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(
        &receiver,
        &[("PAYMENT_DELAY_MS", "600"), ("EMAIL_DELAY_MS", "50")],
    )
    .await;
    let alice = customer_with_cart(&app).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let gave_up = app
        .request(reqwest::Method::POST, "/api/orders/checkout", Some(&alice))
        .header("Idempotency-Key", "client-left-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&checkout_body())
        // About the client, not the service: it leaves while the gateway is charging.
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));

    let spans = receiver.wait_for_trace(trace_id, "checkout").await;
    let server = one(&spans, "POST /api/orders/checkout");
    assert_eq!(
        server.attribute("error.type"),
        Some("cancelled"),
        "{server:?}"
    );
    assert_eq!(server.attribute("http.response.status_code"), None);
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
    let checkout = one(&spans, "checkout");
    assert_eq!(checkout.parent_span_id, server.span_id);
    assert_eq!(checkout.attribute("checkout.outcome"), Some("success"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asynchronous_checkout_and_its_jobs_are_one_trace() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(
        &receiver,
        &[
            ("CHECKOUT_MODE", "async"),
            ("PAYMENT_DELAY_MS", "200"),
            ("EMAIL_DELAY_MS", "100"),
        ],
    )
    .await;
    let alice = customer_with_cart(&app).await;
    let response = app.checkout(&alice).await;
    let trace_id = trace_id_of(&response);
    expect_json(response, StatusCode::ACCEPTED).await;

    // The 202, then seconds later the payment and the e-mail, in the same trace.
    let spans = receiver
        .wait_for_trace(&trace_id, "outbox.send_confirmation")
        .await;
    let server = one(&spans, "POST /api/orders/checkout");
    assert_eq!(server.attribute("http.response.status_code"), Some("202"));
    let checkout = one(&spans, "checkout");
    assert_eq!(checkout.attribute("checkout.mode"), Some("async"));
    assert_eq!(checkout.attribute("checkout.outcome"), Some("accepted"));
    let request_steps: Vec<&str> = children(&spans, checkout)
        .into_iter()
        .map(|s| s.name.as_str())
        .filter(|name| name.starts_with("checkout."))
        .collect();
    assert_eq!(
        request_steps,
        [
            "checkout.validate_cart",
            "checkout.check_inventory",
            "checkout.place_order",
            "checkout.commit",
        ]
    );

    // The charge job hangs under the step that enqueued it, and links to it.
    let enqueue = one(&spans, "checkout.place_order");
    let charge = one(&spans, "outbox.charge_order");
    assert_eq!(charge.parent_span_id, enqueue.span_id);
    assert!(
        charge
            .links
            .contains(&(trace_id.clone(), enqueue.span_id.clone()))
    );
    // The job is claimed only once the order's transaction is visible, so its span
    // starts after the COMMIT statement was sent. (NOTIFY wakes the worker as Postgres
    // commits: it may start before the request's own commit span has closed.)
    let commit = one(&spans, "checkout.commit");
    let commit_statement = children(&spans, commit)
        .into_iter()
        .find(|s| s.name == "COMMIT")
        .expect("the COMMIT statement is under the commit step");
    assert!(
        charge.start >= commit_statement.start,
        "the work starts after the order is committed"
    );
    let job_steps: Vec<&str> = children(&spans, charge)
        .into_iter()
        .map(|s| s.name.as_str())
        .filter(|name| name.starts_with("checkout."))
        .collect();
    assert_eq!(
        job_steps,
        ["checkout.process_payment", "checkout.confirm_order"]
    );
    assert_eq!(
        one(&spans, "payment_gateway.charge").parent_span_id,
        one(&spans, "checkout.process_payment").span_id
    );
    // The e-mail job follows from the charge job, with the SMTP send inside.
    let email = one(&spans, "outbox.send_confirmation");
    assert_eq!(
        email.parent_span_id,
        one(&spans, "checkout.confirm_order").span_id
    );
    assert_eq!(
        one(&spans, "smtp.send").parent_span_id,
        one(&spans, "checkout.send_email").span_id
    );
    let answered_in = server.end - server.start;
    let confirmed_after = charge.end - server.start;
    assert!(
        answered_in < confirmed_after,
        "answered in {answered_in} ns, confirmed after {confirmed_after} ns"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_marks_its_spans_as_errors() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[("PAYMENT_SUCCESS_RATE", "0")]).await;
    let alice = customer_with_cart(&app).await;
    let response = app.checkout(&alice).await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let spans = receiver
        .wait_for_trace(&trace_id_of(&response), "POST /api/orders/checkout")
        .await;

    assert_eq!(one(&spans, "payment_gateway.charge").status, ERROR);
    assert_eq!(one(&spans, "checkout.process_payment").status, ERROR);
    let checkout = one(&spans, "checkout");
    assert_eq!(checkout.status, ERROR);
    assert_eq!(
        checkout.attribute("checkout.outcome"),
        Some("payment_declined")
    );
    // The steps after the payment never ran; the rollback did.
    assert!(spans.iter().all(|s| s.name != "checkout.record_payment"));
    one(&spans, "checkout.rollback");
    // A 4xx is the client's problem: the server span is not an error.
    assert_ne!(one(&spans, "POST /api/orders/checkout").status, ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_statement_is_an_error_span_with_its_sqlstate() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[]).await;
    app.customer("bob@example.com").await;
    // The same address again: the INSERT fails on the unique index (a 409).
    let response = app
        .request(reqwest::Method::POST, "/api/auth/register", None)
        .json(&serde_json::json!({
            "email": "bob@example.com", "password": crate::helpers::PASSWORD, "full_name": "Bob"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let trace_id = trace_id_of(&response);

    let spans = receiver
        .wait_for_trace(&trace_id, "POST /api/auth/register")
        .await;
    let insert = one(&spans, "INSERT users");
    assert_eq!(insert.kind, CLIENT);
    assert_eq!(insert.status, ERROR);
    assert_eq!(insert.attribute("db.response.status_code"), Some("23505"));
    assert_eq!(insert.attribute("error.type"), Some("23505"));
    assert_eq!(insert.attribute("db.response.affected_rows"), None);
    let text = insert.attribute("db.query.text").unwrap();
    assert!(
        text.starts_with("INSERT INTO users") && !text.contains("bob@"),
        "{text}"
    );
    // A client's mistake, not the service's: the request is not an error.
    assert_ne!(one(&spans, "POST /api/auth/register").status, ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incoming_traceparent_is_continued() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[]).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let response = app
        .request(reqwest::Method::GET, "/api/products/42", None)
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(trace_id_of(&response), trace_id);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["trace_id"], trace_id);

    let spans = receiver
        .wait_for_trace(trace_id, "GET /api/products/{id}")
        .await;
    let server = one(&spans, "GET /api/products/{id}");
    assert_eq!(server.parent_span_id, parent);
    assert_eq!(server.attribute("http.response.status_code"), Some("404"));
    assert_eq!(server.attribute("url.path"), Some("/api/products/42"));
    // The statement that looked for the product, under the server span: no `tracing`
    // span stands between them on a catalog read.
    let statement = spans
        .iter()
        .find(|s| s.attribute("db.system.name") == Some("postgresql"))
        .expect("the statement's span");
    assert_eq!(statement.parent_span_id, server.span_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_inside_a_request_carry_its_trace_and_span_ids() {
    let receiver = OtlpReceiver::start().await;
    let mut app = traced_app(&receiver, &[]).await;
    let response = app
        .post(
            "/api/auth/register",
            None,
            &serde_json::json!({"email": "logs@example.com", "password": "long enough", "full_name": "L"}),
        )
        .await;
    let trace_id = trace_id_of(&response);
    assert_eq!(response.status(), StatusCode::CREATED);
    let line = logged_entry(&mut app, "user registered").await;
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
    assert_eq!(line["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tracing_off_responses_and_logs_still_carry_a_trace_id() {
    let mut app = spawn_process(&[("OTEL_SDK_DISABLED", "true")]).await;
    let response = app
        .post(
            "/api/auth/register",
            None,
            &serde_json::json!({"email": "off@example.com", "password": "long enough", "full_name": "O"}),
        )
        .await;
    let trace_id = trace_id_of(&response);
    assert_eq!(trace_id.len(), 32);
    let line = logged_entry(&mut app, "user registered").await;
    assert_eq!(line["trace_id"], trace_id.as_str());
}

/// A collector that accepts connections and never answers — the case that hurts: each
/// export waits for its timeout. Requests must not wait with it, and the failure is
/// said once, not per batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_collector_is_reported_once_and_slows_nothing() {
    // Both exporters: OTLP/HTTP (our own, the default) and gRPC (opentelemetry-otlp's).
    tokio::join!(
        a_hung_collector_is_reported_once_with("http/protobuf"),
        a_hung_collector_is_reported_once_with("grpc"),
    );
}

async fn a_hung_collector_is_reported_once_with(protocol: &str) {
    const EXPORT_TIMEOUT: Duration = Duration::from_millis(2000);
    let hung = format!("http://127.0.0.1:{}", black_hole().await);
    let timeout_ms = EXPORT_TIMEOUT.as_millis().to_string();
    let mut app = spawn_process(&[
        ("OTEL_SDK_DISABLED", "false"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", hung.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", timeout_ms.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    // 40 requests over several 50 ms export batches, each export hanging for its whole
    // timeout: a request that waited on an export would alone take a timeout.
    let started = Instant::now();
    for _ in 0..40 {
        let sent = Instant::now();
        assert_eq!(
            app.get("/api/products", None).await.status(),
            StatusCode::OK
        );
        assert!(
            sent.elapsed() < EXPORT_TIMEOUT,
            "{protocol}: a request waited {:?} — on an export?",
            sent.elapsed()
        );
        // About time itself: requests spread over several export batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{protocol}: 40 requests in {:?} with a hung collector",
        started.elapsed()
    );
    // The first export times out and is reported; more time out after it.
    let mut failed = || {
        let output = app.output();
        output
            .iter()
            .filter(|line| line.contains("cannot export traces"))
            .count()
    };
    eventually(Duration::from_secs(10), "the failure reported", || {
        std::future::ready((failed() > 0).then_some(()))
    })
    .await;
    tokio::time::sleep(EXPORT_TIMEOUT * 2).await; // about time itself: more exports time out
    assert_eq!(
        failed(),
        1,
        "{protocol}: reported once, not per batch:\n{}",
        app.output().join("\n")
    );
}

/// Spans wait in a bounded queue while an export hangs: past `OTEL_BSP_MAX_QUEUE_SIZE`
/// they are dropped, requests go on, and the next export round says how many.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_span_queue_drops_spans_and_says_how_many() {
    let hung = format!("http://127.0.0.1:{}", black_hole().await);
    let mut app = spawn_process(&[
        ("OTEL_SDK_DISABLED", "false"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", hung.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
    ])
    .await;
    // Each read is two spans (the request's and its statement's): the first batch
    // leaves for the hung collector, four more wait, the rest find the queue full.
    for _ in 0..20 {
        assert_eq!(
            app.get("/api/products/999999999", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    let dropped = eventually(Duration::from_secs(10), "the drop reported", || {
        let line = app
            .output()
            .into_iter()
            .find(|line| line.contains("the span queue was full"));
        std::future::ready(line)
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&dropped).expect("a JSON log line");
    let count = line["fields"]["dropped_spans"]
        .as_u64()
        .expect("dropped_spans");
    // 40 spans, of which 2 left in the first export and 4 waited; the next batch
    // leaves only once the first export has given up, a second after it began.
    assert!(count >= 20, "{count} dropped: {line}");
}

/// A collector behind an auth proxy: the exports carry the headers of
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (which wins over the generic variable), values
/// percent-decoded, gzip-compressed as `OTEL_EXPORTER_OTLP_COMPRESSION` asks; the token
/// is never logged.
#[tokio::test(flavor = "multi_thread")]
async fn exports_carry_their_headers_and_are_gzipped() {
    let receiver = OtlpReceiver::start().await;
    let mut app = traced_app(
        &receiver,
        &[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20generic",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "authorization=Bearer%20s3cr3t-t0ken, x-scope-orgid = shop",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    )
    .await;
    let response = app.get("/health", None).await;
    let trace_id = trace_id_of(&response);
    receiver.wait_for_trace(&trace_id, "GET /health").await;
    let requests = receiver.requests();
    let first = &requests[0];
    assert_eq!(first.headers["content-encoding"], "gzip");
    assert_eq!(first.headers["authorization"], "Bearer s3cr3t-t0ken");
    assert_eq!(first.headers["x-scope-orgid"], "shop");
    assert!(
        app.output().iter().all(|line| !line.contains("s3cr3t")),
        "the token is not logged"
    );
}

/// The OTLP specification's retries: 503 and 429 are sent again after a backoff (at
/// least what `Retry-After` asks), and the batch arrives; a 400 is not retried.
#[tokio::test(flavor = "multi_thread")]
async fn exports_a_collector_refuses_for_a_moment_are_retried() {
    let receiver = OtlpReceiver::start().await;
    receiver.refuse_next(1, StatusCode::SERVICE_UNAVAILABLE, Some(1));
    receiver.refuse_next(1, StatusCode::TOO_MANY_REQUESTS, None);
    receiver.refuse_next(1, StatusCode::BAD_GATEWAY, None);
    let app = traced_app(&receiver, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")]).await;
    let response = app.get("/health", None).await;
    let trace_id = trace_id_of(&response);
    receiver.wait_for_trace(&trace_id, "GET /health").await;
    let statuses: Vec<u16> = receiver
        .requests()
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(&statuses[..4], [503, 429, 502, 200], "{statuses:?}");

    // A request the collector rejects as malformed is not sent again.
    let receiver = OtlpReceiver::start().await;
    receiver.refuse_next(1, StatusCode::BAD_REQUEST, None);
    let app = traced_app(&receiver, &[]).await;
    app.get("/health", None).await;
    eventually(Duration::from_secs(10), "the rejected export", || {
        std::future::ready((!receiver.requests().is_empty()).then_some(()))
    })
    .await;
    // About time itself: a retry would come within the backoff's first steps.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first_batch = receiver.requests();
    assert_eq!(first_batch[0].status, StatusCode::BAD_REQUEST);
    assert!(
        first_batch[1..].iter().all(|r| r.status == StatusCode::OK),
        "no retry of the 400: {:?}",
        first_batch.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        receiver.spans().iter().all(|s| s.name != "GET /health"),
        "that batch is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_flushed_on_sigterm() {
    let receiver = OtlpReceiver::start().await;
    // No periodic export: only the shutdown flush can deliver the span.
    let mut app = traced_app(&receiver, &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]).await;
    let response = app.get("/health", None).await;
    let trace_id = trace_id_of(&response);
    assert!(receiver.spans().iter().all(|s| s.trace_id != trace_id));
    let exit = app.terminate().await;
    assert!(exit.success(), "exit status {exit:?}");
    receiver.wait_for_trace(&trace_id, "GET /health").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_checkout_in_flight_finish() {
    let mut app = spawn_process(&[("PAYMENT_DELAY_MS", "1500")]).await;
    let alice = customer_with_cart(&app).await;
    let request = app
        .request(reqwest::Method::POST, "/api/orders/checkout", Some(&alice))
        .json(&serde_json::json!({"shipping_address": "1 Road", "payment_method": "paypal"}));
    let in_flight = tokio::spawn(request.send());
    app.wait_for_checkouts_in_flight(1).await;
    let exit = app.terminate().await;
    let response = in_flight.await.unwrap().expect("answered before exit");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asynchronous_checkout_that_queues_for_the_database_shows_the_wait() {
    let receiver = OtlpReceiver::start().await;
    // A pool of 2 admits one asynchronous checkout into the database at a time.
    let app = traced_app(
        &receiver,
        &[("CHECKOUT_MODE", "async"), ("DB_MAX_CONNECTIONS", "2")],
    )
    .await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let bob = app.buyers(1, kettle, "bob").await.remove(0);

    // Hold the kettle's inventory row: Alice's checkout, admitted first, waits on it
    // with its place taken, so Bob's has to queue at the door.
    let holder = lock_inventory_row(&app, kettle).await;
    let release = async {
        until_one_waits_on_a_row_lock(&app, "Alice's checkout waiting on the row lock").await;
        let bob_checkout = app.checkout(&bob);
        let watch = async {
            app.wait_for_checkouts_in_flight(2).await;
            // Bob is at the door now; keep him there a moment before letting Alice go.
            tokio::time::sleep(Duration::from_millis(300)).await;
            holder.commit().await.unwrap();
        };
        let (bob_response, ()) = tokio::join!(bob_checkout, watch);
        bob_response
    };
    let (alice_response, bob_response) = tokio::join!(app.checkout(&alice), release);
    let alice_trace = trace_id_of(&alice_response);
    let bob_trace = trace_id_of(&bob_response);
    expect_json(alice_response, StatusCode::ACCEPTED).await;
    expect_json(bob_response, StatusCode::ACCEPTED).await;

    let bob_spans = receiver.wait_for_trace(&bob_trace, "checkout.commit").await;
    let admission = one(&bob_spans, "checkout.admission");
    assert_eq!(
        admission.parent_span_id,
        one(&bob_spans, "checkout").span_id
    );
    assert!(
        // Most of those 300 ms (his task may have been scheduled late after it began).
        admission.end - admission.start >= 100_000_000,
        "Bob waited at the door while Alice held the only place"
    );
    assert!(admission.end <= one(&bob_spans, "checkout.validate_cart").start);
    let alice_spans = receiver
        .wait_for_trace(&alice_trace, "checkout.commit")
        .await;
    assert!(
        alice_spans.iter().all(|s| s.name != "checkout.admission"),
        "a checkout that did not wait has no admission span"
    );
}

/// A statement that waits on a row lock: its span lasts the wait, under the step that
/// ran it, and past a second it is logged as a slow statement in the request's trace.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_waiting_on_a_row_lock_is_a_long_span_and_a_slow_statement_warning() {
    let receiver = OtlpReceiver::start().await;
    let mut app = traced_app(&receiver, &[]).await;
    let (alice, kettle) = app.alice_with_kettles(1).await;

    let holder = lock_inventory_row(&app, kettle).await;
    let release = async {
        until_one_waits_on_a_row_lock(&app, "the checkout waiting on the row lock").await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        holder.commit().await.unwrap();
    };
    let (response, ()) = tokio::join!(app.checkout(&alice), release);
    let trace_id = trace_id_of(&response);
    expect_json(response, StatusCode::CREATED).await;

    let spans = receiver.wait_for_trace(&trace_id, "checkout.commit").await;
    let lock = spans
        .iter()
        .find(|s| {
            s.name == "SELECT inventory"
                && s.attribute("db.query.text").unwrap().contains("FOR UPDATE")
        })
        .expect("the row-lock statement");
    assert_eq!(
        lock.parent_span_id,
        one(&spans, "checkout.check_inventory").span_id
    );
    assert!(
        lock.end - lock.start >= 1_200_000_000,
        "the span lasts the wait: {} ns",
        lock.end - lock.start
    );
    let warning = logged_entry(
        &mut app,
        "slow statement: execution time exceeded alert threshold",
    )
    .await;
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["trace_id"], trace_id.as_str());
    let logged = warning.to_string();
    assert!(logged.contains("FOR UPDATE"), "{logged}");
    assert!(!logged.contains("alice@"), "{logged}");
}

const WAIT: Duration = Duration::from_secs(10);

/// A transaction of the test's own holding `product`'s inventory row lock.
async fn lock_inventory_row(
    app: &TestApp,
    product: i64,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM inventory WHERE product_id = $1 FOR UPDATE")
        .bind(product)
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

/// Until one backend of the app's database waits for a lock.
async fn until_one_waits_on_a_row_lock(app: &TestApp, what: &str) {
    eventually(WAIT, what, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        (waiting == 1).then_some(())
    })
    .await;
}

/// The first JSON log line of the process whose message is `message`, once printed.
async fn logged_entry(app: &mut TestApp, message: &str) -> Value {
    eventually(WAIT, message, || {
        let entry = app
            .output()
            .into_iter()
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .find(|entry| entry["fields"]["message"] == message);
        std::future::ready(entry)
    })
    .await
}
