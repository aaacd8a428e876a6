//! Money and messages at the edges, against the real binary: a key keeps its charge
//! across a mode switch and refunds it when the cart changed; a stalled first run keeps
//! the key's answer; a cancelled order is not confirmed by e-mail; a cart edit during a
//! checkout is never acknowledged and then lost. (A database outage shorter than the
//! lease sends nothing twice: `tests/external/outage.rs`, on a Postgres of its own.)
//! Each ends with the ledger and, where e-mails are involved, the e-mails per order.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Ledger, TestApp, checkout_body, eventually, expect_json, expect_problem, sample, spawn_process,
    spawn_replicas,
};

const KEY: &str = "checkout-of-the-day";

/// The approved charges in the gateway's ledger, oldest first.
async fn transaction_ids(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT transaction_id FROM gateway_charges WHERE status <> 'declined' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .expect("ledger")
}

/// A blocking checkout with [`KEY`], charged and then stopped at the shutdown deadline
/// (the e-mail takes longer than the deadline): its 503 says the money was taken and
/// that a retry with the key places the order with it. Then the service is started
/// again. Returns Alice's token and the kettle she has in her cart.
async fn charged_then_stopped_at_the_deadline(app: &mut TestApp) -> (String, i64) {
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let first = tokio::spawn(
        app.client
            .post(format!("{}/api/orders/checkout", app.address))
            .bearer_auth(&alice)
            .header("Idempotency-Key", KEY)
            .json(&checkout_body())
            .send(),
    );
    eventually(Duration::from_secs(10), "the charge", || async {
        (transaction_ids(app).await.len() == 1).then_some(())
    })
    .await;
    app.terminate().await;
    let lost = first
        .await
        .expect("join")
        .expect("an answer before the exit");
    let problem =
        expect_problem(lost, StatusCode::SERVICE_UNAVAILABLE, "service-unavailable").await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("payment of 19.99 was taken") && detail.contains("same Idempotency-Key"),
        "{detail}"
    );
    app.restart().await;
    (alice, kettle)
}

fn lost_at_the_deadline() -> [(&'static str, &'static str); 3] {
    [
        ("SHUTDOWN_TIMEOUT_SECONDS", "1"),
        ("PAYMENT_DELAY_MS", "200"),
        ("EMAIL_DELAY_MS", "3000"),
    ]
}

/// Waits until the order at `location` is no longer `pending`; returns it.
async fn settled(app: &TestApp, token: &str, location: &str) -> Value {
    eventually(Duration::from_secs(20), "the order settled", || async {
        let order = expect_json(app.get(location, Some(token)).await, StatusCode::OK).await;
        (order["status"] != "pending").then_some(order)
    })
    .await
}

