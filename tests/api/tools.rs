//! The command-line tools, run as a user runs them: `seed`, `loadgen`, `faults`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{
    TestDatabase, eventually, expect_json, run_tool, sample, spawn_app, spawn_process,
};

async fn catalog(db: &PgPool) -> Vec<(String, String, String, i32)> {
    sqlx::query_as(
        "SELECT c.name, p.name, p.price::text, i.quantity FROM products p \
         JOIN categories c ON c.id = p.category_id JOIN inventory i ON i.product_id = p.id \
         ORDER BY p.name",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn seed_is_idempotent_and_restocks_on_request() {
    let database = TestDatabase::create().await;
    let environment = [("DATABASE_URL", database.url.as_str())];
    let first = run_tool(&["seed"], &environment).await;
    assert!(first.status.success(), "{first:?}");
    let db = PgPool::connect(&database.url).await.unwrap();
    let seeded = catalog(&db).await;
    assert!(seeded.len() >= 25, "a few dozen products");
    assert!(
        seeded.iter().filter(|(.., stock)| *stock <= 5).count() >= 3,
        "some scarce"
    );

    let second = run_tool(&["seed"], &environment).await;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        catalog(&db).await,
        seeded,
        "seeding twice gives the same catalog"
    );
    let categories: i64 = sqlx::query_scalar("SELECT count(*) FROM categories")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(categories, 5);

    sqlx::query("UPDATE inventory SET quantity = 0")
        .execute(&db)
        .await
        .unwrap();
    let restocked = run_tool(&["seed", "--restock"], &environment).await;
    assert!(restocked.status.success(), "{restocked:?}");
    assert_eq!(catalog(&db).await, seeded, "stock levels are back");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_reports_what_the_service_counted() {
    let app = spawn_process(&[("PAYMENT_SUCCESS_RATE", "0.7")]).await;
    app.seed().await;
    let report_file = std::env::temp_dir().join(format!("loadgen-{}.json", uuid::Uuid::new_v4()));
    let output = run_tool(
        &[
            "loadgen",
            "--base-url",
            &app.address,
            "--users",
            "4",
            "--duration",
            "4s",
            "--think-time",
            "20ms",
            "--checkout-ratio",
            "0.7",
            "--hot-product-share",
            "0.5",
            "--json",
            report_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("checkout outcomes:"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report_file);

    let metrics = app.metrics().await;
    // Every checkout outcome, as counted by both sides.
    let mut checkouts = 0.0;
    for (outcome, count) in report["checkouts"].as_object().unwrap() {
        let served = sample(&metrics, "checkouts_total", &[("outcome", outcome)]).unwrap();
        assert_eq!(count.as_f64().unwrap(), served, "outcome {outcome}");
        checkouts += served;
    }
    assert!(checkouts > 0.0, "some checkouts happened");
    assert_eq!(
        report["operations"]["checkout"]["count"].as_f64(),
        Some(checkouts)
    );
    // Every request the load generator sent, as counted by the service.
    let served_requests: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("http_server_request_duration_seconds_count")
                && !line.contains("route=\"/metrics\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(report["requests"].as_f64(), Some(served_requests));
    for (operation, method, route) in [
        ("register", "POST", "/api/auth/register"),
        ("add_to_cart", "POST", "/api/cart/items"),
        ("view_product", "GET", "/api/products/{id}"),
    ] {
        let served: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("http_server_request_duration_seconds_count{")
                    && line.contains(&format!("method=\"{method}\""))
                    && line.contains(&format!("route=\"{route}\""))
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(
            report["operations"][operation]["count"].as_f64(),
            Some(served),
            "{operation}"
        );
    }
    let latency = &report["operations"]["checkout"]["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_prints_its_report_on_ctrl_c() {
    let app = spawn_process(&[]).await;
    app.seed().await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecommerce-monolith"))
        .args([
            "loadgen",
            "--base-url",
            &app.address,
            "--users",
            "3",
            "--duration",
            "10m",
        ])
        .args(["--think-time", "50ms"])
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once the shoppers are at it.
    eventually(Duration::from_secs(20), "shoppers checking out", || async {
        let metrics = app.metrics().await;
        (sample(&metrics, "checkouts_total", &[]) > Some(0.0)).then_some(())
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("loadgen stops promptly on SIGINT")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("(interrupted)"), "{stdout}");
    assert!(stdout.contains("checkout outcomes:"), "{stdout}");
    assert!(stdout.contains("browse"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_explains_an_empty_catalog_and_bad_arguments() {
    let app = spawn_process(&[]).await;
    let empty = run_tool(
        &["loadgen", "--base-url", &app.address, "--duration", "1s"],
        &[],
    )
    .await;
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("ecommerce-monolith seed"));

    let bad_ratio = run_tool(&["loadgen", "--checkout-ratio", "1.5"], &[]).await;
    assert!(!bad_ratio.status.success());
    assert!(String::from_utf8_lossy(&bad_ratio.stderr).contains("between 0 and 1"));
    let bad_duration = run_tool(&["loadgen", "--duration", "soon"], &[]).await;
    assert!(!bad_duration.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_faults_command_changes_the_running_service() {
    let app = spawn_process(&[]).await;
    let shown = app.faults(&["show"]).await;
    assert_eq!(shown["payment_success_rate"], 1.0);
    let changed = app
        .faults(&[
            "set",
            "--payment-success-rate",
            "0.5",
            "--email-outage",
            "true",
        ])
        .await;
    assert_eq!(changed["payment_success_rate"], 0.5);
    assert_eq!(changed["email_outage"], true);
    let admin = app.admin_token().await;
    let settings = expect_json(
        app.get("/api/admin/faults", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(settings, changed);
    let reset = app.faults(&["reset"]).await;
    assert_eq!(reset["payment_delay_ms"], 1000);
    assert_eq!(reset["email_outage"], false);

    let refused = run_tool(
        &["faults", "set", "--payment-success-rate", "2"],
        &[
            ("BASE_URL", &app.address),
            ("ADMIN_EMAIL", crate::helpers::ADMIN_EMAIL),
            ("ADMIN_PASSWORD", crate::helpers::ADMIN_PASSWORD),
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("between 0 and 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mode_command_switches_the_checkout_live() {
    let app = spawn_app().await;
    assert_eq!(app.admin_tool("mode", &["show"]).await["mode"], "blocking");
    assert_eq!(
        app.admin_tool("mode", &["set", "async"]).await["mode"],
        "async"
    );
    let (alice, _) = app.alice_with_kettles(1).await;
    assert_eq!(app.checkout(&alice).await.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.admin_tool("mode", &["set", "blocking"]).await["mode"],
        "blocking"
    );
    let refused = run_tool(&["mode", "set", "sideways"], &[]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("blocking or async"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shop_that_sells_out_is_business_not_server_errors() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    for name in ["Rare lamp", "Rare vase"] {
        app.create_product(&admin, name, "9.99", 3).await;
    }
    let report_file = std::env::temp_dir().join(format!("loadgen-{}.json", uuid::Uuid::new_v4()));
    let output = run_tool(
        &[
            "loadgen",
            "--base-url",
            &app.address,
            "--users",
            "6",
            "--duration",
            "4s",
            "--think-time",
            "10ms",
            "--checkout-ratio",
            "1",
            "--restock-every",
            "0s",
            "--json",
            report_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report_file);
    let left: i64 = sqlx::query_scalar("SELECT SUM(quantity - reserved) FROM inventory")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(left <= 2, "the shelves emptied ({left} units left)");
    assert_eq!(report["server_errors"], 0, "{report:#}");
    assert_eq!(report["error_rate"], 0.0);
    assert!(
        report["business_outcomes"]["sold_out"].as_u64().unwrap() > 0,
        "shoppers met the empty shelves: {report:#}"
    );
    assert_eq!(
        report["checkouts"]["empty_cart"], 0,
        "nobody checks out an empty cart"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0 server errors (0.00 %)"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offered_rate_starts_once_every_shopper_has_signed_up() {
    let app = spawn_process(&[("CHECKOUT_MODE", "async")]).await;
    let admin = app.admin_token().await;
    for name in ["Lamp", "Vase", "Chair", "Desk"] {
        app.create_product(&admin, name, "9.99", 1000).await;
    }
    let output = run_tool(
        &[
            "loadgen",
            "--base-url",
            &app.address,
            "--scenario",
            "checkout",
            "--rate",
            "10",
            "--users",
            "4",
            "--no-follow",
            "--duration",
            "2s",
            "--restock-every",
            "0s",
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("4 shoppers signed up"),
        "the load generator says when the rate starts: {stderr}"
    );
    // The password hashes of the sign-ups are over before the first checkout: the
    // offered load is checkouts alone (argon2 runs one hash at a time, so a shopper that
    // went early would order while the others still registered).
    let (last_registered, first_order): (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT (SELECT max(created_at) FROM users WHERE email LIKE '%@loadgen.example'), \
                (SELECT min(created_at) FROM orders)",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let last_registered = last_registered.expect("the shoppers registered");
    let first_order = first_order.expect("the rate was offered: orders were placed");
    assert!(
        first_order > last_registered,
        "first order at {first_order}, last shopper registered at {last_registered}"
    );
}
