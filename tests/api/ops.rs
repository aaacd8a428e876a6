use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use sqlx::{Connection, PgConnection};

use crate::helpers::{
    TestApp, expect_json, expect_problem, server_url, spawn_app, spawn_app_running_jobs_by_hand,
    spawn_app_with,
};

#[tokio::test]
async fn health_answers_without_the_database() {
    let app = spawn_app().await;
    let body = expect_json(app.get("/health", None).await, StatusCode::OK).await;
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn ready_when_the_database_answers() {
    let app = spawn_app().await;
    let body = expect_json(app.get("/ready", None).await, StatusCode::OK).await;
    assert_eq!(body["status"], "ready");
}

/// The name of the app's database, and a connection to the server outside it (to
/// cut the app's connections from).
async fn database_and_maintenance(app: &TestApp) -> (String, PgConnection) {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let maintenance = PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .unwrap();
    (name, maintenance)
}

#[tokio::test]
async fn not_ready_when_the_database_is_gone() {
    let app = spawn_app().await;
    // Cut the app off: forbid new connections and end the open ones.
    let (name, mut maintenance) = database_and_maintenance(&app).await;
    let allow = |allowed: bool| {
        sqlx::AssertSqlSafe(format!(
            r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {allowed}"#
        ))
    };
    sqlx::query(allow(false))
        .execute(&mut maintenance)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut maintenance)
        .await
        .unwrap();

    expect_problem(
        app.get("/ready", None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service-unavailable",
    )
    .await;
    // Liveness does not depend on the database.
    assert_eq!(app.get("/health", None).await.status(), StatusCode::OK);

    sqlx::query(allow(true))
        .execute(&mut maintenance)
        .await
        .unwrap();
    let ready = app.get("/ready", None).await;
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "ready again once Postgres is back"
    );
}

/// Reads `path` `times` at once; the statuses, in no order.
async fn reads_at_once(app: &TestApp, path: &str, times: usize) -> Vec<StatusCode> {
    let reads = (0..times).map(|_| async { app.get(path, None).await.status() });
    futures::future::join_all(reads).await
}

/// Fills the app's pool, then ends every connection Postgres holds for the app (as a
/// restart or an operator would), and leaves them idle for longer than
/// `DB_PING_IDLE_AFTER_MS`. Returns what ten reads at once answer then.
async fn reads_after_the_pool_was_cut(overrides: &[(&str, &str)]) -> Vec<StatusCode> {
    let app = spawn_app_running_jobs_by_hand(overrides).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "Lamp", "12.00", 5).await;
    let path = format!("/api/products/{product}");
    // Ten at once: the pool opens connections until it holds one per read.
    let warm = reads_at_once(&app, &path, 10).await;
    assert!(warm.iter().all(|s| *s == StatusCode::OK), "{warm:?}");

    let (name, mut maintenance) = database_and_maintenance(&app).await;
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) AS ended",
    )
    .bind(&name)
    .fetch_one(&mut maintenance)
    .await
    .unwrap();
    assert!(ended >= 2, "the pool held {ended} connections");
    // Idle past the default second, and time for the app's probe (on a connection of
    // its own, cut too) to find the database again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    reads_at_once(&app, &path, 10).await
}

#[tokio::test]
async fn connections_cut_while_idle_in_the_pool_cost_no_request() {
    let statuses = reads_after_the_pool_was_cut(&[]).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "tested before use, every dead connection is replaced: {statuses:?}"
    );
}

/// What the test above guards against: the same cut, with the test switched off.
#[tokio::test]
async fn without_the_test_before_use_the_cut_connections_fail_requests() {
    let statuses = reads_after_the_pool_was_cut(&[("DB_PING_BEFORE_ACQUIRE", "false")]).await;
    assert!(
        statuses.iter().any(|s| *s != StatusCode::OK),
        "untested, a dead connection reaches a request: {statuses:?}"
    );
}

