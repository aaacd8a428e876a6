//! The "after" picture: the same checkout, asynchronous. 202 at once with a `Location`;
//! workers charge, confirm and e-mail; a decline fails the order and gives the stock
//! back; a mail outage delays e-mails and nothing else; a killed worker loses nothing;
//! switching modes under load loses no checkout.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Ledger, TestApp, eventually, expect_json, sample, spawn_app_running_jobs_by_hand, spawn_process,
};

/// Follows an order until it leaves `pending` (bounded); returns it.
async fn settled(app: &TestApp, token: &str, location: &str) -> Value {
    eventually(Duration::from_secs(15), "the order settled", || async {
        let order = expect_json(app.get(location, Some(token)).await, StatusCode::OK).await;
        (order["status"] != "pending").then_some(order)
    })
    .await
}

/// The `Location` of a 202, after checking the answer.
async fn accepted(response: reqwest::Response) -> (String, Value) {
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let order = expect_json(response, StatusCode::ACCEPTED).await;
    let location = location.expect("a 202 says where to follow the order");
    assert_eq!(location, format!("/api/orders/{}", order["id"]));
    assert_eq!(order["status"], "pending");
    assert!(order["payment"].is_null(), "not charged yet: {order}");
    (location, order)
}

/// Checkouts of all `tokens` at once; their statuses.
async fn wave(app: &TestApp, tokens: &[String]) -> Vec<StatusCode> {
    join_all(
        tokens
            .iter()
            .map(|token| async move { app.checkout(token).await.status() }),
    )
    .await
}

async fn count_where(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&app.db)
        .await
        .expect("count")
}

const CONFIRMED: &str = "SELECT count(*) FROM orders WHERE status = 'confirmed'";

