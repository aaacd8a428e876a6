//! Money and messages under crashes, restarts and retries, against the real binary:
//! one charge per `Idempotency-Key` whatever lost the first order, leases that renew
//! and attempts that count, dead letters that can be replayed, the charges a crash left
//! without an order named at start, and the checkouts the shutdown deadline rolled back
//! logged and scraped. Each ends with the ledger identity.

use std::time::{Duration, Instant};

use ecommerce_monolith::idempotency::RUNNING_LEASE;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    Ledger, TestApp, checkout_body, eventually, expect_json, expect_problem, sample, spawn_process,
    spawn_replicas,
};

async fn transaction_ids(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT transaction_id FROM gateway_charges WHERE status <> 'declined' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .expect("ledger")
}

/// A checkout (with `key` as its Idempotency-Key, if any) in a task of its own, so the
/// test can crash or stop the app while it runs.
fn checkout_in_background(
    app: &TestApp,
    token: &str,
    key: Option<&str>,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let mut request = app
        .client
        .post(format!("{}/api/orders/checkout", app.address))
        .bearer_auth(token)
        .json(&checkout_body());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    tokio::spawn(request.send())
}

/// How many attempts the e-mail job has had.
async fn email_attempts(app: &TestApp) -> i32 {
    sqlx::query_scalar("SELECT attempts FROM outbox_jobs WHERE kind = 'send_confirmation'")
        .fetch_one(&app.db)
        .await
        .expect("job")
}

