//! The ladder of cures, live, per dependency. Off by default (the blocking checkout stays
//! the "before" picture). A timeout: a mail server that hangs holds a checkout until the
//! SMTP client's own bound, and the mail server's timeout ends it sooner — the money is
//! still taken, since the e-mail comes after the charge; a charge given up by the
//! gateway's timeout takes nothing. Retries: each attempt in `Server-Timing`, one charge
//! however many attempts, a budget that refuses a storm. The breaker: closed, open,
//! half-open, closed. The fallback: the e-mail queued, the order kept, sent once.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Ledger, TestApp, eventually, expect_json, expect_problem, sample, server_timing, spawn_process,
};

/// The test environment's `SMTP_TIMEOUT_MS`: a hung mail server is given up this late
/// without a rung.
const SMTP_TIMEOUT: Duration = Duration::from_millis(3000);

#[tokio::test]
async fn the_rungs_are_off_by_default_and_changed_per_dependency() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let policy_off = json!({"timeout_ms": 0, "breaker_failures": 0, "breaker_open_ms": 5000, "breaker_probes": 1,
        "retries": 0, "retry_backoff_ms": 100, "retry_budget_percent": 0, "fallback": false});
    let off = json!({"payment": policy_off, "email": policy_off});
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
    let mut expected = off.clone();
    expected["email"]["timeout_ms"] = json!(500);
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
        json!({"email": {"retries": 11}}),
        json!({"email": {"retry_backoff_ms": 0}}),
        json!({"payment": {"retry_budget_percent": 101}}),
        json!({"payment": {"fallback": true}}),
        json!({"email": {"fallback": "yes"}}),
        json!({"email": {"breaker_open_ms": 50}}),
        json!({"payment": {"breaker_probes": 0}}),
        json!({"payment": {"breaker_failures": 1001}}),
        json!({"payment": [null, null]}),
        json!([null, null]),
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

#[tokio::test]
async fn the_mail_servers_breaker_opens_refuses_before_the_charge_and_closes_after_a_probe() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let buyers = app.buyers(4, kettle, "breaker").await;
    let open = Duration::from_millis(1500);
    for (path, body) in [
        ("/api/admin/faults", json!({"email_outage": true})),
        (
            "/api/admin/resilience",
            json!({"email": {"breaker_failures": 2, "breaker_open_ms": open.as_millis() as u64, "breaker_probes": 1}}),
        ),
    ] {
        expect_json(app.put(path, Some(&admin), &body).await, StatusCode::OK).await;
    }
    let state = |metrics: &str| {
        sample(
            metrics,
            "resilience_breaker_state",
            &[("dependency", "mail_server")],
        )
    };
    let moved_to = |metrics: &str, to: &str| {
        sample(
            metrics,
            "resilience_breaker_transitions_total",
            &[("dependency", "mail_server"), ("to", to)],
        )
    };
    assert_eq!(state(&app.metrics().await), Some(0.0), "closed");

    // Two failures in a row (each after its charge: orphans, as without a breaker)…
    for buyer in &buyers[..2] {
        expect_problem(
            app.checkout(buyer).await,
            StatusCode::BAD_GATEWAY,
            "email-failed",
        )
        .await;
    }
    let metrics = app.metrics().await;
    assert_eq!(state(&metrics), Some(1.0), "open after two failures");
    assert_eq!(moved_to(&metrics, "open"), Some(1.0));

    // …then the next checkout is refused before the charge: no money taken.
    let refused = expect_problem(
        app.checkout(&buyers[2]).await,
        StatusCode::BAD_GATEWAY,
        "email-failed",
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("circuit breaker is open")),
        "{refused}"
    );
    assert_eq!(
        sample(
            &app.metrics().await,
            "resilience_breaker_refusals_total",
            &[("dependency", "mail_server")]
        ),
        Some(1.0)
    );
    app.assert_ledger(Ledger {
        approved: 2,
        with_order: 0,
        refunded: 0,
        without_order: 2,
    })
    .await;

    // The mail server is back; once the breaker's time is up, the next checkout is the
    // probe: it succeeds and closes the breaker.
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
    tokio::time::sleep(open).await;
    expect_json(app.checkout(&buyers[2]).await, StatusCode::CREATED).await;
    let metrics = app.metrics().await;
    assert_eq!(moved_to(&metrics, "half_open"), Some(1.0));
    assert_eq!(moved_to(&metrics, "closed"), Some(1.0));
    assert_eq!(state(&metrics), Some(0.0), "closed again");
    expect_json(app.checkout(&buyers[3]).await, StatusCode::CREATED).await;
    app.assert_ledger(Ledger {
        approved: 4,
        with_order: 2,
        refunded: 0,
        without_order: 2,
    })
    .await;
}

