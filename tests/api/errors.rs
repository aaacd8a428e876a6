//! Bad input of every kind gets a clear 4xx problem, never a 500, and writes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::POST, "/api/auth/register", None)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST, "bad-request").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::POST, "/api/auth/login", None)
        .header("content-type", "text/plain")
        .body("email=a@b.c")
        .send()
        .await
        .unwrap();
    expect_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
}

#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let app = spawn_app().await;
    let problem = expect_problem(
        app.post(
            "/api/auth/register",
            None,
            &json!({"email": "a@example.com", "password": "long enough", "full_name": "A", "role": "admin"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("role"));
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn oversized_bodies_are_a_413() {
    let app = spawn_app_with(&[("HTTP_BODY_LIMIT_BYTES", "1024")]).await;
    let huge = "x".repeat(4096);
    expect_problem(
        app.post(
            "/api/auth/register",
            None,
            &json!({"email": "a@example.com", "password": "long enough", "full_name": huge}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    )
    .await;
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = spawn_app().await;
    expect_problem(
        app.get("/api/nowhere", None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.delete("/api/auth/login", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
}

#[tokio::test]
async fn huge_and_negative_ids_are_client_errors() {
    let app = spawn_app().await;
    let token = app.customer("a@example.com").await;
    for path in [
        "/api/products/99999999999999999999",
        "/api/orders/-1",
        "/api/orders/abc",
    ] {
        let status = app.get(path, Some(&token)).await.status();
        assert!(status.is_client_error(), "{path}: {status}");
    }
    for quantity in [json!(99_999_999_999_i64), json!(i64::MAX)] {
        expect_problem(
            app.post(
                "/api/cart/items",
                Some(&token),
                &json!({"product_id": 1, "quantity": quantity}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
    }
}

#[tokio::test]
async fn every_response_carries_a_trace_id_and_continues_a_traceparent() {
    let app = spawn_app().await;
    let response = app.get("/health", None).await;
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(trace_id.len(), 32);

    let incoming = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .request(reqwest::Method::GET, "/api/products/0", None)
        .header("traceparent", format!("00-{incoming}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-trace-id"], incoming);
    let problem = expect_problem(response, StatusCode::NOT_FOUND, "not-found").await;
    assert_eq!(problem["trace_id"], incoming);
}

#[tokio::test]
async fn bytes_postgres_rejects_are_a_422_not_a_500() {
    let app = spawn_app().await;
    for query in ["q=%00", "q=abc%00def", "q=%01"] {
        let body = expect_problem(
            app.get(&format!("/api/products?{query}"), None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "q", "{query}: {body}");
    }
    let admin = app.admin_token().await;
    let body = expect_problem(
        app.post(
            "/api/products/categories",
            Some(&admin),
            &json!({"name": "Nul\u{0}Category"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "name");
}

#[tokio::test]
async fn a_body_must_be_an_object_not_an_array_of_its_fields() {
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    // serde would read ["email", "password"] as the struct's fields in order.
    let login = app
        .post(
            "/api/auth/login",
            None,
            &json!(["ada@example.com", crate::helpers::PASSWORD]),
        )
        .await;
    let body = expect_problem(login, StatusCode::UNPROCESSABLE_ENTITY, "validation-error").await;
    assert_eq!(body["errors"][0]["field"], "body");
    for not_an_object in [json!("text"), json!(42), json!(null)] {
        expect_problem(
            app.post("/api/auth/register", None, &not_an_object).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
    }
}

#[tokio::test]
async fn whole_numbers_written_as_floats_are_whole_numbers() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 500).await;
    // JSON Schema's "integer" includes 223.0; the OpenAPI document promises integers.
    let added = app
        .post(
            "/api/cart/items",
            Some(&alice),
            &json!({"product_id": kettle as f64, "quantity": 223.0}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let body = expect_problem(
        app.post(
            "/api/cart/items",
            Some(&alice),
            &json!({"product_id": kettle, "quantity": 2.5}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "quantity");
}

#[tokio::test]
async fn repeated_wrong_passwords_throttle_that_account_only() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ACCOUNT_AND_ADDRESS_PER_MINUTE", "5")]).await;
    app.customer("victim@example.com").await;
    let bystander = app.customer("bystander@example.com").await;
    assert!(!bystander.is_empty());
    let app = &app;
    let attempt = |password: &'static str| async move {
        app.post(
            "/api/auth/login",
            None,
            &json!({"email": "victim@example.com", "password": password}),
        )
        .await
    };
    // The registration helper logged the victim in once: four wrong guesses remain.
    for _ in 0..4 {
        assert_eq!(
            attempt("wrong guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = attempt(crate::helpers::PASSWORD).await;
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    expect_problem(
        throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-requests",
    )
    .await;
    // Another account, from the same address, logs in at once.
    app.login("bystander@example.com", crate::helpers::PASSWORD)
        .await;
}

#[tokio::test]
async fn one_address_trying_many_accounts_is_throttled() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE", "3")]).await;
    let app = &app;
    let statuses: Vec<StatusCode> = futures::future::join_all((0..5).map(|i| async move {
        app.post(
            "/api/auth/login",
            None,
            &json!({"email": format!("guess{i}@example.com"), "password": "password1"}),
        )
        .await
    }))
    .await
    .iter()
    .map(reqwest::Response::status)
    .collect();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(throttled, 2, "{statuses:?}");
}
