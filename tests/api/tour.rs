//! The README's "Break it" tour, one test per scenario: each does what the tour says and
//! checks that the metric the tour points at moves.

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{Ledger, expect_json, sample, spawn_process};

/// `count` customers, each with `quantity` of `product` in the cart.
#[tokio::test(flavor = "multi_thread")]
async fn tour_1_the_payment_and_the_email_are_where_the_time_goes() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "100"), ("EMAIL_DELAY_MS", "200")]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    for token in app.buyers(2, kettle, "tour1-").await {
        expect_json(app.checkout(&token).await, StatusCode::CREATED).await;
    }
    let metrics = app.metrics().await;
    let step = |name: &str| {
        sample(
            &metrics,
            "checkout_step_duration_seconds_sum",
            &[("step", name)],
        )
        .unwrap()
    };
    let payment = step("process_payment");
    let email = step("send_email");
    assert!(
        payment >= 0.2 && email >= 0.4,
        "payment {payment}, email {email}"
    );
    for other in [
        "validate_cart",
        "check_inventory",
        "reserve_inventory",
        "create_order",
        "create_order_items",
        "record_payment",
        "reduce_inventory",
        "create_notification",
        "clear_cart",
        "commit",
    ] {
        assert!(
            step(other) < payment,
            "{other} took longer than the payment"
        );
    }
    app.assert_ledger_counted(Ledger::paid(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tour_2_buyers_of_one_scarce_product_wait_on_its_row_lock() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "200")]).await;
    let admin = app.admin_token().await;
    let scarce = app.create_product(&admin, "Last few", "99.00", 2).await;
    let tokens = app.buyers(4, scarce, "tour2-").await;
    let statuses: Vec<StatusCode> = join_all(
        tokens
            .iter()
            .map(|t| async { app.checkout(t).await.status() }),
    )
    .await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        2
    );
    let metrics = app.metrics().await;
    let waited = sample(&metrics, "checkout_inventory_lock_wait_seconds_sum", &[]).unwrap();
    assert!(
        waited >= 0.2,
        "the buyers behind the first one waited {waited} s in total"
    );
    assert_eq!(
        sample(
            &metrics,
            "checkouts_total",
            &[("outcome", "insufficient_stock")]
        ),
        Some(2.0)
    );
    app.assert_ledger_counted(Ledger::paid(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tour_3_checkouts_exhaust_the_pool_and_catalog_reads_wait_too() {
    let app = spawn_process(&[("DB_MAX_CONNECTIONS", "2"), ("PAYMENT_DELAY_MS", "300")]).await;
    let admin = app.admin_token().await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        let product = app
            .create_product(&admin, &format!("Item {i}"), "5.00", 10)
            .await;
        tokens.extend(app.buyers(1, product, &format!("tour3-{i}-")).await);
    }
    let checkouts = join_all(
        tokens
            .iter()
            .map(|t| async { app.checkout(t).await.status() }),
    );
    // Browse once the checkouts hold both connections of the pool.
    let browse = async {
        app.wait_for_checkouts_in_flight(2).await;
        app.get("/api/products", None).await.status()
    };
    let (statuses, browsed) = tokio::join!(checkouts, browse);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(browsed, StatusCode::OK);

    let metrics = app.metrics().await;
    let waited = sample(&metrics, "db_pool_acquire_duration_seconds_sum", &[]).unwrap();
    assert!(waited >= 0.3, "requests waited {waited} s for a connection");
    // The catalog read queued behind the checkouts for a connection.
    let fast_reads = sample(
        &metrics,
        "http_server_request_duration_seconds_bucket",
        &[
            ("method", "GET"),
            ("route", "/api/products"),
            ("status", "200"),
            ("le", "0.25"),
        ],
    );
    assert_eq!(fast_reads, Some(0.0), "the catalog read took over 250 ms");
    app.assert_ledger_counted(Ledger::paid(4)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tour_4_half_the_payments_fail() {
    // 100 checkouts at 50 %: the declines fall within 30..=70 but for one run in a
    // million (five standard deviations), so "about half" is what this proves.
    const CHECKOUTS: usize = 100;
    let app = spawn_process(&[]).await;
    app.faults(&["set", "--payment-success-rate", "0.5"]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 100).await;
    let buyer = app.customer("tour4@example.com").await;
    let mut confirmed = 0;
    for _ in 0..CHECKOUTS {
        // A declined checkout keeps the cart; a confirmed one empties it.
        let cart = expect_json(app.get("/api/cart", Some(&buyer)).await, StatusCode::OK).await;
        if cart["items"].as_array().is_none_or(Vec::is_empty) {
            expect_json(
                app.add_to_cart(&buyer, kettle, 1).await,
                StatusCode::CREATED,
            )
            .await;
        }
        let status = app.checkout(&buyer).await.status();
        match status {
            StatusCode::CREATED => confirmed += 1,
            StatusCode::PAYMENT_REQUIRED => {}
            other => panic!("a checkout answered {other}"),
        }
    }
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "fault_payment_success_ratio", &[]),
        Some(0.5)
    );
    let declined = sample(
        &metrics,
        "checkouts_total",
        &[("outcome", "payment_declined")],
    )
    .unwrap();
    assert_eq!(declined as usize, CHECKOUTS - confirmed);
    assert!(
        (30.0..=70.0).contains(&declined),
        "about half of {CHECKOUTS} declined: {declined}"
    );
    assert_eq!(
        sample(
            &metrics,
            "payment_gateway_duration_seconds_count",
            &[("outcome", "declined")]
        ),
        Some(declined)
    );
    app.assert_ledger_counted(Ledger::paid(confirmed as i64))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tour_5_a_mail_outage_orphans_payments() {
    let app = spawn_process(&[]).await;
    app.faults(&["set", "--email-outage", "true"]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    for token in app.buyers(2, kettle, "tour5-").await {
        assert_eq!(app.checkout(&token).await.status(), StatusCode::BAD_GATEWAY);
    }
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "fault_email_outage", &[]), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            "payments_orphaned_total",
            &[("reason", "email_failed")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "payments_orphaned_amount_cents_total",
            &[("reason", "email_failed")]
        ),
        Some(3998.0)
    );
    assert_eq!(app.count("orders").await, 0, "no order survived");
    app.assert_ledger_counted(Ledger {
        approved: 2,
        with_order: 0,
        refunded: 0,
        without_order: 2,
    })
    .await;
}