#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_order_is_charged_confirmed_and_emailed_by_the_workers() {
    let app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("PAYMENT_DELAY_MS", "300"),
        ("EMAIL_DELAY_MS", "300"),
    ])
    .await;
    let (alice, kettle) = app.alice_with_kettles(2).await;

    let (location, order) = accepted(app.checkout(&alice).await).await;
    // Reserved at once, the cart emptied, nothing charged yet.
    assert_eq!(app.stock_of(kettle).await, (5, 2));
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    assert!(cart["items"].as_array().unwrap().is_empty());

    let confirmed = settled(&app, &alice, &location).await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["id"], order["id"]);
    assert_eq!(confirmed["payment"]["amount"], "39.98");
    assert!(confirmed["processing_time_ms"].as_i64().unwrap() >= 300);
    assert_eq!(app.stock_of(kettle).await, (3, 0));
    // The e-mail follows as a job of its own.
    let mail = eventually(Duration::from_secs(5), "the e-mail", || {
        let mail = app.smtp.messages();
        std::future::ready((!mail.is_empty()).then_some(mail))
    })
    .await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0]
            .data
            .contains(&format!("Order #{} confirmed", order["id"]))
    );
    let notifications = expect_json(
        app.get("/api/notifications", Some(&alice)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(notifications[0]["kind"], "order_confirmed");

    let metrics = app.metrics().await;
    let value = |name: &str, labels: &[(&str, &str)]| sample(&metrics, name, labels);
    assert_eq!(
        value(
            "checkout_duration_seconds_count",
            &[("mode", "async"), ("outcome", "accepted")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "order_time_to_confirmed_seconds_count",
            &[("mode", "async")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "checkouts_total",
            &[("mode", "async"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "outbox_jobs_processed_total",
            &[("kind", "charge_order"), ("outcome", "done")]
        ),
        Some(1.0)
    );
    assert_eq!(value("checkout_mode", &[("mode", "async")]), Some(1.0));
    app.assert_ledger_counted(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_buyers_in_async_mode_get_exactly_the_units_in_stock() {
    const BUYERS: usize = 30;
    const UNITS: i64 = 5;
    let app = spawn_app_running_jobs_by_hand(&[("CHECKOUT_MODE", "async")]).await;
    let admin = app.admin_token().await;
    let scarce = app.create_product(&admin, "Last few", "9.99", UNITS).await;
    let buyers = app.buyers(BUYERS, scarce, "async-race-").await;
    let answers = join_all(buyers.iter().map(|token| app.checkout(token))).await;
    let statuses: Vec<StatusCode> = answers.iter().map(reqwest::Response::status).collect();
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let sold_out = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(accepted as i64, UNITS, "{statuses:?}");
    assert_eq!(sold_out, BUYERS - UNITS as usize, "clean 409s for the rest");
    // A charge and an e-mail for each accepted order.
    assert_eq!(app.run_due_jobs().await, 2 * UNITS as usize);
    assert_eq!(count_where(&app, CONFIRMED).await, UNITS);
    assert_eq!(app.stock_of(scarce).await, (0, 0));
    app.assert_ledger(Ledger::paid(UNITS)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_fails_the_order_and_gives_the_stock_and_the_cart_back() {
    let app = spawn_app_running_jobs_by_hand(&[
        ("CHECKOUT_MODE", "async"),
        ("PAYMENT_SUCCESS_RATE", "0"),
    ])
    .await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    let (location, _) = accepted(app.checkout(&alice).await).await;
    assert_eq!(
        app.run_due_jobs().await,
        1,
        "the charge, and nothing after it"
    );
    let failed = expect_json(app.get(&location, Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(failed["status"], "payment_failed");
    assert!(failed["payment"].is_null());
    assert_eq!(
        app.stock_of(kettle).await,
        (5, 0),
        "the reservation is released"
    );
    // The cart the checkout emptied holds the units again, so the customer can retry.
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    let lines: Vec<(i64, i64)> = cart["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["product_id"].as_i64().unwrap_or(0),
                i["quantity"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(lines, [(kettle, 2)], "{cart}");
    let notifications = expect_json(
        app.get("/api/notifications", Some(&alice)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(notifications[0]["kind"], "payment_failed");
    assert!(
        app.smtp.messages().is_empty(),
        "no confirmation for a failed order"
    );
    app.assert_ledger(Ledger::paid(0)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_outage_delays_emails_and_fails_no_order() {
    let app = spawn_process(&[("CHECKOUT_MODE", "async"), ("EMAIL_OUTAGE", "true")]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let buyers = app.buyers(3, kettle, "outage-").await;
    let mut locations = Vec::new();
    for token in &buyers {
        locations.push(accepted(app.checkout(token).await).await.0);
    }
    for (token, location) in buyers.iter().zip(&locations) {
        assert_eq!(settled(&app, token, location).await["status"], "confirmed");
    }
    // The e-mails wait and retry while the outage lasts.
    eventually(
        Duration::from_secs(10),
        "three e-mails waiting to be retried",
        || async {
            let retried = count_where(
                &app,
                "SELECT count(*) FROM outbox_jobs WHERE kind = 'send_confirmation' \
             AND status = 'pending' AND attempts >= 1 AND last_error IS NOT NULL",
            )
            .await;
            (retried == 3).then_some(())
        },
    )
    .await;
    assert!(app.smtp.messages().is_empty());

    // The outage ends: every e-mail goes out (within the backoff), none is lost.
    expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"email_outage": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "every e-mail delivered after the outage",
        || std::future::ready((app.smtp.messages().len() == 3).then_some(())),
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "payments_orphaned_total", &[]), Some(0.0));
    assert!(
        sample(
            &metrics,
            "outbox_jobs_processed_total",
            &[("kind", "send_confirmation"), ("outcome", "retried")]
        )
        .unwrap()
            >= 3.0
    );
    app.assert_ledger_counted(Ledger::paid(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_loses_nothing_and_charges_once() {
    let mut app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("PAYMENT_DELAY_MS", "1500"),
        ("OUTBOX_LEASE_SECONDS", "2"),
    ])
    .await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let (location, order) = accepted(app.checkout(&alice).await).await;
    // The worker is waiting on the gateway (1.5 s) when the process dies.
    eventually(Duration::from_secs(5), "the charge job claimed", || async {
        let claimed = count_where(
            &app,
            "SELECT count(*) FROM outbox_jobs WHERE kind = 'charge_order' AND attempts = 1",
        )
        .await;
        (claimed == 1).then_some(())
    })
    .await;
    app.kill_and_restart().await;

    let confirmed = settled(&app, &alice, &location).await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(app.stock_of(kettle).await, (4, 0));
    let charges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gateway_charges WHERE idempotency_key = $1")
            .bind(format!("order-{}", order["id"]))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(charges, 1, "one charge in the gateway's ledger");
    let attempts: i32 = sqlx::query_scalar(
        "SELECT attempts FROM outbox_jobs WHERE order_id = $1 AND kind = 'charge_order'",
    )
    .bind(order["id"].as_i64().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(attempts, 2, "the killed attempt and the one that finished");
    app.assert_ledger_counted(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_charge_gets_the_gateways_first_answer() {
    // As if a worker had charged the card and died before confirming: the charge is in
    // the gateway's ledger, the job is still to do.
    let app = spawn_app_running_jobs_by_hand(&[("CHECKOUT_MODE", "async")]).await;
    let (alice, _) = app.alice_with_kettles(1).await;
    let (location, order) = accepted(app.checkout(&alice).await).await;
    sqlx::query(
        "INSERT INTO gateway_charges \
           (idempotency_key, order_id, amount, method, status, transaction_id) \
         VALUES ($1, $2, 19.99, 'credit_card', 'approved', 'txn_charged_before_the_crash')",
    )
    .bind(format!("order-{}", order["id"]))
    .bind(order["id"].as_i64().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    app.run_due_jobs().await;
    let confirmed = expect_json(app.get(&location, Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(
        confirmed["payment"]["transaction_id"], "txn_charged_before_the_crash",
        "the retry is answered from the ledger, not charged again"
    );
    app.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_modes_under_load_loses_no_checkout() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "150"), ("EMAIL_DELAY_MS", "150")]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 100).await;
    let buyers = app.buyers(24, kettle, "switch-").await;
    // Checkouts in three waves; the mode flips while the first two are running.
    let switching = async {
        app.wait_for_checkouts_in_flight(1).await;
        app.set_checkout_mode(&admin, "async").await;
    };
    let (first, ()) = tokio::join!(wave(&app, &buyers[..8]), switching);
    let switching_back = async {
        app.wait_for_checkouts_in_flight(1).await;
        app.set_checkout_mode(&admin, "blocking").await;
    };
    let (second, ()) = tokio::join!(wave(&app, &buyers[8..16]), switching_back);
    let third = wave(&app, &buyers[16..]).await;
    let statuses: Vec<StatusCode> = first.into_iter().chain(second).chain(third).collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::ACCEPTED),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::ACCEPTED) && statuses.contains(&StatusCode::CREATED));
    // Every checkout becomes a confirmed order.
    app.wait_for_confirmed_orders(24, Duration::from_secs(15))
        .await;
    assert_eq!(app.stock_of(kettle).await, (76, 0));
    app.assert_ledger_counted(Ledger::paid(24)).await;
}

/// The async checkout's jobs are bounded by `OUTBOX_CONCURRENCY` (hundreds), not by a
/// handful of workers: 64 charges against a slow gateway all wait on it at once — four
/// times the old worker count of 16 — and each order is still charged exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_charges_wait_on_the_gateway_at_once_and_each_is_charged_once() {
    const ORDERS: usize = 64;
    // Three seconds per charge leave a wide window in which all 64 are in the gateway.
    let app = spawn_process(&[("CHECKOUT_MODE", "async"), ("PAYMENT_DELAY_MS", "3000")]).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "Mug", "7.00", 100).await;
    let buyers = app.buyers(ORDERS, product, "many").await;

    let started = std::time::Instant::now();
    let answers = join_all(buyers.iter().map(|token| app.checkout(token))).await;
    for answer in answers {
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_jobs_in_flight("charge_order", ORDERS as u32, Duration::from_secs(15))
        .await;
    app.wait_for_confirmed_orders(ORDERS as i64, Duration::from_secs(30))
        .await;
    // Printed, not asserted (timing belongs to the benchmark): about one gateway delay,
    // where the fixed 16 workers of earlier versions took four.
    println!(
        "{ORDERS} orders confirmed {:?} after their checkouts",
        started.elapsed()
    );

    let charges_per_order: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM gateway_charges WHERE status <> 'declined' GROUP BY order_id",
    )
    .fetch_all(&app.db)
    .await
    .expect("ledger");
    assert_eq!(charges_per_order.len(), ORDERS);
    assert!(
        charges_per_order.iter().all(|&n| n == 1),
        "{charges_per_order:?}"
    );
    app.assert_ledger(Ledger::paid(ORDERS as i64)).await;
}

/// An order's timeline: the asynchronous one answers at once and the payment and the
/// e-mail follow, each at its second after the order was placed, with the attempts its
/// job took; `settled` once nothing waits. The blocking one is placed and confirmed (its
/// payment and e-mail are inside the request). Nobody else's.
#[tokio::test(flavor = "multi_thread")]
async fn an_orders_timeline_shows_the_work_after_the_answer() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "300"), ("EMAIL_DELAY_MS", "300")]).await;
    let admin = app.admin_token().await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let blocking = expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;

    app.set_checkout_mode(&admin, "async").await;
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let (location, _) = accepted(app.checkout(&alice).await).await;
    let timeline = eventually(Duration::from_secs(20), "a settled timeline", || async {
        let timeline = expect_json(
            app.get(&format!("{location}/timeline"), Some(&alice)).await,
            StatusCode::OK,
        )
        .await;
        (timeline["settled"] == true).then_some(timeline)
    })
    .await;
    let events: Vec<(String, f64, Value)> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["seconds"].as_f64().unwrap_or(-1.0),
                e["attempts"].clone(),
            )
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["placed", "charged", "confirmed", "email_sent"],
        "{events:?}"
    );
    let second = |name: &str| events.iter().find(|e| e.0 == name).map(|e| e.1);
    assert_eq!(second("placed"), Some(0.0));
    assert!(
        second("charged") >= Some(0.3),
        "the gateway's 300 ms: {events:?}"
    );
    assert!(
        second("email_sent") >= Some(second("confirmed").unwrap_or_default() + 0.3),
        "the mail server's 300 ms after the confirmation: {events:?}"
    );
    assert_eq!(events[1].2, json!(1), "charged at the first attempt");

    let blocking_timeline = expect_json(
        app.get(
            &format!("/api/orders/{}/timeline", blocking["id"]),
            Some(&alice),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let blocking_events: Vec<&str> = blocking_timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(blocking_events, ["placed", "confirmed"]);
    assert_eq!(blocking_timeline["settled"], true);

    let bob = app.customer("bob@example.com").await;
    let foreign = app.get(&format!("{location}/timeline"), Some(&bob)).await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
}

/// Each attempt of an order's background work is on its timeline: an e-mail tried
/// during a mail-server outage shows as under way with its first try, and once sent,
/// with both tries — the second at least the outbox's backoff (1 s, ±20 %) after the
/// first.
#[tokio::test]
async fn a_retried_email_shows_each_attempt_on_the_timeline() {
    let app = spawn_app_running_jobs_by_hand(&[]).await;
    let admin = app.admin_token().await;
    let (alice, _) = app.alice_with_kettles(1).await;
    app.set_checkout_mode(&admin, "async").await;
    let outage = |on: bool| json!({"email_outage": on});
    expect_json(
        app.put("/api/admin/faults", Some(&admin), &outage(true))
            .await,
        StatusCode::OK,
    )
    .await;
    let (location, _) = accepted(app.checkout(&alice).await).await;
    app.run_due_jobs().await; // charged and confirmed; the e-mail fails once
    let timeline = format!("{location}/timeline");
    let during = expect_json(app.get(&timeline, Some(&alice)).await, StatusCode::OK).await;
    let trying = event_named(&during, "email_trying");
    assert_eq!(trying["attempts"], 1, "{during}");
    assert_eq!(trying["attempt_seconds"].as_array().map(Vec::len), Some(1));
    assert_eq!(during["settled"], false);

    expect_json(
        app.put("/api/admin/faults", Some(&admin), &outage(false))
            .await,
        StatusCode::OK,
    )
    .await;
    let after = eventually(Duration::from_secs(10), "the e-mail sent", || async {
        app.run_due_jobs().await;
        let now = expect_json(app.get(&timeline, Some(&alice)).await, StatusCode::OK).await;
        (now["settled"] == true).then_some(now)
    })
    .await;
    let sent = event_named(&after, "email_sent");
    assert_eq!(sent["attempts"], 2, "{after}");
    let tries: Vec<f64> = sent["attempt_seconds"]
        .as_array()
        .expect("attempt_seconds")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(tries.len(), 2, "{after}");
    assert!(
        tries[1] >= tries[0] + 0.8,
        "the backoff between them: {tries:?}"
    );
    assert!(
        sent["seconds"].as_f64() >= Some(tries[1]),
        "sent at the end of its last try: {after}"
    );
    assert!(
        after["events"]
            .as_array()
            .is_some_and(|events| events.iter().all(|e| e["event"] != "email_trying")),
        "no longer under way: {after}"
    );
    assert_eq!(app.smtp.messages().len(), 1);
}

fn event_named<'a>(timeline: &'a Value, name: &str) -> &'a Value {
    timeline["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["event"] == name))
        .unwrap_or_else(|| panic!("no {name} in {timeline}"))
}
