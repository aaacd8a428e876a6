use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_json, expect_problem, spawn_app};

#[tokio::test]
async fn a_new_cart_is_empty() {
    let app = spawn_app().await;
    let token = app.customer("a@example.com").await;
    let cart = expect_json(app.get("/api/cart", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(cart, json!({"items": [], "total": "0.00"}));
}

#[tokio::test]
async fn adding_the_same_product_again_adds_to_its_quantity() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let token = app.customer("a@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 10).await;
    let mug = app.create_product(&admin, "Mug", "4.50", 10).await;

    let first = expect_json(
        app.add_to_cart(&token, kettle, 2).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(first["quantity"], 2);
    assert_eq!(first["subtotal"], "39.98");
    let again = expect_json(
        app.add_to_cart(&token, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["quantity"], 3);
    expect_json(app.add_to_cart(&token, mug, 2).await, StatusCode::CREATED).await;

    let cart = expect_json(app.get("/api/cart", Some(&token)).await, StatusCode::OK).await;
    let items = cart["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["product_name"], "Kettle");
    assert_eq!(items[0]["unit_price"], "19.99");
    assert_eq!(cart["total"], "68.97");
}

#[tokio::test]
async fn more_than_in_stock_is_a_conflict_naming_the_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let token = app.customer("a@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 3).await;
    expect_json(
        app.add_to_cart(&token, kettle, 2).await,
        StatusCode::CREATED,
    )
    .await;
    let problem = expect_problem(
        app.add_to_cart(&token, kettle, 2).await,
        StatusCode::CONFLICT,
        "insufficient-stock",
    )
    .await;
    assert_eq!(problem["products"][0]["product_id"], kettle);
    assert_eq!(problem["products"][0]["available"], 3);
    assert_eq!(problem["products"][0]["requested"], 4);
    let cart = expect_json(app.get("/api/cart", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(
        cart["items"][0]["quantity"], 2,
        "the failed add changed nothing"
    );
}

#[tokio::test]
async fn invalid_additions() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let token = app.customer("a@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 3).await;
    for quantity in [json!(0), json!(-1), json!(1.5), json!("2")] {
        let problem = expect_problem(
            app.post(
                "/api/cart/items",
                Some(&token),
                &json!({"product_id": kettle, "quantity": quantity}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "quantity");
    }
    expect_problem(
        app.add_to_cart(&token, 999_999, 1).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.add_to_cart("not-a-token", kettle, 1).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(app.count("cart_items").await, 0);
}

#[tokio::test]
async fn update_remove_and_clear() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let token = app.customer("a@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    let mug = app.create_product(&admin, "Mug", "4.50", 5).await;
    let item = expect_json(
        app.add_to_cart(&token, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let item_path = format!("/api/cart/items/{}", item["id"]);

    let updated = expect_json(
        app.patch(&item_path, Some(&token), &json!({"quantity": 4}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["quantity"], 4);
    expect_problem(
        app.patch(&item_path, Some(&token), &json!({"quantity": 6}))
            .await,
        StatusCode::CONFLICT,
        "insufficient-stock",
    )
    .await;
    expect_problem(
        app.patch(&item_path, Some(&token), &json!({"quantity": 0}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;

    assert_eq!(
        app.delete(&item_path, Some(&token)).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_problem(
        app.delete(&item_path, Some(&token)).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;

    expect_json(
        app.add_to_cart(&token, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    expect_json(app.add_to_cart(&token, mug, 1).await, StatusCode::CREATED).await;
    assert_eq!(
        app.delete("/api/cart", Some(&token)).await.status(),
        StatusCode::NO_CONTENT
    );
    let cart = expect_json(app.get("/api/cart", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn another_users_cart_item_is_a_404() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let mallory = app.customer("mallory@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    let item = expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/api/cart/items/{}", item["id"]);

    expect_problem(
        app.delete(&path, Some(&mallory)).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.patch(&path, Some(&mallory), &json!({"quantity": 2}))
            .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(cart["items"][0]["quantity"], 1, "Alice's cart is untouched");
}

#[tokio::test]
async fn a_cart_costing_more_than_an_order_can_hold_is_refused() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let yacht = app
        .create_product(&admin, "Yacht", "99999999.99", 500)
        .await;
    expect_json(
        app.add_to_cart(&alice, yacht, 100).await,
        StatusCode::CREATED,
    )
    .await;
    // 101 × 99,999,999.99 does not fit in NUMERIC(12,2): a 422, not a 500.
    let problem = expect_problem(
        app.add_to_cart(&alice, yacht, 1).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "quantity");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("9999999999.99"),
        "{problem}"
    );
    let cart = expect_json(app.get("/api/cart", Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(cart["items"][0]["quantity"], 100, "the cart as it was");
}
