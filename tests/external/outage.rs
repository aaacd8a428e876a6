//! The one database goes away under load, on a Postgres of the test's own: requests
//! fail fast with 503 instead of hanging for the pool's acquire timeout, checkouts that
//! lose their order after the charge are counted, and service is back moments after
//! the database is.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{TestApp, expect_json, spawn_process_on};
use crate::postgres_cluster::{PostgresCluster, server_programs};
use crate::require::tool_available;

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

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_gives_fast_503s_counts_lost_orders_and_recovers() {
    let Some(bin) = server_programs() else {
        tool_available("initdb", "apt-get install postgresql");
        return;
    };
    let cluster = PostgresCluster::start_new(bin).await;
    let app = spawn_process_on(
        &cluster.url(),
        &[
            ("PAYMENT_DELAY_MS", "0"),
            ("EMAIL_DELAY_MS", "1500"),
            // The pool would wait this long for a connection that cannot come.
            ("DB_ACQUIRE_TIMEOUT_SECONDS", "30"),
        ],
    )
    .await;
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
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stopped = Instant::now();
        cluster.stop();
        // Read the catalog every 100 ms until the answer is a quick 503.
        let mut reads = Vec::new();
        let fast_503 = loop {
            let (status, took) = read(&app, &product).await;
            reads.push((stopped.elapsed(), status, took));
            if status == Some(StatusCode::SERVICE_UNAVAILABLE) && took < Duration::from_millis(500)
            {
                break stopped.elapsed();
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(20),
                "no fast 503: {reads:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // While it lasts, every read is a quick 503 with Retry-After.
        let response = app.get(&product, None).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let ready = app.get("/ready", None).await.status();
        tokio::time::sleep(Duration::from_secs(2)).await;
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
    let recovered = loop {
        if read(&app, &product).await.0 == Some(StatusCode::OK) {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < Duration::from_secs(20), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
    app.assert_every_cent_accounted().await;
    println!(
        "database stopped: quick 503s after {fast_503:?} (slowest read {slowest:?}); \
         service back {recovered:?} after the database"
    );
    assert!(fast_503 < Duration::from_secs(5), "{fast_503:?}");
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
}
