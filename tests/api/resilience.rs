//! The ladder of cures' first rung: a timeout per dependency, live. Off by default (the
//! blocking checkout stays the "before" picture); a mail server that hangs holds a
//! checkout until the SMTP client's own bound, and the mail server's timeout ends it
//! sooner — the money is still taken, since the e-mail comes after the charge; a charge
//! given up by the gateway's timeout takes nothing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Ledger, expect_json, expect_problem, sample, spawn_process};

/// The test environment's `SMTP_TIMEOUT_MS`: a hung mail server is given up this late
/// without a rung.
const SMTP_TIMEOUT: Duration = Duration::from_millis(3000);

#[tokio::test]
async fn the_rungs_are_off_by_default_and_changed_per_dependency() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let off = json!({"payment": {"timeout_ms": 0}, "email": {"timeout_ms": 0}});
    assert_eq!(
        expect_json(
            app.get("/api/admin/resilience", Some(&admin)).await,
            StatusCode::OK
        )
        .await,
        off
    );
    let metrics = app.metrics().await;
    for dependency in ["payment_gateway", "mail_server"] {
        let labels = [("dependency", dependency)];
        assert_eq!(
            sample(&metrics, "resilience_timeout_seconds", &labels),
            Some(0.0)
        );
        assert_eq!(
            sample(&metrics, "resilience_timeouts_total", &labels),
            Some(0.0)
        );
    }

    let changed = expect_json(
        app.put(
            "/api/admin/resilience",
            Some(&admin),
            &json!({"email": {"timeout_ms": 500}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let expected = json!({"payment": {"timeout_ms": 0}, "email": {"timeout_ms": 500}});
    assert_eq!(changed, expected, "the payment's rung unchanged");
    let labels = [("dependency", "mail_server")];
    assert_eq!(
        sample(&app.metrics().await, "resilience_timeout_seconds", &labels),
        Some(0.5)
    );

    // Nonsense is refused, and changes nothing; customers may not change it at all.
    for bad in [
        json!({"email": {"timeout_ms": 60_001}}),
        json!({"email": {"timeout_ms": -1}}),
        json!({"email": {"timeout_ms": "soon"}}),
        json!({"email": {"retries": 3}}),
        json!({"database": {"timeout_ms": 5}}),
    ] {
        let response = app.put("/api/admin/resilience", Some(&admin), &bad).await;
        assert!(
            response.status().is_client_error(),
            "{bad} answered {}",
            response.status()
        );
    }
    let refused = app
        .put("/api/admin/resilience", Some(&alice), &json!({}))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        expect_json(
            app.get("/api/admin/resilience", Some(&admin)).await,
            StatusCode::OK
        )
        .await,
        expected
    );
}

#[tokio::test]
async fn a_hung_mail_server_holds_a_checkout_until_the_smtp_timeout_and_the_rung_ends_it_sooner() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"email_hang": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // Without a rung: the checkout waits for the SMTP client's own bound.
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let started = Instant::now();
    expect_problem(
        app.checkout(&alice).await,
        StatusCode::BAD_GATEWAY,
        "email-failed",
    )
    .await;
    let without_rung = started.elapsed();
    assert!(
        without_rung >= SMTP_TIMEOUT,
        "a hung mail server holds the checkout until SMTP_TIMEOUT_MS: {without_rung:?}"
    );

    // With a 200 ms timeout on the mail server: given up long before that bound, counted.
    expect_json(
        app.put(
            "/api/admin/resilience",
            Some(&admin),
            &json!({"email": {"timeout_ms": 200}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let started = Instant::now();
    let problem = expect_problem(
        app.checkout(&alice).await,
        StatusCode::BAD_GATEWAY,
        "email-failed",
    )
    .await;
    let with_rung = started.elapsed();
    assert!(
        with_rung >= Duration::from_millis(200) && with_rung < SMTP_TIMEOUT,
        "given up at the rung's 200 ms, not at SMTP_TIMEOUT_MS: {with_rung:?}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("200 ms")),
        "the answer says the timeout gave up: {problem}"
    );
    let labels = [("dependency", "mail_server")];
    assert_eq!(
        sample(&app.metrics().await, "resilience_timeouts_total", &labels),
        Some(1.0)
    );
    // The e-mail is step eight, after the charge: both checkouts took the money and
    // lost the order, with the rung or without — a timeout is not a fallback.
    app.assert_ledger(Ledger {
        approved: 2,
        with_order: 0,
        refunded: 0,
        without_order: 2,
    })
    .await;
}

#[tokio::test]
async fn a_charge_given_up_by_the_gateways_timeout_takes_nothing() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let (alice, _) = app.alice_with_kettles(1).await;
    for (path, body) in [
        ("/api/admin/faults", json!({"payment_delay_ms": 5000})),
        (
            "/api/admin/resilience",
            json!({"payment": {"timeout_ms": 100}}),
        ),
    ] {
        expect_json(app.put(path, Some(&admin), &body).await, StatusCode::OK).await;
    }
    let started = Instant::now();
    let refused = app.checkout(&alice).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "given up before the gateway's 5 s: {:?}",
        started.elapsed()
    );
    let labels = [("dependency", "payment_gateway")];
    assert_eq!(
        sample(&app.metrics().await, "resilience_timeouts_total", &labels),
        Some(1.0)
    );
    assert_eq!(app.count("orders").await, 0);
    app.assert_ledger(Ledger::paid(0)).await;
}