#[tokio::test]
async fn the_gateways_breaker_refuses_at_once_what_its_timeout_gave_up() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let buyers = app.buyers(2, kettle, "gateway").await;
    for (path, body) in [
        ("/api/admin/faults", json!({"payment_delay_ms": 5000})),
        (
            "/api/admin/resilience",
            json!({"payment": {"timeout_ms": 100, "breaker_failures": 1, "breaker_open_ms": 60000}}),
        ),
    ] {
        expect_json(app.put(path, Some(&admin), &body).await, StatusCode::OK).await;
    }
    let given_up = app.checkout(&buyers[0]).await;
    assert_eq!(given_up.status(), StatusCode::SERVICE_UNAVAILABLE);
    let refused = app.checkout(&buyers[1]).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let metrics = app.metrics().await;
    let labels = [("dependency", "payment_gateway")];
    assert_eq!(
        sample(&metrics, "resilience_timeouts_total", &labels),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "resilience_breaker_refusals_total", &labels),
        Some(1.0),
        "the second charge was not attempted"
    );
    assert_eq!(
        sample(&metrics, "resilience_breaker_state", &labels),
        Some(1.0)
    );
    assert_eq!(app.count("orders").await, 0);
    app.assert_ledger(Ledger::paid(0)).await;
}

/// The `Server-Timing` entries of a response: name, and description if any.
fn timed_entries(response: &reqwest::Response) -> Vec<(String, Option<String>)> {
    server_timing(response)
        .into_iter()
        .map(|entry| (entry.name, entry.description))
        .collect()
}

async fn set(app: &TestApp, admin: &str, path: &str, body: serde_json::Value) {
    expect_json(app.put(path, Some(admin), &body).await, StatusCode::OK).await;
}

fn gateway(metrics: &str, name: &str) -> Option<f64> {
    sample(metrics, name, &[("dependency", "payment_gateway")])
}

