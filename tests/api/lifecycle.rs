//! Reading orders back, and the admin's status transitions.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Ledger, TestApp, expect_json, expect_problem, spawn_app};

async fn place_order(app: &TestApp, token: &str, product: i64, quantity: i64) -> serde_json::Value {
    expect_json(
        app.add_to_cart(token, product, quantity).await,
        StatusCode::CREATED,
    )
    .await;
    expect_json(app.checkout(token).await, StatusCode::CREATED).await
}

#[tokio::test]
async fn customers_see_their_own_orders_newest_first() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let first = place_order(&app, &alice, kettle, 1).await;
    let second = place_order(&app, &alice, kettle, 2).await;

    let mine = expect_json(
        app.get("/api/orders/my-orders", Some(&alice)).await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<i64> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            second["id"].as_i64().unwrap(),
            first["id"].as_i64().unwrap()
        ]
    );
    assert_eq!(mine[0]["items"][0]["quantity"], 2);
    assert_eq!(mine[0]["payment"]["status"], "completed");

    let path = format!("/api/orders/{}", first["id"]);
    let fetched = expect_json(app.get(&path, Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(fetched["total"], "19.99");
    assert_eq!(fetched["status"], "confirmed");
    // Someone else's order does not exist, as far as they can tell.
    expect_problem(
        app.get(&path, Some(&bob)).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.get("/api/orders/999999", Some(&bob)).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    // Admins see everything.
    expect_json(app.get(&path, Some(&admin)).await, StatusCode::OK).await;
    let all = expect_json(
        app.get("/api/orders?limit=1", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["total"], 2);
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let bobs = expect_json(
        app.get("/api/orders/my-orders", Some(&bob)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(bobs, json!([]));
    expect_problem(
        app.get("/api/orders/my-orders", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn orders_ship_then_deliver_and_nothing_else() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let order = place_order(&app, &alice, kettle, 1).await;
    let path = format!("/api/orders/{}/status", order["id"]);

    expect_problem(
        app.patch(&path, Some(&alice), &json!({"status": "shipped"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.patch(&path, Some(&admin), &json!({"status": "delivered"}))
            .await,
        StatusCode::CONFLICT,
        "invalid-transition",
    )
    .await;
    let shipped = expect_json(
        app.patch(&path, Some(&admin), &json!({"status": "shipped"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shipped["status"], "shipped");
    expect_problem(
        app.patch(&path, Some(&admin), &json!({"status": "cancelled"}))
            .await,
        StatusCode::CONFLICT,
        "invalid-transition",
    )
    .await;
    let delivered = expect_json(
        app.patch(&path, Some(&admin), &json!({"status": "delivered"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(delivered["status"], "delivered");
    expect_problem(
        app.patch(&path, Some(&admin), &json!({"status": "lost"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    expect_problem(
        app.patch(
            "/api/orders/999999/status",
            Some(&admin),
            &json!({"status": "shipped"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let shipped_only = expect_json(
        app.get("/api/orders?status=delivered", Some(&admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shipped_only["total"], 1);
}

#[tokio::test]
async fn cancelling_before_shipping_puts_the_stock_back() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let order = place_order(&app, &alice, kettle, 3).await;
    assert_eq!(app.stock_of(kettle).await, (7, 0));

    let cancelled = expect_json(
        app.patch(
            &format!("/api/orders/{}/status", order["id"]),
            Some(&admin),
            &json!({"status": "cancelled"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["payment"]["status"], "refunded");
    assert_eq!(app.stock_of(kettle).await, (10, 0));
    app.assert_ledger(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 1,
        without_order: 0,
    })
    .await;
}

#[tokio::test]
async fn statuses_read_from_the_database_are_checked_not_defaulted() {
    let app = crate::helpers::spawn_app().await;
    let known: ecommerce_monolith::orders::OrderStatus = sqlx::query_scalar("SELECT 'shipped'")
        .fetch_one(&app.db)
        .await
        .expect("a known status decodes");
    assert_eq!(known, ecommerce_monolith::orders::OrderStatus::Shipped);
    let unknown = sqlx::query_scalar::<_, ecommerce_monolith::orders::OrderStatus>(
        "SELECT 'lost_in_transit'",
    )
    .fetch_one(&app.db)
    .await;
    assert!(unknown.is_err(), "an unknown status must be an error");
    let role = sqlx::query_scalar::<_, ecommerce_monolith::auth::Role>("SELECT 'superuser'")
        .fetch_one(&app.db)
        .await;
    assert!(
        role.is_err(),
        "an unknown role must be an error, not a customer"
    );
}
