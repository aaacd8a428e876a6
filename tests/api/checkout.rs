//! The blocking checkout: the happy path, each failure leaving nothing behind, the
//! concurrency guarantees and live fault injection.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;

use crate::helpers::{
    HangUp, Ledger, TestApp, closed_port, expect_json, expect_problem, spawn_app, spawn_app_with,
};

/// Nothing of a failed checkout may remain: no order, payment or notification, stock
/// and reservations as before, the cart as it was.
async fn assert_nothing_written(
    app: &TestApp,
    product: i64,
    stock: i32,
    cart_quantity: i64,
    token: &str,
) {
    assert_eq!(app.count("orders").await, 0, "no order row");
    assert_eq!(app.count("order_items").await, 0, "no order items");
    assert_eq!(app.count("payments").await, 0, "no payment row");
    assert_eq!(app.count("notifications").await, 0, "no notification");
    assert_eq!(app.stock_of(product).await, (stock, 0), "stock untouched");
    let cart = expect_json(app.get("/api/cart", Some(token)).await, StatusCode::OK).await;
    assert_eq!(cart["items"][0]["quantity"], cart_quantity, "cart kept");
}

#[tokio::test]
async fn a_checkout_confirms_the_order_and_does_all_eleven_things() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    let mug = app.create_product(&admin, "Mug", "4.50", 5).await;
    expect_json(app.add_to_cart(&alice, mug, 3).await, StatusCode::CREATED).await;
    expect_json(
        app.add_to_cart(&alice, kettle, 2).await,
        StatusCode::CREATED,
    )
    .await;

    let sent = std::time::Instant::now();
    let order = expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;
    let took_ms = sent.elapsed().as_millis() as i64;
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total"], "53.48");
    assert_eq!(order["shipping_address"], "1 Test Street\n12345 Testville");
    // The checkout's own duration: within the request the client saw.
    let processing_ms = order["processing_time_ms"]
        .as_i64()
        .expect("processing_time_ms");
    assert!(
        processing_ms <= took_ms,
        "{processing_ms} ms > {took_ms} ms"
    );
    let items = order["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["product_name"], "Kettle");
    assert_eq!(items[0]["unit_price"], "19.99");
    assert_eq!(items[0]["subtotal"], "39.98");
    let transaction_id = order["payment"]["transaction_id"].as_str().unwrap();
    assert!(transaction_id.starts_with("txn_"));
    assert_eq!(order["payment"]["amount"], "53.48");
    assert_eq!(order["payment"]["method"], "credit_card");

    // The stored order agrees with the response.
    let id = order["id"].as_i64().unwrap();
    let stored = expect_json(
        app.get(&format!("/api/orders/{id}"), Some(&alice)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(stored, order);
    // Stock reduced, reservations released, cart emptied, notification created.
    assert_eq!(app.stock_of(kettle).await, (3, 0));
    assert_eq!(app.stock_of(mug).await, (2, 0));
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 0);
    assert_eq!(app.count("notifications").await, 1);
    // The confirmation went out over SMTP.
    let mails = app.smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].recipients[0].contains("alice@example.com"));
    assert!(mails[0].data.contains(&format!("Order #{id} confirmed")));
    assert!(mails[0].data.contains("Kettle"));
    assert!(mails[0].data.contains("53.48"));
    app.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test]
async fn an_empty_cart_is_a_400() {
    let app = spawn_app().await;
    let alice = app.customer("alice@example.com").await;
    expect_problem(
        app.checkout(&alice).await,
        StatusCode::BAD_REQUEST,
        "empty-cart",
    )
    .await;
    assert_eq!(app.count("orders").await, 0);
}

#[tokio::test]
async fn insufficient_stock_is_a_409_naming_the_products() {
    let app = spawn_app().await;
    let (alice, kettle) = app.alice_with_kettles(4).await;
    // Someone else bought most of it meanwhile.
    sqlx::query("UPDATE inventory SET quantity = 2 WHERE product_id = $1")
        .bind(kettle)
        .execute(&app.db)
        .await
        .unwrap();
    let problem = expect_problem(
        app.checkout(&alice).await,
        StatusCode::CONFLICT,
        "insufficient-stock",
    )
    .await;
    assert_eq!(problem["products"][0]["product_id"], kettle);
    assert_eq!(problem["products"][0]["product_name"], "Kettle");
    assert_eq!(problem["products"][0]["available"], 2);
    assert_nothing_written(&app, kettle, 2, 4, &alice).await;
}

#[tokio::test]
async fn a_declined_payment_is_a_402_and_leaves_nothing() {
    let app = spawn_app_with(&[("PAYMENT_SUCCESS_RATE", "0")]).await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    expect_problem(
        app.checkout(&alice).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment-declined",
    )
    .await;
    assert_nothing_written(&app, kettle, 5, 2, &alice).await;
    assert!(app.smtp.messages().is_empty());
    app.assert_ledger(Ledger::paid(0)).await;
}

