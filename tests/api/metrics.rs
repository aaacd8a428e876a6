//! `/metrics` of the real binary after real traffic: the series the dashboards and alerts
//! are built on exist, with sensible values. (`promtool` lints the exposition in the
//! `external` test target.)

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_json, sample, spawn_process};

const STEPS: [&str; 12] = [
    "validate_cart",
    "check_inventory",
    "reserve_inventory",
    "create_order",
    "create_order_items",
    "process_payment",
    "record_payment",
    "reduce_inventory",
    "send_email",
    "create_notification",
    "clear_cart",
    "commit",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_shows_up_in_every_series() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "150"), ("EMAIL_DELAY_MS", "300")]).await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;
    assert_eq!(app.checkout(&alice).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get(&format!("/api/products/{kettle}"), None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/products/987654", None).await.status(),
        StatusCode::NOT_FOUND
    );

    let text = app.metrics().await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };

    // Outcomes, counted from the start (zero until they happen).
    assert_eq!(value("checkouts_total", &[("outcome", "success")]), 1.0);
    assert_eq!(value("checkouts_total", &[("outcome", "empty_cart")]), 1.0);
    assert_eq!(
        value("checkouts_total", &[("outcome", "payment_declined")]),
        0.0
    );
    assert_eq!(value("payments_orphaned_total", &[]), 0.0);
    assert_eq!(value("orders_revenue_cents_total", &[]), 3998.0);
    assert_eq!(value("checkouts_in_flight", &[]), 0.0);

    // The whole checkout and each step.
    assert_eq!(
        value("checkout_duration_seconds_count", &[("outcome", "success")]),
        1.0
    );
    assert!(value("checkout_duration_seconds_sum", &[("outcome", "success")]) >= 0.45);
    for step in STEPS {
        assert!(
            value("checkout_step_duration_seconds_count", &[("step", step)]) >= 1.0,
            "{step}"
        );
    }
    let payment = value(
        "checkout_step_duration_seconds_sum",
        &[("step", "process_payment")],
    );
    assert!(
        (0.15..1.15).contains(&payment),
        "process_payment took {payment}"
    );
    // The 150 ms payment lands above the 0.1 s bucket; the 300 ms e-mail above 0.25 s.
    let bucket = |step: &str, le: &str| {
        value(
            "checkout_step_duration_seconds_bucket",
            &[("step", step), ("le", le)],
        )
    };
    assert_eq!(bucket("process_payment", "0.1"), 0.0);
    assert_eq!(bucket("process_payment", "1"), 1.0);
    assert_eq!(bucket("send_email", "0.25"), 0.0);
    assert_eq!(bucket("send_email", "2"), 1.0);
    let email = value(
        "checkout_step_duration_seconds_sum",
        &[("step", "send_email")],
    );
    assert!((0.3..1.3).contains(&email), "send_email took {email}");
    assert_eq!(
        value(
            "payment_gateway_duration_seconds_count",
            &[("outcome", "approved")]
        ),
        1.0
    );
    assert_eq!(
        value("email_send_duration_seconds_count", &[("outcome", "sent")]),
        1.0
    );
    assert_eq!(
        value("checkout_inventory_lock_wait_seconds_count", &[]),
        1.0
    );

    // HTTP by route template, never by raw path.
    assert_eq!(
        value(
            "http_server_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("route", "/api/products/{id}"),
                ("status", "404")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "http_server_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/api/orders/checkout"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(!text.contains("route=\"/api/products/987654\""));
    assert!(text.contains("le=\"0.005\"") && text.contains("le=\"10\""));

    // The pool, the fault settings, the process.
    assert_eq!(value("db_pool_connections_max", &[]), 10.0);
    assert!(value("db_pool_connections_size", &[]) >= 1.0);
    assert!(value("db_pool_connections_idle", &[]) >= 0.0);
    assert!(value("db_pool_connections_in_use", &[]) >= 0.0);
    assert!(value("db_pool_acquire_duration_seconds_count", &[]) >= 5.0);
    assert_eq!(value("fault_payment_delay_seconds", &[]), 0.15);
    assert_eq!(value("fault_email_delay_seconds", &[]), 0.3);
    assert_eq!(value("fault_payment_success_ratio", &[]), 1.0);
    assert_eq!(value("fault_email_outage", &[]), 0.0);
    assert!(value("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(value("process_cpu_seconds_total", &[]) >= 0.0);
    assert_eq!(
        value(
            "ecommerce_monolith_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    app.assert_every_cent_accounted().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_outage_counts_an_orphaned_payment_and_moves_the_fault_gauge() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"email_outage": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.checkout(&alice).await.status(), StatusCode::BAD_GATEWAY);

    let text = app.metrics().await;
    assert_eq!(sample(&text, "fault_email_outage", &[]), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "payments_orphaned_total",
            &[("reason", "email_failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "payments_orphaned_amount_cents_total",
            &[("reason", "email_failed")]
        ),
        Some(1999.0)
    );
    assert_eq!(
        sample(&text, "checkouts_total", &[("outcome", "email_failed")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "email_send_duration_seconds_count",
            &[("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "orders_revenue_cents_total", &[]), Some(0.0));
    app.assert_every_cent_accounted().await;
}