#[tokio::test]
async fn a_retried_charge_is_each_attempt_in_server_timing_and_one_charge() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 20).await;
    let buyers = app.buyers(2, kettle, "retries").await;

    // A gateway that fails every call: three retries, four attempts, then the refusal —
    // each attempt an entry of the answer's Server-Timing, after its backoff.
    set(
        &app,
        &admin,
        "/api/admin/faults",
        json!({"payment_flap_rate": 1.0}),
    )
    .await;
    set(
        &app,
        &admin,
        "/api/admin/resilience",
        json!({"payment": {"retries": 3, "retry_backoff_ms": 20}}),
    )
    .await;
    let refused = app.checkout(&buyers[0]).await;
    let entries = timed_entries(&refused);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let attempts: Vec<&str> = entries
        .iter()
        .filter(|(name, _)| name == "payment_gateway.attempt")
        .filter_map(|(_, description)| description.as_deref())
        .collect();
    assert_eq!(attempts.len(), 4, "{entries:?}");
    assert_eq!(attempts[0], "attempt 1: failed");
    for (number, attempt) in attempts.iter().enumerate().skip(1) {
        assert!(
            attempt.starts_with(&format!("attempt {} after ", number + 1))
                && attempt.ends_with(" ms: failed"),
            "{attempt}"
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(gateway(&metrics, "resilience_retries_total"), Some(3.0));
    assert_eq!(
        sample(
            &metrics,
            "resilience_call_attempts_sum",
            &[("dependency", "payment_gateway")]
        ),
        Some(4.0)
    );
    assert_eq!(app.count("orders").await, 0);
    app.assert_ledger(Ledger::paid(0)).await;

    // Three calls in ten fail: ten retries rescue the checkout, and the attempts share the
    // order's idempotency key, so the order has one charge however many were made.
    set(
        &app,
        &admin,
        "/api/admin/faults",
        json!({"payment_flap_rate": 0.3}),
    )
    .await;
    set(
        &app,
        &admin,
        "/api/admin/resilience",
        json!({"payment": {"retries": 10}}),
    )
    .await;
    for buyer in &buyers {
        expect_json(app.checkout(buyer).await, StatusCode::CREATED).await;
    }
    let charges: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, order_id FROM gateway_charges ORDER BY id")
            .fetch_all(&app.db)
            .await
            .expect("the gateway's ledger");
    assert_eq!(charges.len(), 2, "one charge per order: {charges:?}");
    assert!(charges.iter().all(|(status, _)| status == "approved"));
    app.assert_ledger(Ledger::paid(2)).await;
}

#[tokio::test]
async fn a_retry_budget_refuses_a_storm_that_unbounded_retries_make() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 40).await;
    let buyers = app.buyers(20, kettle, "storm").await;
    set(
        &app,
        &admin,
        "/api/admin/faults",
        json!({"payment_flap_rate": 1.0}),
    )
    .await;

    // Unbounded: every failing call is made three more times.
    set(
        &app,
        &admin,
        "/api/admin/resilience",
        json!({"payment": {"retries": 3, "retry_backoff_ms": 1}}),
    )
    .await;
    for buyer in &buyers[..10] {
        assert_eq!(
            app.checkout(buyer).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(gateway(&metrics, "resilience_retries_total"), Some(30.0));
    assert_eq!(
        gateway(&metrics, "resilience_retry_budget_exhausted_total"),
        Some(0.0)
    );

    // A 10 % budget: ten calls earn one retry between them; every other failure is
    // answered as it is.
    set(
        &app,
        &admin,
        "/api/admin/resilience",
        json!({"payment": {"retry_budget_percent": 10}}),
    )
    .await;
    for buyer in &buyers[10..] {
        assert_eq!(
            app.checkout(buyer).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(
        gateway(&metrics, "resilience_retries_total"),
        Some(31.0),
        "one retry in ten calls"
    );
    assert_eq!(
        gateway(&metrics, "resilience_retry_budget_exhausted_total"),
        Some(10.0),
        "each of the ten calls was refused a retry once"
    );
    app.assert_ledger(Ledger::paid(0)).await;
}

#[tokio::test]
async fn the_fallback_queues_the_email_keeps_the_order_and_sends_it_once() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let buyers = app.buyers(2, kettle, "fallback").await;
    set(
        &app,
        &admin,
        "/api/admin/faults",
        json!({"email_outage": true}),
    )
    .await;

    // Without the fallback: the outage orphans the payment, as in the blocking checkout.
    expect_problem(
        app.checkout(&buyers[0]).await,
        StatusCode::BAD_GATEWAY,
        "email-failed",
    )
    .await;

    // With it: 201, the order confirmed, its e-mail waiting in the outbox; the answer
    // says so.
    set(
        &app,
        &admin,
        "/api/admin/resilience",
        json!({"email": {"fallback": true}}),
    )
    .await;
    let placed = app.checkout(&buyers[1]).await;
    let entries = timed_entries(&placed);
    let order = expect_json(placed, StatusCode::CREATED).await;
    assert_eq!(order["status"], "confirmed");
    let queued = entries
        .iter()
        .find(|(name, _)| name == "mail_server.fallback")
        .and_then(|(_, description)| description.clone());
    assert!(
        queued
            .as_deref()
            .is_some_and(|d| d.contains("waits in the outbox")),
        "{entries:?}"
    );
    assert_eq!(
        sample(
            &app.metrics().await,
            "resilience_fallbacks_total",
            &[("dependency", "mail_server")]
        ),
        Some(1.0)
    );
    assert!(app.emails_per_message_id().is_empty(), "nothing sent yet");

    // The mail server is back: the worker sends the queued confirmation, once.
    set(
        &app,
        &admin,
        "/api/admin/faults",
        json!({"email_outage": false}),
    )
    .await;
    let sent = eventually(
        Duration::from_secs(60),
        "the queued e-mail sent",
        || async {
            let sent = app.emails_per_message_id();
            (!sent.is_empty()).then_some(sent)
        },
    )
    .await;
    let id = order["id"].as_i64().expect("an order id");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent.keys()
            .all(|message_id| message_id.contains(&format!("order-{id}."))),
        "{sent:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.emails_per_message_id()
            .into_values()
            .collect::<Vec<_>>(),
        [1],
        "sent once"
    );
    app.assert_ledger(Ledger {
        approved: 2,
        with_order: 1,
        refunded: 0,
        without_order: 1,
    })
    .await;
}