/// Waits until every outbox job is finished (done or skipped); returns how each
/// ended, by kind: `(kind, status, attempts)`.
async fn jobs_finished(app: &TestApp) -> Vec<(String, String, i32)> {
    eventually(Duration::from_secs(30), "every job finished", || async {
        let jobs: Vec<(String, String, i32)> =
            sqlx::query_as("SELECT kind, status, attempts FROM outbox_jobs ORDER BY id")
                .fetch_all(&app.db)
                .await
                .expect("jobs");
        jobs.iter()
            .all(|(_, status, _)| status == "done" || status == "skipped")
            .then_some(jobs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_keeps_its_charge_when_the_mode_changes_before_the_retry() {
    let mut app = spawn_process(&lost_at_the_deadline()).await;
    let (alice, kettle) = charged_then_stopped_at_the_deadline(&mut app).await;
    let charged = transaction_ids(&app).await;

    // The admin switches to the asynchronous checkout before the customer retries.
    let admin = app.admin_token().await;
    app.set_checkout_mode(&admin, "async").await;
    let retry = app.checkout_with_key(&alice, KEY, &checkout_body()).await;
    let location = retry.headers()["location"]
        .to_str()
        .expect("Location")
        .to_string();
    expect_json(retry, StatusCode::ACCEPTED).await;
    let order = settled(&app, &alice, &location).await;
    assert_eq!(order["status"], "confirmed");
    assert_eq!(
        order["payment"]["transaction_id"], charged[0],
        "the worker attached the key's charge"
    );
    assert_eq!(transaction_ids(&app).await, charged, "not charged again");
    assert_eq!(app.stock_of(kettle).await, (4, 0));
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "payments_reattached_total", &[]),
        Some(1.0)
    );
    jobs_finished(&app).await;
    assert_eq!(
        app.emails_per_message_id()
            .into_values()
            .collect::<Vec<_>>(),
        [1],
        "one confirmation"
    );
    app.assert_ledger(Ledger::paid(1)).await;
}

/// The earlier charge of a key no longer matches the cart (an admin changed the price
/// before the retry), in either mode: it is refunded, the customer is told to check
/// out anew with a new key, the cart is kept — and the key's answer says so for good.
async fn a_retry_after_a_price_change(mode: &str) {
    let mut app = spawn_process(&lost_at_the_deadline()).await;
    let (alice, kettle) = charged_then_stopped_at_the_deadline(&mut app).await;
    let charged = transaction_ids(&app).await;
    let admin = app.admin_token().await;
    app.set_checkout_mode(&admin, mode).await;
    expect_json(
        app.patch(
            &format!("/api/products/{kettle}"),
            Some(&admin),
            &json!({"price": "17.50"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    let refused = expect_problem(
        app.checkout_with_key(&alice, KEY, &checkout_body()).await,
        StatusCode::CONFLICT,
        "cart-changed",
    )
    .await;
    let detail = refused["detail"].as_str().expect("detail");
    assert!(
        detail.contains("17.50")
            && detail.contains("19.99")
            && detail.contains("was refunded")
            && detail.contains("new Idempotency-Key"),
        "{detail}"
    );
    let refunded: String =
        sqlx::query_scalar("SELECT status FROM gateway_charges WHERE transaction_id = $1")
            .bind(&charged[0])
            .fetch_one(&app.db)
            .await
            .expect("ledger");
    assert_eq!(refunded, "refunded");
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(cart["total"], "17.50", "the cart is kept");
    // The key's answer is that refusal, replayed — not an endless "key reused".
    let again = app.checkout_with_key(&alice, KEY, &checkout_body()).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    expect_problem(again, StatusCode::CONFLICT, "cart-changed").await;
    assert_eq!(app.count("orders").await, 0);
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 1,
        without_order: 0,
    })
    .await;

    // The way forward: a new key, the new price.
    app.set_checkout_mode(&admin, "blocking").await;
    let order = expect_json(
        app.checkout_with_key(&alice, "checkout-of-the-day-again", &checkout_body())
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(order["payment"]["amount"], "17.50");
    app.assert_ledger(Ledger {
        approved: 2,
        with_order: 1,
        refunded: 1,
        without_order: 0,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_price_change_refunds_the_earlier_payment() {
    a_retry_after_a_price_change("blocking").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asynchronous_retry_after_a_price_change_refunds_the_earlier_payment() {
    a_retry_after_a_price_change("async").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_first_run_keeps_its_order_as_the_keys_answer() {
    let mut replicas = spawn_replicas(2, &[("PAYMENT_DELAY_MS", "1500")]).await;
    let (alice, _kettle) = replicas[0].alice_with_kettles(1).await;
    // The first run, on replica A: into the gateway's 1.5 s, then A stalls (SIGSTOP)
    // holding the cart's row lock in its open transaction.
    let on_a = tokio::spawn(
        replicas[0]
            .client
            .post(format!("{}/api/orders/checkout", replicas[0].address))
            .bearer_auth(&alice)
            .header("Idempotency-Key", KEY)
            .json(&checkout_body())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await; // into the gateway's wait
    replicas[0].stall();
    let stalled = Instant::now();

    // The retry, on replica B: 409 while A's lease runs, then B takes the key over;
    // its run waits on the cart lock A holds.
    let (b, b_token) = (replicas[1].client.clone(), alice.clone());
    let b_url = format!("{}/api/orders/checkout", replicas[1].address);
    let on_b = tokio::spawn(async move {
        let mut conflicts = 0;
        loop {
            let response = b
                .post(&b_url)
                .bearer_auth(&b_token)
                .header("Idempotency-Key", KEY)
                .json(&checkout_body())
                .send()
                .await
                .expect("B answers");
            if response.status() != StatusCode::CONFLICT {
                return (conflicts, response);
            }
            conflicts += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    // Past A's lease (10 s): B has taken the key over and waits on the lock.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stalled.elapsed())).await;
    replicas[0].resume();

    let a_answer = on_a.await.expect("join").expect("A answers");
    let a_order = expect_json(a_answer, StatusCode::CREATED).await;
    let (conflicts, b_answer) = on_b.await.expect("join");
    assert!(conflicts > 0, "B was told the first run was still going");
    assert_eq!(b_answer.headers()["idempotent-replayed"], "true");
    let b_order = expect_json(b_answer, StatusCode::CREATED).await;
    assert_eq!(b_order["id"], a_order["id"], "B answers with A's order");
    // Every later replay, on either replica, is that order too.
    for replica in &replicas {
        let replay = replica
            .checkout_with_key(&alice, KEY, &checkout_body())
            .await;
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let replayed = expect_json(replay, StatusCode::CREATED).await;
        assert_eq!(replayed["id"], a_order["id"]);
    }
    assert_eq!(replicas[0].smtp.messages().len(), 1);
    replicas[0].assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_order_gets_a_cancellation_notice_and_no_confirmation() {
    let app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("PAYMENT_DELAY_MS", "1000"),
        ("EMAIL_DELAY_MS", "2000"),
    ])
    .await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    let accepted = expect_json(app.checkout(&alice).await, StatusCode::ACCEPTED).await;
    let cancel = format!("/api/orders/{}/cancel", accepted["id"]);
    // 409 while the charge runs; cancelled the moment it settles, while the
    // confirmation e-mail waits on the slow mail server.
    let cancelled = eventually(Duration::from_secs(10), "the cancellation", || async {
        let response = app.post(&cancel, Some(&alice), &json!({})).await;
        match response.status() {
            StatusCode::CONFLICT => None,
            _ => Some(expect_json(response, StatusCode::OK).await),
        }
    })
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["payment"]["status"], "refunded");
    assert_eq!(app.stock_of(kettle).await, (5, 0));

    let jobs = jobs_finished(&app).await;
    let status_of = |kind: &str| {
        jobs.iter()
            .find(|(k, ..)| k == kind)
            .map(|(_, status, _)| status.as_str())
    };
    assert_eq!(status_of("send_confirmation"), Some("skipped"), "{jobs:?}");
    assert_eq!(status_of("send_cancellation"), Some("done"), "{jobs:?}");
    let mails = app.smtp.messages();
    assert_eq!(mails.len(), 1, "the cancellation notice only");
    let id = accepted["id"].as_i64().expect("id");
    assert!(mails[0].data.contains(&format!("Order #{id} cancelled")));
    assert!(mails[0].data.contains("payment of 39.98 has been refunded"));
    assert_eq!(
        mails[0].message_id(),
        format!("<order-{id}.cancellation@example.com>")
    );
    let notifications = expect_json(
        app.get("/api/notifications", Some(&alice)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(notifications[0]["kind"], "order_cancelled");
    let metrics = app.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "outbox_jobs_processed_total",
            &[("kind", "send_confirmation"), ("outcome", "skipped")]
        ),
        Some(1.0)
    );
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 1,
        without_order: 0,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cart_edit_during_a_checkout_waits_for_it_and_is_never_lost() {
    let app = spawn_process(&[("EMAIL_DELAY_MS", "1500")]).await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let item = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await["items"]
        [0]["id"]
        .as_i64()
        .expect("item id");
    let checkout = app.checkout(&alice);
    let edits = async {
        app.wait_for_checkouts_in_flight(1).await;
        // About time itself: the checkout holds its cart's lock within milliseconds of
        // starting, and then waits 1.5 s on the mail server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A change of the item being ordered, and a new item, while the checkout runs.
        let changed = app
            .patch(
                &format!("/api/cart/items/{item}"),
                Some(&alice),
                &json!({"quantity": 3}),
            )
            .await;
        let added = app.add_to_cart(&alice, kettle, 2).await;
        (changed, added)
    };
    let (ordered, (changed, added)) = tokio::join!(checkout, edits);
    let order = expect_json(ordered, StatusCode::CREATED).await;
    assert_eq!(order["items"][0]["quantity"], 1);
    // The change waited for the checkout, which had ordered (and removed) the item:
    // not a 200 for an edit that then vanished.
    expect_problem(changed, StatusCode::NOT_FOUND, "not-found").await;
    // The addition waited too, and is in the cart the checkout left.
    expect_json(added, StatusCode::CREATED).await;
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(cart["items"][0]["quantity"], 2, "{cart}");
    assert_eq!(app.stock_of(kettle).await, (4, 0));
    app.assert_ledger(Ledger::paid(1)).await;
}
