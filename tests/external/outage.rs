//! The one database goes away under load, on a Postgres of the test's own: requests
//! fail fast with 503 instead of hanging for the pool's acquire timeout, checkouts that
//! lose their order after the charge are counted, and service is back moments after
//! the database is.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{
    Ledger, TestApp, eventually, expect_json, sample, spawn_process_on, spawn_replicas_on,
};
use crate::postgres_cluster::{PostgresCluster, server_programs};
use crate::require::missing;

/// One catalog read: its status (`None` without an answer) and how long it took.
async fn read(app: &TestApp, path: &str) -> (Option<StatusCode>, Duration) {
    let started = Instant::now();
    let status = app
        .request(reqwest::Method::GET, path, None)
        .send()
        .await
        .ok()
        .map(|r| r.status());
    (status, started.elapsed())
}

/// The real binary against a Postgres cluster of the test's own, to stop and start;
/// `None` (the test skipped, or failed under CI) without Postgres' server programs.
async fn app_on_a_cluster_of_its_own(
    overrides: &[(&str, &str)],
) -> Option<(PostgresCluster, TestApp)> {
    let cluster = cluster_of_its_own().await?;
    let app = spawn_process_on(&cluster.url(), overrides).await;
    Some((cluster, app))
}

/// A Postgres cluster of the test's own, to stop and start; `None` (the test skipped,
/// or failed under CI) without Postgres' server programs.
async fn cluster_of_its_own() -> Option<PostgresCluster> {
    let Some(bin) = server_programs() else {
        missing(
            "Postgres' server programs (initdb, pg_ctl under /usr/lib/postgresql/*/bin) are not here",
            "apt-get install postgresql",
        );
        return None;
    };
    Some(PostgresCluster::start_new(bin).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_gives_fast_503s_counts_lost_orders_and_recovers() {
    // The pool would wait this long for a connection that cannot come.
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    let acquire_timeout = ACQUIRE_TIMEOUT.as_secs().to_string();
    let Some((cluster, app)) = app_on_a_cluster_of_its_own(&[
        ("PAYMENT_DELAY_MS", "0"),
        ("EMAIL_DELAY_MS", "1500"),
        ("DB_ACQUIRE_TIMEOUT_SECONDS", acquire_timeout.as_str()),
    ])
    .await
    else {
        return;
    };
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let mug = app.create_product(&admin, "Mug", "4.50", 10).await;
    let product = format!("/api/products/{kettle}");
    expect_json(app.get(&product, None).await, StatusCode::OK).await;
    // Two products, so that neither checkout waits for the other's row lock.
    let mut buyers = app.buyers(1, kettle, "outage-kettle-").await;
    buyers.extend(app.buyers(1, mug, "outage-mug-").await);

    // Two checkouts are charged at once, then wait 1.5 s for the mail server while
    // the database goes down under them.
    let checkouts = futures::future::join_all(buyers.iter().map(|token| app.checkout(token)));
    let outage = async {
        // Both charged, both in the 1.5 s e-mail.
        eventually(Duration::from_secs(10), "both charged", || async {
            let metrics = app.metrics().await;
            let charged =
                sample(&metrics, "payment_gateway_duration_seconds_count", &[]) == Some(2.0);
            charged.then_some(())
        })
        .await;
        let stopped = Instant::now();
        cluster.stop();
        // Read the catalog until the answer is a quick 503.
        let reads = RefCell::new(Vec::new());
        let (app, product, log) = (&app, &product, &reads);
        let fast_503 = eventually(Duration::from_secs(20), "a quick 503", move || async move {
            let (status, took) = read(app, product).await;
            log.borrow_mut().push((stopped.elapsed(), status, took));
            let quick = took < Duration::from_millis(500);
            (status == Some(StatusCode::SERVICE_UNAVAILABLE) && quick).then(|| stopped.elapsed())
        })
        .await;
        let reads = reads.into_inner();
        // While it lasts, every read is a quick 503 with Retry-After.
        let response = app.get(product, None).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let ready = app.get("/ready", None).await.status();
        (fast_503, reads, ready)
    };
    let (checked_out, (fast_503, reads, ready)) = tokio::join!(checkouts, outage);
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    let slowest = reads
        .iter()
        .map(|(_, _, took)| *took)
        .max()
        .unwrap_or_default();
    for response in checked_out {
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "lost after the charge"
        );
    }

    cluster.start();
    let restarted = Instant::now();
    let recovered = eventually(Duration::from_secs(20), "the recovery", || async {
        (read(&app, &product).await.0 == Some(StatusCode::OK)).then(|| restarted.elapsed())
    })
    .await;
    // Full service: a write as well as a read.
    let late = app.customer("after-the-outage@example.com").await;
    expect_json(app.add_to_cart(&late, kettle, 1).await, StatusCode::CREATED).await;
    expect_json(app.checkout(&late).await, StatusCode::CREATED).await;

    let metrics = app.metrics().await;
    let orphans = crate::helpers::sample(
        &metrics,
        "payments_orphaned_total",
        &[("reason", "database_error")],
    );
    assert_eq!(orphans, Some(2.0), "both lost orders were counted");
    app.assert_ledger_counted(Ledger {
        approved: 3,
        with_order: 1,
        refunded: 0,
        without_order: 2,
    })
    .await;
    println!(
        "database stopped: quick 503s after {fast_503:?} (slowest read {slowest:?}); \
         service back {recovered:?} after the database"
    );
    // Failing fast means no read ever waits for the pool's acquire timeout: not even
    // the first ones after the stop, which find the pool's connections dead.
    assert!(
        slowest < ACQUIRE_TIMEOUT / 6,
        "a read took {slowest:?}: {reads:?}"
    );
    assert!(fast_503 < ACQUIRE_TIMEOUT / 6, "{fast_503:?}");
    assert!(recovered < ACQUIRE_TIMEOUT / 6, "{recovered:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_in_the_gateway_when_the_database_stops_fails_as_fast_as_the_rest() {
    let Some((cluster, app)) = app_on_a_cluster_of_its_own(&[("PAYMENT_DELAY_MS", "1500")]).await
    else {
        return;
    };
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let started = Instant::now();
    let checkout = app.checkout(&alice);
    let outage = async {
        // Into the gateway's 1.5 s wait.
        app.wait_for_checkouts_in_flight(1).await;
        cluster.stop();
    };
    let (response, ()) = tokio::join!(checkout, outage);
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The gateway's ledger shares the shop's probe: its write after the 1.5 s wait fails
    // at once, instead of waiting for its pool's acquire timeout (~7 s in all before).
    println!("a checkout in the gateway when the database stopped: 503 after {took:?}");
    assert!(took < Duration::from_millis(1500 + 2500), "{took:?}");

    cluster.start();
    eventually(Duration::from_secs(20), "the database back", || async {
        (app.get("/ready", None).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    app.assert_ledger(Ledger::paid(0)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_interrupted_by_an_outage_run_again_when_it_ends_not_a_lease_later() {
    let Some((cluster, app)) = app_on_a_cluster_of_its_own(&[
        ("CHECKOUT_MODE", "async"),
        ("PAYMENT_DELAY_MS", "1500"),
        // Were the job left to its lease, it would run again a minute later.
        ("OUTBOX_LEASE_SECONDS", "60"),
    ])
    .await
    else {
        return;
    };
    let (alice, _kettle) = app.alice_with_kettles(1).await;
    let accepted = expect_json(app.checkout(&alice).await, StatusCode::ACCEPTED).await;
    // The charge job is in the gateway's 1.5 s when the database goes.
    eventually(Duration::from_secs(5), "the charge job claimed", || async {
        let metrics = app.metrics().await;
        let running = sample(
            &metrics,
            "outbox_jobs_in_flight",
            &[("kind", "charge_order")],
        );
        (running == Some(1.0)).then_some(())
    })
    .await;
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(2)).await; // the outage lasts past the charge
    cluster.start();
    let back = Instant::now();
    let path = format!("/api/orders/{}", accepted["id"]);
    eventually(Duration::from_secs(30), "the order confirmed", || async {
        let response = app.get(&path, Some(&alice)).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let order = expect_json(response, StatusCode::OK).await;
        (order["status"] == "confirmed").then_some(())
    })
    .await;
    let after = back.elapsed();
    println!(
        "an order whose charge job the outage interrupted: confirmed {after:?} after the database was back"
    );
    assert!(
        after < Duration::from_secs(20),
        "not a lease (60 s) later: {after:?}"
    );
    app.assert_ledger(Ledger::paid(1)).await;
}

/// The database goes away for 8 s — less than the lease (10 s) — while the mail server
/// takes its time to acknowledge the e-mails: each job has sent its message and cannot
/// write that down. It keeps the result and writes it down when the database is back,
/// instead of being given back and run again; and no other worker (of this replica or
/// another) takes the job over meanwhile, though its lease may have lapsed by then:
/// nobody gets an e-mail twice.
async fn an_outage_shorter_than_the_lease_sends_nothing_twice(replicas: usize) {
    const ORDERS: usize = 8;
    let Some(cluster) = cluster_of_its_own().await else {
        return;
    };
    let apps = spawn_replicas_on(
        &cluster.url(),
        replicas,
        &[("CHECKOUT_MODE", "async"), ("SMTP_TIMEOUT_MS", "10000")],
    )
    .await;
    let app = &apps[0];
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 100).await;
    let buyers = app.buyers(ORDERS, kettle, "outage-mail-").await;
    app.smtp.acknowledge_after(Duration::from_secs(3));
    for (i, token) in buyers.iter().enumerate() {
        let replica = &apps[i % apps.len()];
        expect_json(replica.checkout(token).await, StatusCode::ACCEPTED).await;
    }
    eventually(
        Duration::from_secs(20),
        "every e-mail received, none acknowledged yet",
        || std::future::ready((app.smtp.messages().len() == ORDERS).then_some(())),
    )
    .await;
    // The database goes while the mail server makes the senders wait for its "250";
    // 8 s later the leases, renewed last before the outage, may have lapsed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.start();

    let jobs: Vec<(String, i32)> =
        eventually(Duration::from_secs(30), "every job done", || async {
            let jobs: Vec<(String, i32)> = sqlx::query_as(
                "SELECT status, attempts FROM outbox_jobs WHERE kind = 'send_confirmation'",
            )
            .fetch_all(&app.db)
            .await
            .ok()?;
            jobs.iter()
                .all(|(status, _)| status == "done")
                .then_some(jobs)
        })
        .await;
    assert!(
        jobs.iter().all(|(_, attempts)| *attempts == 1),
        "no e-mail job ran twice: {jobs:?}"
    );
    let per_message = app.emails_per_message_id();
    assert_eq!(per_message.len(), ORDERS, "{per_message:?}");
    assert!(
        per_message.values().all(|&count| count == 1),
        "one e-mail per order: {per_message:?}"
    );
    app.assert_ledger(Ledger::paid(ORDERS as i64)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_shorter_than_the_lease_sends_no_email_twice() {
    an_outage_shorter_than_the_lease_sends_nothing_twice(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_shorter_than_the_lease_sends_no_email_twice_with_two_replicas() {
    an_outage_shorter_than_the_lease_sends_nothing_twice(2).await;
}
