//! What an order costs the database, counted: every statement Postgres executed for the
//! checkout request and every job the order caused (`BEGIN` and `COMMIT` included),
//! averaged over 100 orders with the default delays, in each mode, and for the addition
//! to the cart before each. Counted by
//! `pg_stat_statements` on a Postgres of the test's own (the extension must be loaded
//! at the server's start); what the service runs on its own meanwhile (gauges,
//! heartbeats, purges) is measured in an idle window first and taken off.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{TestApp, eventually, expect_json, spawn_process_on, sum_of};
use crate::postgres_cluster::{PostgresCluster, server_programs};
use crate::require::missing;

const ORDERS: usize = 100;
/// Checkouts at a time: one lane per product, so that they do not queue on one row.
const LANES: usize = 10;
/// The ceilings (BENCHMARKS.md, "What an order costs the database").
const ASYNC_AT_MOST: f64 = 12.0;
const BLOCKING_AT_MOST: f64 = 15.0;
/// An addition to the cart: `BEGIN`, the cart's row lock, the checks and the addition in
/// one statement, `COMMIT` (BENCHMARKS.md, "An addition to the cart in four statements").
/// Four, and room for what the service runs on its own in a window of about a second:
/// those statements come in bunches every few seconds, which the idle rate takes off
/// only on average (0.05 per addition were left in one run). One more statement per
/// addition would still fail.
const ADDITION_AT_MOST: f64 = 4.5;

#[tokio::test(flavor = "multi_thread")]
async fn an_order_costs_at_most_twelve_statements_async_and_fifteen_blocking() {
    let Some(bin) = server_programs() else {
        missing(
            "Postgres' server programs (initdb, pg_ctl under /usr/lib/postgresql/*/bin) are not here",
            "apt-get install postgresql",
        );
        return;
    };
    let cluster =
        PostgresCluster::start_new_with(bin, &["shared_preload_libraries=pg_stat_statements"])
            .await;
    // The default delays (the gateway's 1 s, the mail server's 2 s): a job that runs
    // longer renews its lease, and that is part of what an order costs.
    let app = spawn_process_on(
        &cluster.url(),
        &[
            ("PAYMENT_DELAY_MS", "1000"),
            ("EMAIL_DELAY_MS", "2000"),
            ("DB_MAX_CONNECTIONS", "20"),
        ],
    )
    .await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&app.db)
        .await
        .expect("pg_stat_statements");
    let admin = app.admin_token().await;
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let product = app
            .create_product(&admin, &format!("Counted {lane}"), "10.00", 1000)
            .await;
        let buyers = app
            .buyers(ORDERS / LANES, product, &format!("counted{lane}-"))
            .await;
        lanes.push((product, buyers));
    }

    // What the service runs with no order at all, per second.
    let idle = Window::open(&app).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = idle.close(&app).await;
    let idle_rate = idle.statements / idle.seconds;

    let blocking = Window::open(&app).await;
    check_out_every_lane(&app, &lanes, StatusCode::CREATED).await;
    let blocking = blocking.close(&app).await;

    let adding = Window::open(&app).await;
    for (product, buyers) in &lanes {
        join_all(buyers.iter().map(|token| async {
            expect_json(
                app.add_to_cart(token, *product, 1).await,
                StatusCode::CREATED,
            )
            .await
        }))
        .await;
    }
    let adding = adding.close(&app).await;
    app.set_checkout_mode(&admin, "async").await;
    let processed = sum_of(&app.metrics().await, "outbox_jobs_processed_total");
    let asynchronous = Window::open(&app).await;
    check_out_every_lane(&app, &lanes, StatusCode::ACCEPTED).await;
    // Settled: each order's charge and e-mail jobs finished.
    eventually(Duration::from_secs(120), "every job finished", || async {
        let now = sum_of(&app.metrics().await, "outbox_jobs_processed_total");
        (now >= processed + 2.0 * ORDERS as f64).then_some(())
    })
    .await;
    let asynchronous = asynchronous.close(&app).await;

    let per_order = |window: &Counted| {
        (window.statements - idle_rate * window.seconds).max(0.0) / ORDERS as f64
    };
    let (blocking_cost, async_cost) = (per_order(&blocking), per_order(&asynchronous));
    // One addition per order.
    let addition_cost = per_order(&adding);
    println!(
        "idle: {:.2} statements/s\n\
         an addition to the cart: {:.1} statements\n{}\n\
         blocking: {:.1} statements per order ({} in {:.1} s)\n{}\n\
         async: {:.1} statements per order ({} in {:.1} s)\n{}",
        idle_rate,
        addition_cost,
        adding.table(),
        blocking_cost,
        blocking.statements,
        blocking.seconds,
        blocking.table(),
        async_cost,
        asynchronous.statements,
        asynchronous.seconds,
        asynchronous.table(),
    );
    assert!(
        async_cost <= ASYNC_AT_MOST,
        "an asynchronous order: {async_cost:.1} statements (at most {ASYNC_AT_MOST})\n{}",
        asynchronous.table()
    );
    assert!(
        addition_cost <= ADDITION_AT_MOST,
        "an addition to the cart: {addition_cost:.1} statements (at most {ADDITION_AT_MOST})\n{}",
        adding.table()
    );
    assert!(
        blocking_cost <= BLOCKING_AT_MOST,
        "a blocking order: {blocking_cost:.1} statements (at most {BLOCKING_AT_MOST})\n{}",
        blocking.table()
    );
    drop(cluster);
}

/// `ORDERS` checkouts, `LANES` at a time (each lane its product's buyers one after the
/// other); every answer `expected`.
async fn check_out_every_lane(app: &TestApp, lanes: &[(i64, Vec<String>)], expected: StatusCode) {
    join_all(lanes.iter().map(|(_, buyers)| async move {
        for token in buyers {
            let answer = app.checkout(token).await;
            assert_eq!(answer.status(), expected);
        }
    }))
    .await;
}

/// A window of counting: the statistics are reset when it opens.
struct Window {
    opened: Instant,
}

/// What Postgres executed in a window, statement by statement.
struct Counted {
    seconds: f64,
    statements: f64,
    by_statement: Vec<(i64, String)>,
}

impl Window {
    async fn open(app: &TestApp) -> Self {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&app.db)
            .await
            .expect("reset the statistics");
        Self {
            opened: Instant::now(),
        }
    }

    async fn close(self, app: &TestApp) -> Counted {
        let seconds = self.opened.elapsed().as_secs_f64();
        // This database's statements, not the test's own reads of the statistics.
        let by_statement: Vec<(i64, String)> = sqlx::query_as(
            "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND query NOT LIKE '%pg_stat_statements%' \
             ORDER BY calls DESC",
        )
        .fetch_all(&app.db)
        .await
        .expect("the statistics");
        let statements = by_statement.iter().map(|(calls, _)| *calls as f64).sum();
        Counted {
            seconds,
            statements,
            by_statement,
        }
    }
}

impl Counted {
    fn table(&self) -> String {
        self.by_statement
            .iter()
            .map(|(calls, query)| {
                let query: String = query.chars().take(110).collect();
                format!("  {:>7.2}  {query}", *calls as f64 / ORDERS as f64)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
