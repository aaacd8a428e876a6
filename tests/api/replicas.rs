//! Beyond one machine: N identical replicas of the real binary share one Postgres.
//! Started together on an empty database they all come up; a live setting changed
//! through one is in force on all; racing buyers spread over them still get exactly the
//! stock; outbox jobs are done exactly once.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ADMIN_EMAIL, Ledger, TestApp, eventually, expect_json, sample, spawn_replicas,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_started_together_share_one_database_safely() {
    let replicas = spawn_replicas(3, &[]).await;
    for replica in &replicas {
        let ready = replica.get("/ready", None).await;
        assert_eq!(ready.status(), StatusCode::OK, "{}", replica.address);
    }
    let db = &replicas[0].db;
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
        .bind(ADMIN_EMAIL)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(admins, 1, "one admin");
    let (migrations, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(migrations, distinct, "each migration applied once");
    assert!(migrations >= 3);
    let settings_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM live_settings")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(settings_rows, 1);
    // Every replica's admin login works (the same account, the same password hash).
    for replica in &replicas {
        replica.admin_token().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fault_set_through_one_replica_is_in_force_on_all_within_a_second() {
    let mut replicas = spawn_replicas(3, &[]).await;
    let admin = replicas[0].admin_token().await;
    let changed = Instant::now();
    expect_json(
        replicas[0]
            .put(
                "/api/admin/faults",
                Some(&admin),
                &json!({"payment_success_rate": 0.25, "email_outage": true}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    for replica in &replicas[1..] {
        let seen = eventually(
            Duration::from_secs(5),
            "the faults on every replica",
            || async {
                let faults = expect_json(
                    replica.get("/api/admin/faults", Some(&admin)).await,
                    StatusCode::OK,
                )
                .await;
                (faults["payment_success_rate"] == 0.25 && faults["email_outage"] == true)
                    .then(|| changed.elapsed())
            },
        )
        .await;
        assert!(seen < Duration::from_secs(1), "seen after {seen:?}");
        let metrics = replica.metrics().await;
        assert_eq!(
            sample(&metrics, "fault_payment_success_ratio", &[]),
            Some(0.25)
        );
        assert_eq!(sample(&metrics, "fault_email_outage", &[]), Some(1.0));
        println!("{}: in force {seen:?} after the change", replica.address);
    }
    // The checkout mode travels the same way.
    replicas[2].set_checkout_mode(&admin, "async").await;
    for replica in &replicas {
        eventually(
            Duration::from_secs(5),
            "the mode on every replica",
            || async {
                let metrics = replica.metrics().await;
                (sample(&metrics, "checkout_mode", &[("mode", "async")]) == Some(1.0)).then_some(())
            },
        )
        .await;
    }

    // A restarted replica keeps what was switched live, except the settings its own
    // environment names (the tests set PAYMENT_SUCCESS_RATE=1): those it puts in force
    // again, for every replica.
    replicas[1].kill_and_restart().await;
    let metrics = replicas[1].metrics().await;
    assert_eq!(
        sample(&metrics, "checkout_mode", &[("mode", "async")]),
        Some(1.0)
    );
    let admin = replicas[1].admin_token().await;
    let faults = expect_json(
        replicas[1].get("/api/admin/faults", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(faults["email_outage"], true, "not in the environment: kept");
    assert_eq!(faults["payment_success_rate"], 1.0, "from the environment");
    // ...shared with the others.
    eventually(
        Duration::from_secs(5),
        "the restarted replica's setting on the others",
        || async {
            let faults = expect_json(
                replicas[0].get("/api/admin/faults", Some(&admin)).await,
                StatusCode::OK,
            )
            .await;
            (faults["payment_success_rate"] == 1.0).then_some(())
        },
    )
    .await;
}

/// Registers `count` buyers through the replicas in turn, each with `product` in the
/// cart; returns (replica index, token).
async fn buyers_across(replicas: &[TestApp], count: usize, product: i64) -> Vec<(usize, String)> {
    join_all((0..count).map(|i| async move {
        let replica = &replicas[i % replicas.len()];
        let token = replica.customer(&format!("spread{i}@example.com")).await;
        expect_json(
            replica.add_to_cart(&token, product, 1).await,
            StatusCode::CREATED,
        )
        .await;
        (i % replicas.len(), token)
    }))
    .await
}

/// Every buyer checks out at once, each through its replica; their statuses.
async fn check_out_across(replicas: &[TestApp], buyers: &[(usize, String)]) -> Vec<StatusCode> {
    join_all(
        buyers
            .iter()
            .map(|(i, token)| async move { replicas[*i].checkout(token).await.status() }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_buyers_spread_over_replicas_get_exactly_the_stock() {
    const UNITS: i64 = 6;
    let replicas = spawn_replicas(3, &[("PAYMENT_DELAY_MS", "20")]).await;
    let admin = replicas[0].admin_token().await;
    let scarce = replicas[0]
        .create_product(&admin, "Last few", "9.99", UNITS)
        .await;
    let buyers = buyers_across(&replicas, 24, scarce).await;
    let statuses = check_out_across(&replicas, &buyers).await;
    let sold = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count() as i64;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count() as i64;
    assert_eq!((sold, refused), (UNITS, 24 - UNITS), "{statuses:?}");
    assert_eq!(replicas[0].stock_of(scarce).await, (0, 0));
    replicas[0].assert_ledger(Ledger::paid(UNITS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_jobs_are_done_exactly_once_across_replicas() {
    let replicas = spawn_replicas(
        3,
        &[
            ("CHECKOUT_MODE", "async"),
            ("PAYMENT_DELAY_MS", "100"),
            ("EMAIL_DELAY_MS", "50"),
        ],
    )
    .await;
    let admin = replicas[0].admin_token().await;
    let kettle = replicas[0]
        .create_product(&admin, "Kettle", "19.99", 100)
        .await;
    let buyers = buyers_across(&replicas, 18, kettle).await;
    let statuses = check_out_across(&replicas, &buyers).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{statuses:?}"
    );
    let db = &replicas[0].db;
    eventually(Duration::from_secs(15), "every e-mail job done", || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox_jobs WHERE status = 'done' AND kind = 'send_confirmation'",
        )
        .fetch_one(db)
        .await
        .unwrap();
        (done == 18).then_some(())
    })
    .await;
    let (confirmed, charges, jobs, emails): (i64, i64, i64, usize) = (
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'confirmed'")
            .fetch_one(db)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT count(*) FROM gateway_charges")
            .fetch_one(db)
            .await
            .unwrap(),
        sqlx::query_scalar("SELECT count(*) FROM outbox_jobs WHERE status = 'done'")
            .fetch_one(db)
            .await
            .unwrap(),
        replicas[0].smtp.messages().len(),
    );
    assert_eq!((confirmed, charges, jobs, emails), (18, 18, 36, 18));
    // Every replica's workers took part (SKIP LOCKED spreads the jobs).
    let mut workers_busy = 0;
    for replica in &replicas {
        let done = sample(
            &replica.metrics().await,
            "outbox_jobs_processed_total",
            &[("outcome", "done")],
        );
        if done.unwrap_or(0.0) > 0.0 {
            workers_busy += 1;
        }
    }
    assert!(workers_busy >= 2, "jobs spread over the replicas");
    replicas[0].assert_ledger(Ledger::paid(18)).await;
}
