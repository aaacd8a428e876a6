//! Every cent accounted for: a checkout finishes what it started whatever its client
//! does, `Idempotency-Key` never charges twice, the shutdown deadline rolls back and
//! counts, and after every test the gateway's ledger reconciles with the orders.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Ledger, TestApp, checkout_body, eventually, expect_json, expect_problem, sample, spawn_process,
};

async fn approved_charges(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gateway_charges WHERE status <> 'declined'")
        .fetch_one(&app.db)
        .await
        .expect("ledger")
}

/// Waits until `orders` holds `count` rows (a detached checkout finishing).
async fn wait_for_orders(app: &TestApp, count: i64) {
    eventually(Duration::from_secs(10), "the orders", || async {
        (app.count("orders").await == count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_gives_up_does_not_cancel_the_checkout() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "300"), ("EMAIL_DELAY_MS", "300")]).await;
    let (alice, kettle) = app.alice_with_kettles(1).await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/api/orders/checkout", app.address))
        .bearer_auth(&alice)
        .json(&checkout_body())
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()), "the client gave up");

    // The checkout carries on without its client: charged, confirmed, counted.
    wait_for_orders(&app, 1).await;
    let status: String = sqlx::query_scalar("SELECT status FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "confirmed");
    assert_eq!(app.stock_of(kettle).await, (4, 0));
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "checkouts_total", &[("outcome", "success")]),
        Some(1.0)
    );
    app.assert_ledger_counted(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_gets_the_first_answer_and_one_charge() {
    let app = spawn_process(&[]).await;
    let (alice, kettle) = app.alice_with_kettles(2).await;

    let first = app
        .checkout_with_key(&alice, "order-attempt-1", &checkout_body())
        .await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = expect_json(first, StatusCode::CREATED).await;

    let again = app
        .checkout_with_key(&alice, "order-attempt-1", &checkout_body())
        .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = expect_json(again, StatusCode::CREATED).await;
    assert_eq!(again, first, "the very same answer");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(approved_charges(&app).await, 1);
    assert_eq!(app.stock_of(kettle).await, (3, 0));

    // The same key with another request is refused, and changes nothing.
    let other = json!({"shipping_address": "2 Other Road", "payment_method": "paypal"});
    expect_problem(
        app.checkout_with_key(&alice, "order-attempt-1", &other)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    // Keys belong to their user: Bob's "order-attempt-1" is a checkout of his own.
    let bob = app.customer("bob@example.com").await;
    expect_problem(
        app.checkout_with_key(&bob, "order-attempt-1", &checkout_body())
            .await,
        StatusCode::BAD_REQUEST,
        "empty-cart",
    )
    .await;
    // A malformed key is a 400 that names the header.
    let bad = expect_problem(
        app.checkout_with_key(&alice, "has spaces", &checkout_body())
            .await,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    assert!(bad["detail"].as_str().unwrap().contains("Idempotency-Key"));
    assert_eq!(app.count("orders").await, 1);
    app.assert_ledger_counted(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_while_the_first_runs_is_a_conflict_and_never_a_second_charge() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "600"), ("EMAIL_DELAY_MS", "200")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;

    // Two requests with one key at once: one runs, the other is told it is running.
    let body = checkout_body();
    let both = join_all((0..2).map(|_| app.checkout_with_key(&alice, "k-42", &body))).await;
    let mut statuses: Vec<StatusCode> = both.iter().map(reqwest::Response::status).collect();
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    let conflict = both
        .into_iter()
        .find(|r| r.status() == StatusCode::CONFLICT)
        .unwrap();
    expect_problem(conflict, StatusCode::CONFLICT, "request-in-progress").await;

    // A client that timed out and retries: first a conflict, then the first answer.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    expect_json(
        app.add_to_cart(&alice, _kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let timed_out = impatient
        .post(format!("{}/api/orders/checkout", app.address))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "k-43")
        .json(&checkout_body())
        .send()
        .await;
    assert!(timed_out.is_err());
    let retry = app
        .checkout_with_key(&alice, "k-43", &checkout_body())
        .await;
    assert_eq!(retry.status(), StatusCode::CONFLICT, "still running");
    // The key's answer is kept just after the order commits: until then a retry is
    // still told to come back, never run again.
    let retry = eventually(Duration::from_secs(10), "the first answer", || async {
        let retry = app
            .checkout_with_key(&alice, "k-43", &checkout_body())
            .await;
        (retry.status() != StatusCode::CONFLICT).then_some(retry)
    })
    .await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    expect_json(retry, StatusCode::CREATED).await;
    assert_eq!(approved_charges(&app).await, 2, "one charge per key");
    app.assert_ledger_counted(Ledger::paid(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_is_replayed_not_tried_again() {
    let app = spawn_process(&[("PAYMENT_SUCCESS_RATE", "0")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    for _ in 0..2 {
        expect_problem(
            app.checkout_with_key(&alice, "declined-once", &checkout_body())
                .await,
            StatusCode::PAYMENT_REQUIRED,
            "payment-declined",
        )
        .await;
    }
    let (declined, approved): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'declined'), \
                count(*) FILTER (WHERE status <> 'declined') FROM gateway_charges",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((declined, approved), (1, 0), "the gateway was asked once");
    app.assert_ledger_counted(Ledger::paid(0)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_refunds_through_the_gateway_and_reconciliation_shows_every_charge() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let buyers = app.buyers(3, kettle, "ledger-").await;
    let mut orders = Vec::new();
    for token in &buyers[..2] {
        orders.push(expect_json(app.checkout(token).await, StatusCode::CREATED).await);
    }
    // The third buyer's order is lost after the charge: the mail server is down.
    app.put(
        "/api/admin/faults",
        Some(&admin),
        &json!({"email_outage": true}),
    )
    .await;
    assert_eq!(
        app.checkout(&buyers[2]).await.status(),
        StatusCode::BAD_GATEWAY
    );

    let cancelled = expect_json(
        app.patch(
            &format!("/api/orders/{}/status", orders[0]["id"]),
            Some(&admin),
            &json!({"status": "cancelled"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["payment"]["status"], "refunded");
    let ledger_status: String =
        sqlx::query_scalar("SELECT status FROM gateway_charges WHERE transaction_id = $1")
            .bind(cancelled["payment"]["transaction_id"].as_str().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(ledger_status, "refunded", "the gateway gave the money back");

    let view = expect_json(
        app.get("/api/admin/reconciliation", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["approved_charges"], 3);
    assert_eq!(view["with_order"], 1);
    assert_eq!(view["refunded"], 1);
    assert_eq!(view["without_order"], 1);
    assert_eq!(view["without_order_amount"], "19.99");
    let orphan = &view["charges_without_order"][0];
    assert!(
        orphan["transaction_id"]
            .as_str()
            .unwrap()
            .starts_with("txn_")
    );
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "payments_without_order", &[]), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            "payments_orphaned_total",
            &[("reason", "email_failed")]
        ),
        Some(1.0)
    );
    let customer = app.customer("nosy@example.com").await;
    expect_problem(
        app.get("/api/admin/reconciliation", Some(&customer)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    app.assert_ledger_counted(Ledger {
        approved: 3,
        with_order: 1,
        refunded: 1,
        without_order: 1,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_checkouts_queued_on_one_row_ends_within_the_deadline() {
    let mut app = spawn_process(&[
        ("SHUTDOWN_TIMEOUT_SECONDS", "2"),
        ("PAYMENT_DELAY_MS", "400"),
        ("EMAIL_DELAY_MS", "800"),
    ])
    .await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    // Six buyers of one product queue on its inventory row, 1.2 s each.
    let buyers = app.buyers(6, kettle, "queued-").await;
    let (client, url) = (
        app.client.clone(),
        format!("{}/api/orders/checkout", app.address),
    );
    let checkouts = join_all(buyers.iter().map(|token| {
        let sent = client
            .post(&url)
            .bearer_auth(token)
            .json(&checkout_body())
            .send();
        async { (sent.await, Instant::now()) }
    }));
    let shutdown = async {
        // SIGTERM once all six are in (the first in the gateway, the others queued).
        app.wait_for_checkouts_in_flight(6).await;
        let sent = Instant::now();
        let exit = app.terminate().await;
        (sent, exit)
    };
    let (responses, (sigterm, exit)) = tokio::join!(checkouts, shutdown);
    let took = sigterm.elapsed();

    assert!(exit.success(), "a clean exit: {exit:?}");
    // Every answer within the deadline (2 s) and the moments the interrupted checkouts
    // need to roll back — before twice the deadline; the exit after the metrics'
    // linger (1 s in tests) besides.
    const DEADLINE: Duration = Duration::from_secs(2);
    const LINGER: Duration = Duration::from_secs(1);
    for (_, answered) in &responses {
        let after = answered.duration_since(sigterm);
        assert!(after < DEADLINE * 2, "answered {after:?} after SIGTERM");
    }
    assert!(
        took < DEADLINE * 2 + LINGER,
        "exited {took:?} after SIGTERM"
    );
    let statuses: Vec<StatusCode> = responses
        .into_iter()
        .map(|(r, _)| r.expect("an answer, not a reset connection").status())
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "every client got an answer: {statuses:?}"
    );
    let confirmed = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count() as i64;
    assert!((1..6).contains(&confirmed), "{statuses:?}");
    assert_eq!(app.count("orders").await, confirmed, "nothing half-written");
    assert_eq!(app.stock_of(kettle).await, (10 - confirmed as i32, 0));

    // The process is gone with its counters; its log says what it counted.
    let output = app.output();
    let logged = |message: &str| output.iter().filter(|line| line.contains(message)).count() as i64;
    let orphans = logged("orphaned payment");
    assert_eq!(
        approved_charges(&app).await,
        confirmed + orphans,
        "every charge is an order or a counted orphan: {output:#?}"
    );
    assert!(logged("shutdown deadline reached") == 1, "{output:#?}");
    println!(
        "SIGTERM to exit: {took:?}; {confirmed} confirmed, {} rolled back ({orphans} after the charge)",
        6 - confirmed
    );
}
