use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_json, expect_problem, spawn_app};

#[tokio::test]
async fn reviews_one_per_customer_and_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    let path = format!("/api/products/{kettle}/reviews");

    let review = expect_json(
        app.post(
            &path,
            Some(&alice),
            &json!({"rating": 5, "comment": "Boils fast"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(review["rating"], 5);
    assert_eq!(review["author_name"], "Test Customer");
    expect_problem(
        app.post(&path, Some(&alice), &json!({"rating": 1})).await,
        StatusCode::CONFLICT,
        "already-exists",
    )
    .await;
    expect_json(
        app.post(&path, Some(&bob), &json!({"rating": 4})).await,
        StatusCode::CREATED,
    )
    .await;

    let reviews = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(reviews.as_array().unwrap().len(), 2);
    let product = expect_json(
        app.get(&format!("/api/products/{kettle}"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(product["review_count"], 2);
    assert_eq!(product["average_rating"], 4.5);
}

#[tokio::test]
async fn invalid_reviews() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    let path = format!("/api/products/{kettle}/reviews");
    for rating in [0, 6, -1] {
        let problem = expect_problem(
            app.post(&path, Some(&alice), &json!({"rating": rating}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "rating");
    }
    expect_problem(
        app.post(&path, None, &json!({"rating": 3})).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_problem(
        app.post(
            "/api/products/999999/reviews",
            Some(&alice),
            &json!({"rating": 3}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.get("/api/products/999999/reviews", None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    assert_eq!(app.count("reviews").await, 0);
}

#[tokio::test]
async fn notifications_are_private_and_can_be_marked_read() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let bob = app.customer("bob@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    let order = expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;

    let inbox = expect_json(
        app.get("/api/notifications", Some(&alice)).await,
        StatusCode::OK,
    )
    .await;
    let notifications = inbox.as_array().unwrap();
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0]["kind"], "order_confirmed");
    assert_eq!(notifications[0]["is_read"], false);
    assert!(
        notifications[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("#{}", order["id"]))
    );
    let id = notifications[0]["id"].as_i64().unwrap();

    let bobs = expect_json(
        app.get("/api/notifications", Some(&bob)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(bobs.as_array().unwrap().len(), 0);
    expect_problem(
        app.post(
            &format!("/api/notifications/{id}/read"),
            Some(&bob),
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;

    let read = expect_json(
        app.post(
            &format!("/api/notifications/{id}/read"),
            Some(&alice),
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["is_read"], true);
    let unread = expect_json(
        app.get("/api/notifications?unread_only=true", Some(&alice))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(unread.as_array().unwrap().len(), 0);
}