#[tokio::test]
async fn an_idle_smtp_connection_is_reused_and_one_the_server_closed_is_replaced() {
    let app = spawn_app().await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;
    buy_again(&app, &alice, kettle).await;
    // The first confirmation's connection carried the second.
    assert_eq!(app.smtp.connections_accepted(), 1);
    // The server ends the connection waiting in the mailer, with the `421` of an idle
    // timeout, then without a word: the next confirmation goes on a new one.
    for (how, connections) in [(HangUp::With421, 2), (HangUp::Silently, 3)] {
        app.smtp.hang_up_connections(how).await;
        buy_again(&app, &alice, kettle).await;
        assert_eq!(app.smtp.connections_accepted(), connections, "{how:?}");
    }
    assert_eq!(app.smtp.messages().len(), 4);
    app.assert_ledger(Ledger::paid(4)).await;
}

/// One more kettle, bought and confirmed.
async fn buy_again(app: &TestApp, customer: &str, kettle: i64) {
    expect_json(
        app.add_to_cart(customer, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let order = expect_json(app.checkout(customer).await, StatusCode::CREATED).await;
    assert_eq!(order["status"], "confirmed");
}

#[tokio::test]
async fn a_dead_mail_server_is_a_502_and_rolls_everything_back() {
    let port = closed_port().await;
    let app = spawn_app_with(&[("SMTP_PORT", &port.to_string())]).await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    let problem = expect_problem(
        app.checkout(&alice).await,
        StatusCode::BAD_GATEWAY,
        "email-failed",
    )
    .await;
    // The answer says what happened to the money, not only that the order is gone.
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("payment of 39.98 was taken") && detail.contains("will be refunded"),
        "{detail}"
    );
    assert_nothing_written(&app, kettle, 5, 2, &alice).await;
    // The gateway charged before the mail server failed: one orphaned payment.
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 0,
        without_order: 1,
    })
    .await;
}

#[tokio::test]
async fn a_stuck_mail_server_times_out_and_releases_the_locks() {
    // Accepts connections and then says nothing, like a hung SMTP server.
    let stuck = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = stuck.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stuck.accept().await {
            held.push(stream);
        }
    });
    let app = spawn_app_with(&[("SMTP_PORT", &port.to_string()), ("SMTP_TIMEOUT_MS", "300")]).await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let checkout = tokio::time::timeout(Duration::from_secs(20), app.checkout(&alice))
        .await
        .expect("the SMTP timeout ends the checkout");
    expect_problem(checkout, StatusCode::BAD_GATEWAY, "email-failed").await;

    // The inventory row is free again: an update does not wait for a lock.
    sqlx::query("SET lock_timeout = '1s'")
        .execute(&app.db)
        .await
        .ok();
    let mut conn = app.db.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '1s'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE inventory SET quantity = quantity WHERE product_id = $1")
        .bind(kettle)
        .execute(&mut *conn)
        .await
        .expect("no lock left behind");
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 0,
        without_order: 1,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_buyers_never_oversell() {
    const BUYERS: usize = 50;
    const UNITS: i64 = 7;
    let app = spawn_app_with(&[("PAYMENT_DELAY_MS", "5")]).await;
    let admin = app.admin_token().await;
    let scarce = app.create_product(&admin, "Last few", "9.99", UNITS).await;
    let tokens = join_all((0..BUYERS).map(|i| {
        let app = &app;
        async move {
            let token = app.customer(&format!("buyer{i}@example.com")).await;
            expect_json(
                app.add_to_cart(&token, scarce, 1).await,
                StatusCode::CREATED,
            )
            .await;
            token
        }
    }))
    .await;

    let statuses: Vec<StatusCode> = join_all(
        tokens
            .iter()
            .map(|token| async { app.checkout(token).await.status() }),
    )
    .await;
    let confirmed = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let sold_out = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        confirmed as i64, UNITS,
        "exactly the units in stock are sold: {statuses:?}"
    );
    assert_eq!(
        sold_out,
        BUYERS - UNITS as usize,
        "everyone else gets a clean 409"
    );
    assert_eq!(app.stock_of(scarce).await, (0, 0));
    assert_eq!(app.count("orders").await, UNITS);
    let sold: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(quantity), 0) FROM order_items")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sold, UNITS);
    app.assert_ledger(Ledger::paid(UNITS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carts_sharing_products_in_opposite_order_do_not_deadlock() {
    // The payment delay keeps both transactions open at the same time.
    let app = spawn_app_with(&[("PAYMENT_DELAY_MS", "100")]).await;
    let admin = app.admin_token().await;
    let first = app.create_product(&admin, "First", "1.00", 100).await;
    let second = app.create_product(&admin, "Second", "2.00", 100).await;
    let alice = app.customer("alice@example.com").await;
    let bob = app.customer("bob@example.com").await;
    for _round in 0..5 {
        expect_json(app.add_to_cart(&alice, first, 1).await, StatusCode::CREATED).await;
        expect_json(
            app.add_to_cart(&alice, second, 1).await,
            StatusCode::CREATED,
        )
        .await;
        expect_json(app.add_to_cart(&bob, second, 1).await, StatusCode::CREATED).await;
        expect_json(app.add_to_cart(&bob, first, 1).await, StatusCode::CREATED).await;
        let (a, b) = tokio::join!(app.checkout(&alice), app.checkout(&bob));
        expect_json(a, StatusCode::CREATED).await;
        expect_json(b, StatusCode::CREATED).await;
    }
    assert_eq!(app.stock_of(first).await, (90, 0));
    assert_eq!(app.stock_of(second).await, (90, 0));
    app.assert_ledger(Ledger::paid(10)).await;
}

#[tokio::test]
async fn a_double_clicked_checkout_orders_once() {
    let app = spawn_app_with(&[("PAYMENT_DELAY_MS", "100")]).await;
    let (alice, _) = app.alice_with_kettles(1).await;
    let (a, b) = tokio::join!(app.checkout(&alice), app.checkout(&alice));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::BAD_REQUEST]);
    assert_eq!(app.count("orders").await, 1);
    app.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test]