/// Waits until the process has printed a line containing `message`.
async fn logged(app: &mut TestApp, message: &str) -> String {
    let wanted = message.to_string();
    eventually(Duration::from_secs(30), message, || {
        let lines = app.output();
        std::future::ready(lines.into_iter().find(|line| line.contains(&wanted)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_lost_at_the_deadline_is_retried_with_its_key_into_one_charge() {
    let mut app = spawn_process(&[
        ("SHUTDOWN_TIMEOUT_SECONDS", "1"),
        ("PAYMENT_DELAY_MS", "200"),
        ("EMAIL_DELAY_MS", "3000"),
    ])
    .await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let first = checkout_in_background(&app, &alice, Some("order-of-the-day"));
    // Charged, now in the 3 s e-mail: the deadline (1 s) comes first.
    eventually(Duration::from_secs(10), "the charge", || async {
        (transaction_ids(&app).await.len() == 1).then_some(())
    })
    .await;
    app.terminate().await;
    let lost = first
        .await
        .expect("join")
        .expect("an answer before the exit");
    assert_eq!(lost.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(lost.headers().contains_key("retry-after"));
    let problem: Value = lost.json().await.expect("problem");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("payment of 19.99 was taken") && detail.contains("same Idempotency-Key"),
        "the answer says what happened to the money: {detail}"
    );
    assert!(!detail.contains("rolled back"), "{detail}");

    // The retry that Retry-After invites, on the restarted service: an order, paid by
    // the first charge, and no second one.
    app.restart().await;
    let order = expect_json(
        app.checkout_with_key(&alice, "order-of-the-day", &checkout_body())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let charges = transaction_ids(&app).await;
    assert_eq!(charges.len(), 1, "one charge for one key: {charges:?}");
    assert_eq!(order["payment"]["transaction_id"], charges[0]);
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "payments_reattached_total", &[]),
        Some(1.0)
    );
    app.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_crash_a_retry_with_the_key_resolves_within_seconds_and_charges_once() {
    let mut app = spawn_process(&[("PAYMENT_DELAY_MS", "100"), ("EMAIL_DELAY_MS", "5000")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let in_flight = checkout_in_background(&app, &alice, Some("crash-test"));
    eventually(Duration::from_secs(10), "the charge", || async {
        (transaction_ids(&app).await.len() == 1).then_some(())
    })
    .await;
    app.kill_and_restart().await;
    let crashed = Instant::now();
    let _ = in_flight.await;
    // The retry itself need not wait for the slow mail server.
    app.faults(&["set", "--email-delay-ms", "0"]).await;

    // The dead request's lease (renewed until the crash) still runs: 409, and when to
    // come back — no later than the lease.
    let conflict = app
        .checkout_with_key(&alice, "crash-test", &checkout_body())
        .await;
    let retry_after: u64 = conflict.headers()["retry-after"]
        .to_str()
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    expect_problem(conflict, StatusCode::CONFLICT, "request-in-progress").await;
    assert!(
        (1..=RUNNING_LEASE.as_secs()).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    // Coming back when told: the key is taken over, and the order placed with the
    // first charge — within seconds, before twice the lease has passed since the crash.
    let order = eventually(RUNNING_LEASE * 2, "the retry placing the order", || async {
        let response = app
            .checkout_with_key(&alice, "crash-test", &checkout_body())
            .await;
        match response.status() {
            StatusCode::CONFLICT => None,
            _ => Some(expect_json(response, StatusCode::CREATED).await),
        }
    })
    .await;
    let resolved = crashed.elapsed();
    println!("a retry after a crash resolved {resolved:?} after it (lease {RUNNING_LEASE:?})");
    assert!(resolved < RUNNING_LEASE * 2, "{resolved:?}");
    let charges = transaction_ids(&app).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(order["payment"]["transaction_id"], charges[0]);
    // Killed and restarted: the counters died with the first process.
    app.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_outliving_its_lease_is_renewed_and_sent_once() {
    // The e-mail takes longer than the lease — the slow server of the lesson, then a
    // mail server slow to acknowledge the message: only the heartbeat keeps the job.
    let app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("OUTBOX_LEASE_SECONDS", "1"),
        ("EMAIL_DELAY_MS", "1500"),
    ])
    .await;
    app.smtp.acknowledge_after(Duration::from_millis(1000));
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    expect_json(app.checkout(&alice).await, StatusCode::ACCEPTED).await;
    eventually(Duration::from_secs(20), "the e-mail", || {
        std::future::ready((!app.smtp.messages().is_empty()).then_some(()))
    })
    .await;
    eventually(Duration::from_secs(10), "both jobs done", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_jobs WHERE status = 'done'")
                .fetch_one(&app.db)
                .await
                .expect("jobs");
        (done == 2).then_some(())
    })
    .await;
    // Another lease length later, nobody took the job again.
    tokio::time::sleep(Duration::from_secs(3)).await; // about time itself: a resend would come now
    assert_eq!(app.smtp.messages().len(), 1, "sent once");
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM outbox_jobs WHERE kind = 'send_confirmation'")
            .fetch_one(&app.db)
            .await
            .expect("job");
    assert_eq!(attempts, 1);
    app.assert_ledger(Ledger::paid(1)).await;
}

/// The heartbeat renews the leases of the jobs running when it starts; a job that
/// starts while the renewal is on its way to the database is not one another worker
/// took. Here the renewal is held up on a row lock while two more jobs start.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_started_while_the_heartbeat_renews_keeps_running() {
    let app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("OUTBOX_LEASE_SECONDS", "4"),
        ("PAYMENT_DELAY_MS", "5000"),
    ])
    .await;
    let admin = app.admin_token().await;
    let mug = app.create_product(&admin, "Mug", "7.00", 10).await;
    let buyers = app.buyers(3, mug, "lease").await;
    expect_json(app.checkout(&buyers[0]).await, StatusCode::ACCEPTED).await;
    app.wait_for_jobs_in_flight("charge_order", 1, Duration::from_secs(10))
        .await;
    // Hold the first job's row: the heartbeat's next renewal waits on it, mid-statement.
    let mut blocker = app.db.begin().await.expect("transaction");
    sqlx::query("SELECT id FROM outbox_jobs WHERE kind = 'charge_order' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    eventually(
        Duration::from_secs(10),
        "the renewal waiting on the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND query LIKE '%UPDATE outbox_jobs j SET locked_until%'",
            )
            .fetch_one(&app.db)
            .await
            .expect("pg_stat_activity");
            (waiting == 1).then_some(())
        },
    )
    .await;
    for buyer in &buyers[1..] {
        expect_json(app.checkout(buyer).await, StatusCode::ACCEPTED).await;
    }
    app.wait_for_jobs_in_flight("charge_order", 3, Duration::from_secs(10))
        .await;
    blocker.commit().await.expect("unlock");

    app.wait_for_confirmed_orders(3, Duration::from_secs(30))
        .await;
    let attempts: Vec<i32> = sqlx::query_scalar(
        "SELECT attempts FROM outbox_jobs WHERE kind = 'charge_order' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .expect("jobs");
    assert_eq!(attempts, [1, 1, 1], "no charge stopped and taken again");
    let metrics = app.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "outbox_jobs_processed_total",
            &[("kind", "charge_order"), ("outcome", "lease_lost")]
        ),
        Some(0.0)
    );
    app.assert_ledger(Ledger::paid(3)).await;
}