#[tokio::test]
async fn landing_page_links_the_docs_and_tools() {
    let app = spawn_app().await;
    let response = app.get("/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    for link in [
        "/docs",
        "/openapi.json",
        "/metrics",
        ":3000",
        ":16686",
        ":9090",
        ":8025",
    ] {
        assert!(html.contains(link), "{link} missing from the landing page");
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let response = app.get("/docs/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("swagger"));
}

/// The object a `$ref` points at (responses are defined once, as components).
fn resolve<'a>(doc: &'a Value, object: &'a Value) -> &'a Value {
    match object["$ref"].as_str() {
        Some(reference) => reference
            .trim_start_matches("#/")
            .split('/')
            .fold(doc, |node, key| &node[key]),
        None => object,
    }
}

/// Served on purpose outside the OpenAPI document: not JSON operations of the API.
const UNDOCUMENTED: [(&str, &str); 3] = [
    // Prometheus text or OpenMetrics, described in docs/telemetry.md.
    ("get", "/metrics"),
    // The shop page and its files.
    ("get", "/"),
    ("get", "/assets/{*path}"),
];

/// The router's own route table — `(method, path)` for every route of every resource,
/// lower-case methods as in OpenAPI — read from axum's description of its router (its
/// `Debug`: the paths by route id, and each route's `Allow` header).
fn route_table(router: &axum::Router<ecommerce_monolith::http::AppState>) -> Vec<(String, String)> {
    let described = format!("{router:?}");
    // The routes proper, not the fallback router after them.
    let routes = described
        .split("fallback_router")
        .next()
        .expect("axum describes its path router first");
    let paths: std::collections::HashMap<&str, &str> =
        regex::Regex::new(r#"RouteId\((\d+)\): "([^"]*)""#)
            .expect("regex")
            .captures_iter(routes)
            .map(|c| {
                (
                    c.get(1).map_or("", |m| m.as_str()),
                    c.get(2).map_or("", |m| m.as_str()),
                )
            })
            .collect();
    let mut table: Vec<(String, String)> = regex::Regex::new(
        r#"RouteId\((\d+)\): MethodRouter\(MethodRouter \{.*?allow_header: Bytes\(b"([A-Z,]*)"\)"#,
    )
    .expect("regex")
    .captures_iter(routes)
    .flat_map(|c| {
        let path = paths[c.get(1).map_or("", |m| m.as_str())].to_string();
        c.get(2)
            .map_or("", |m| m.as_str())
            .split(',')
            // axum answers HEAD wherever it answers GET.
            .filter(|method| *method != "HEAD")
            .map(|method| (method.to_ascii_lowercase(), path.clone()))
            .collect::<Vec<_>>()
    })
    .collect();
    table.sort();
    table
}

#[tokio::test]
async fn openapi_document_describes_every_route_with_errors_and_security() {
    let app = spawn_app().await;
    let doc = expect_json(app.get("/openapi.json", None).await, StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            ["get", "put", "post", "delete", "patch"]
                .into_iter()
                .filter(|method| item[*method].is_object())
                .map(|method| (method.to_string(), path.clone()))
        })
        .collect();
    documented.sort();
    // Every route the service serves is documented, or one of the few that are not on
    // purpose; and every documented operation is served.
    let (router, _) = ecommerce_monolith::http::api();
    let served = route_table(&router);
    assert!(
        served.len() > UNDOCUMENTED.len(),
        "the route table was read: {served:?}"
    );
    let mut expected = documented.clone();
    expected.extend(
        UNDOCUMENTED
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string())),
    );
    expected.sort();
    assert_eq!(served, expected, "served routes against the document");
    for (method, path) in &documented {
        let operation = &paths[path.as_str()][method.as_str()];
        assert!(operation.is_object(), "{method} {path} missing");
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|code| code.starts_with('2')),
            "{method} {path} has no success response"
        );
        let protected = operation["security"].is_array();
        if protected {
            let unauthorized = resolve(
                &doc,
                responses
                    .get("401")
                    .unwrap_or_else(|| panic!("{method} {path} lacks its 401")),
            );
            assert!(unauthorized["content"]["application/problem+json"]["schema"].is_object());
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "Problem",
        "RegisterRequest",
        "ProductView",
        "OrderView",
        "CheckoutRequest",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    // Money is a string in the contract, not a float.
    assert_eq!(
        doc["components"]["schemas"]["ProductView"]["properties"]["price"]["type"],
        "string"
    );
}

#[tokio::test]
async fn metrics_endpoint_is_404_when_metrics_are_off() {
    let app = spawn_app_with(&[("METRICS_ENABLED", "false")]).await;
    expect_problem(
        app.get("/metrics", None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
}