async fn fault_injection_changes_the_next_checkout() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 50).await;

    let initial = expect_json(
        app.get("/api/admin/faults", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        initial,
        json!({"payment_delay_ms": 0, "payment_success_rate": 1.0, "email_delay_ms": 0, "email_outage": false, "email_hang": false, "payment_flap_rate": 0.0, "payment_capacity": 0})
    );

    // Payments start failing.
    let updated = expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"payment_success_rate": 0.0}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["payment_success_rate"], 0.0);
    assert_eq!(updated["email_outage"], false, "other settings unchanged");
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    expect_problem(
        app.checkout(&alice).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment-declined",
    )
    .await;

    // The mail server goes down.
    expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"payment_success_rate": 1.0, "email_outage": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_problem(
        app.checkout(&alice).await,
        StatusCode::BAD_GATEWAY,
        "email-failed",
    )
    .await;

    // Slow payments: the next checkout takes at least the injected delay.
    expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"email_outage": false, "payment_delay_ms": 300}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let order = expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;
    assert!(
        order["processing_time_ms"].as_i64().unwrap() >= 300,
        "{order}"
    );

    // Nonsense is refused and changes nothing.
    for bad in [
        json!({"payment_success_rate": 1.5}),
        json!({"payment_success_rate": -0.1}),
        json!({"payment_delay_ms": -5}),
        json!({"email_delay_ms": 86_400_000}),
        json!({"email_outage": "yes"}),
        json!({"bogus": 1}),
    ] {
        expect_problem(
            app.put("/api/admin/faults", Some(&admin), &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
    }
    let after = expect_json(
        app.get("/api/admin/faults", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        after,
        json!({"payment_delay_ms": 300, "payment_success_rate": 1.0, "email_delay_ms": 0, "email_outage": false, "email_hang": false, "payment_flap_rate": 0.0, "payment_capacity": 0})
    );
}

#[tokio::test]
async fn invalid_checkout_requests_are_422() {
    let app = spawn_app().await;
    let (alice, _) = app.alice_with_kettles(1).await;
    for (body, field) in [
        (
            json!({"shipping_address": "", "payment_method": "credit_card"}),
            "shipping_address",
        ),
        (
            json!({"shipping_address": "1 Road", "payment_method": "barter"}),
            "payment_method",
        ),
        (json!({"payment_method": "credit_card"}), "shipping_address"),
    ] {
        let problem = expect_problem(
            app.post("/api/orders/checkout", Some(&alice), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    assert_eq!(app.count("orders").await, 0);
}

#[tokio::test]
async fn a_total_too_large_for_an_order_is_a_422_and_leaves_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let widget = app.create_product(&admin, "Widget", "1.00", 200).await;
    expect_json(
        app.add_to_cart(&alice, widget, 101).await,
        StatusCode::CREATED,
    )
    .await;
    // The price rises after the cart was filled: the checkout's total no longer fits.
    expect_json(
        app.patch(
            &format!("/api/products/{widget}"),
            Some(&admin),
            &json!({"price": "99999999.99"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_problem(
        app.checkout(&alice).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "total-too-large",
    )
    .await;
    assert_nothing_written(&app, widget, 200, 101, &alice).await;
    app.assert_ledger(Ledger::paid(0)).await;
}