/// A replica dies (SIGKILL) in the middle of a charge; the other one takes the job over
/// a heartbeat after its lease ran out — not sooner (the dead one might only have been
/// cut off, and is given the chance to renew), and well before twice the lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replicas_job_is_taken_over_by_another_a_heartbeat_after_its_lease() {
    const LEASE: Duration = Duration::from_secs(4);
    let mut replicas = spawn_replicas(
        2,
        &[
            ("CHECKOUT_MODE", "async"),
            ("OUTBOX_LEASE_SECONDS", "4"),
            ("OUTBOX_POLL_MS", "250"),
            ("PAYMENT_DELAY_MS", "2000"),
        ],
    )
    .await;
    let (alice, kettle) = replicas[0].alice_with_kettles(1).await;
    let accepted = expect_json(replicas[0].checkout(&alice).await, StatusCode::ACCEPTED).await;
    // Whichever replica claimed the charge dies in the gateway's 2 s.
    let holder = eventually(Duration::from_secs(10), "the charge claimed", || async {
        for (i, replica) in replicas.iter().enumerate() {
            let metrics = replica.metrics().await;
            let running = sample(
                &metrics,
                "outbox_jobs_in_flight",
                &[("kind", "charge_order")],
            );
            if running == Some(1.0) {
                return Some(i);
            }
        }
        None
    })
    .await;
    replicas[holder].kill();
    let killed = Instant::now();
    let db = replicas[0].db.clone();
    let (lease_end, lease): (chrono::DateTime<chrono::Utc>, i32) = sqlx::query_as(
        "SELECT locked_until, attempts FROM outbox_jobs WHERE kind = 'charge_order'",
    )
    .fetch_one(&db)
    .await
    .expect("job");
    assert_eq!(lease, 1);
    let taken_over_at: chrono::DateTime<chrono::Utc> =
        eventually(LEASE * 2, "the job taken over", || async {
            let (attempts, locked_until): (i32, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
                "SELECT attempts, locked_until FROM outbox_jobs WHERE kind = 'charge_order'",
            )
            .fetch_one(&db)
            .await
            .expect("job");
            // A claim sets the new lease from its own moment.
            (attempts == 2).then(|| locked_until - LEASE)
        })
        .await;
    let waited = killed.elapsed();
    let after_lease = (taken_over_at - lease_end).to_std().unwrap_or_default();
    println!(
        "taken over {waited:?} after the kill, {after_lease:?} after the dead replica's lease"
    );
    assert!(waited < LEASE * 2, "taken over {waited:?} after the kill");
    assert!(
        after_lease >= LEASE / 3 - Duration::from_millis(50),
        "taken over {after_lease:?} after the lease ran out, before a heartbeat"
    );
    let survivor = &replicas[1 - holder];
    let path = format!("/api/orders/{}", accepted["id"]);
    let order = eventually(Duration::from_secs(15), "the order confirmed", || async {
        let order = expect_json(survivor.get(&path, Some(&alice)).await, StatusCode::OK).await;
        (order["status"] == "confirmed").then_some(order)
    })
    .await;
    assert_eq!(order["payment"]["amount"], "19.99");
    assert_eq!(survivor.stock_of(kettle).await, (4, 0));
    survivor.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_leases_count_as_attempts_and_end_in_a_dead_letter() {
    let mut app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("OUTBOX_LEASE_SECONDS", "2"),
        ("OUTBOX_MAX_ATTEMPTS", "2"),
        ("EMAIL_DELAY_MS", "60000"),
    ])
    .await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let accepted = expect_json(app.checkout(&alice).await, StatusCode::ACCEPTED).await;
    let path = format!("/api/orders/{}", accepted["id"]);
    let confirmed = || async {
        let order = expect_json(app.get(&path, Some(&alice)).await, StatusCode::OK).await;
        (order["status"] == "confirmed").then_some(())
    };
    eventually(Duration::from_secs(10), "the order confirmed", confirmed).await;
    // The e-mail job (60 s) is running: crash twice in the middle of it.
    for attempt in 1..=2 {
        eventually(
            Duration::from_secs(10),
            "the e-mail job claimed",
            || async { (email_attempts(&app).await == attempt).then_some(()) },
        )
        .await;
        app.kill_and_restart().await;
    }
    // Two attempts whose leases ran out: dead-lettered, not tried forever.
    let status = eventually(Duration::from_secs(15), "the job dead-lettered", || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM outbox_jobs WHERE kind = 'send_confirmation'")
                .fetch_one(&app.db)
                .await
                .expect("job");
        (status == "dead").then_some(status)
    })
    .await;
    assert_eq!(status, "dead");
    assert_eq!(email_attempts(&app).await, 2);
    assert!(app.smtp.messages().is_empty());
    app.assert_ledger(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_replayed_after_the_outage_and_counted() {
    let app = spawn_process(&[
        ("CHECKOUT_MODE", "async"),
        ("EMAIL_OUTAGE", "true"),
        ("OUTBOX_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    expect_json(app.checkout(&alice).await, StatusCode::ACCEPTED).await;
    eventually(
        Duration::from_secs(15),
        "the e-mail dead-lettered",
        || async {
            let dead: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox_jobs WHERE status = 'dead'")
                    .fetch_one(&app.db)
                    .await
                    .expect("jobs");
            (dead == 1).then_some(())
        },
    )
    .await;

    app.faults(&["set", "--email-outage", "false"]).await;
    let replayed = app
        .admin_tool("outbox", &["replay", "--kind", "send_confirmation"])
        .await;
    assert_eq!(replayed["total"], 1, "{replayed}");
    assert_eq!(replayed["replayed"]["send_confirmation"], 1);
    eventually(Duration::from_secs(15), "the replayed e-mail", || {
        std::future::ready((app.smtp.messages().len() == 1).then_some(()))
    })
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "outbox_jobs_replayed_total",
            &[("kind", "send_confirmation")]
        ),
        Some(1.0)
    );
    app.assert_ledger_counted(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn charges_a_crash_left_without_an_order_are_named_at_start() {
    let mut app = spawn_process(&[("PAYMENT_DELAY_MS", "100"), ("EMAIL_DELAY_MS", "5000")]).await;
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let checkout = checkout_in_background(&app, &alice, None);
    eventually(Duration::from_secs(10), "the charge", || async {
        (transaction_ids(&app).await.len() == 1).then_some(())
    })
    .await;
    // SIGKILL in the e-mail step: the in-process counter dies with the process.
    app.kill_and_restart().await;
    let _ = checkout.await;
    let order_id: i64 = sqlx::query_scalar("SELECT order_id FROM gateway_charges")
        .fetch_one(&app.db)
        .await
        .expect("ledger");
    let line = logged(
        &mut app,
        "charges without an order in the gateway's ledger at start",
    )
    .await;
    assert!(line.contains(&order_id.to_string()), "{line}");
    // The ledger gauge (what PaymentsWithoutOrder alerts on) sees it; the counter does not.
    let metrics = eventually(Duration::from_secs(15), "the ledger gauge", || async {
        let metrics = app.metrics().await;
        (sample(&metrics, "payments_without_order", &[]) == Some(1.0)).then_some(metrics)
    })
    .await;
    assert_eq!(sample(&metrics, "payments_orphaned_total", &[]), Some(0.0));
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 0,
        without_order: 1,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn checkouts_rolled_back_at_the_deadline_are_logged_and_scraped() {
    let mut app = spawn_process(&[
        ("SHUTDOWN_TIMEOUT_SECONDS", "1"),
        ("SHUTDOWN_METRICS_LINGER_SECONDS", "10"),
        ("PAYMENT_DELAY_MS", "3000"),
    ])
    .await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let buyers = app.buyers(3, kettle, "late-").await;
    let checkouts: Vec<_> = buyers
        .iter()
        .map(|token| checkout_in_background(&app, token, None))
        .collect();
    app.wait_for_checkouts_in_flight(3).await;
    app.send_sigterm();
    logged(&mut app, "shutdown deadline reached").await;
    // Until the deadline has passed (and a while after), /metrics answers with them.
    let metrics = eventually(Duration::from_secs(10), "the rollbacks scraped", || async {
        let response = app.get("/metrics", None).await;
        let metrics = response.text().await.ok()?;
        (sample(&metrics, "checkouts_total", &[("outcome", "shutdown")]) == Some(3.0))
            .then_some(metrics)
    })
    .await;
    assert!(metrics.contains("checkouts_total"));
    // Anything else is refused while the service drains.
    let refused = app.get("/api/products", None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    for checkout in checkouts {
        let answer = checkout.await.expect("join").expect("answered");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let rolled_back: Vec<String> = app
        .output()
        .into_iter()
        .filter(|line| line.contains("checkout rolled back at the shutdown deadline"))
        .collect();
    assert_eq!(rolled_back.len(), 3, "each one logged: {rolled_back:#?}");
    assert!(rolled_back.iter().all(|line| line.contains("\"trace_id\"")));
    app.terminate().await;
    app.restart().await;
    // The first buyer was in the gateway (the others queued on the kettle's row lock,
    // and were stopped before it): its charge stayed without an order.
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 0,
        without_order: 1,
    })
    .await;
}
