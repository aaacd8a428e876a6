use reqwest::StatusCode;
use serde_json::Value;

use sqlx::{Connection, PgConnection};

use crate::helpers::{expect_json, expect_problem, server_url, spawn_app, spawn_app_with};

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

#[tokio::test]
async fn not_ready_when_the_database_is_gone() {
    let app = spawn_app().await;
    // Cut the app off: forbid new connections and end the open ones.
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let mut maintenance = PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .unwrap();
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

#[tokio::test]
async fn openapi_document_describes_every_route_with_errors_and_security() {
    let app = spawn_app().await;
    let doc = expect_json(app.get("/openapi.json", None).await, StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/me", "get"),
        ("/api/products/categories", "get"),
        ("/api/products/categories", "post"),
        ("/api/products", "get"),
        ("/api/products", "post"),
        ("/api/products/{id}", "get"),
        ("/api/products/{id}", "patch"),
        ("/api/products/{id}", "delete"),
        ("/api/products/{id}/restock", "post"),
        ("/api/products/{id}/reviews", "get"),
        ("/api/products/{id}/reviews", "post"),
        ("/api/cart", "get"),
        ("/api/cart", "delete"),
        ("/api/cart/items", "post"),
        ("/api/cart/items/{id}", "patch"),
        ("/api/cart/items/{id}", "delete"),
        ("/api/orders/checkout", "post"),
        ("/api/orders/my-orders", "get"),
        ("/api/orders", "get"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}/status", "patch"),
        ("/api/notifications", "get"),
        ("/api/notifications/{id}/read", "post"),
        ("/api/admin/faults", "get"),
        ("/api/admin/faults", "put"),
        ("/health", "get"),
        ("/ready", "get"),
    ];
    for (path, method) in expected {
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
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
