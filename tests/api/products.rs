use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_json, expect_problem, spawn_app};

#[tokio::test]
async fn admins_create_categories_and_duplicates_conflict() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = expect_json(
        app.post(
            "/api/products/categories",
            Some(&admin),
            &json!({"name": "Kitchen", "description": "Pots and pans"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["name"], "Kitchen");
    expect_problem(
        app.post(
            "/api/products/categories",
            Some(&admin),
            &json!({"name": "kitchen"}),
        )
        .await,
        StatusCode::CONFLICT,
        "already-exists",
    )
    .await;
    let list = expect_json(
        app.get("/api/products/categories", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    expect_problem(
        app.post("/api/products/categories", None, &json!({"name": "Garden"}))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn products_carry_exact_prices_and_their_stock() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let category = app.create_category(&admin, "Kitchen").await;
    let product = expect_json(
        app.post(
            "/api/products",
            Some(&admin),
            &json!({"name": "Kettle", "description": "1.7 l", "price": "19.99",
                    "category_id": category, "initial_stock": 7}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(product["price"], "19.99");
    assert_eq!(product["stock"], 7);
    assert_eq!(product["category_name"], "Kitchen");
    assert_eq!(product["review_count"], 0);
    assert!(product["average_rating"].is_null());

    let id = product["id"].as_i64().unwrap();
    let fetched = expect_json(
        app.get(&format!("/api/products/{id}"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fetched, product);

    // A JSON number is accepted on input and still comes back as an exact string.
    let numeric = expect_json(
        app.post(
            "/api/products",
            Some(&admin),
            &json!({"name": "Toaster", "price": 0.1, "category_id": category}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(numeric["price"], "0.10");
    assert_eq!(numeric["stock"], 0);
}

#[tokio::test]
async fn invalid_products_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let category = app.create_category(&admin, "Kitchen").await;
    let cases = [
        (
            json!({"name": "X", "price": "-1", "category_id": category}),
            "price",
        ),
        (
            json!({"name": "X", "price": "1.999", "category_id": category}),
            "price",
        ),
        (
            json!({"name": "X", "price": "abc", "category_id": category}),
            "price",
        ),
        (
            json!({"name": "", "price": "1", "category_id": category}),
            "name",
        ),
        (
            json!({"name": "X", "price": "1", "category_id": category, "initial_stock": -5}),
            "initial_stock",
        ),
        (
            json!({"name": "X", "price": "1", "category_id": 999_999}),
            "category_id",
        ),
    ];
    for (body, field) in cases {
        let problem = expect_problem(
            app.post("/api/products", Some(&admin), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    assert_eq!(app.count("products").await, 0);
    assert_eq!(app.count("inventory").await, 0);
}

#[tokio::test]
async fn unknown_products_are_404() {
    let app = spawn_app().await;
    expect_problem(
        app.get("/api/products/424242", None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.get("/api/products/not-a-number", None).await,
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
}

#[tokio::test]
async fn listing_pages_and_filters() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let kitchen = app.create_category(&admin, "Kitchen").await;
    let garden = app.create_category(&admin, "Garden").await;
    for (name, price, category) in [
        ("Kettle", "19.99", kitchen),
        ("Teapot", "24.50", kitchen),
        ("Frying pan", "35.00", kitchen),
        ("Rake", "12.00", garden),
        ("Garden hose 50%_off", "30.00", garden),
    ] {
        let response = app
            .post(
                "/api/products",
                Some(&admin),
                &json!({"name": name, "price": price, "category_id": category, "initial_stock": 3}),
            )
            .await;
        expect_json(response, StatusCode::CREATED).await;
    }

    let page = expect_json(
        app.get("/api/products?limit=2&offset=1", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Teapot", "Frying pan"]);

    let count = |body: &serde_json::Value| body["total"].as_i64().unwrap();
    let by_category = expect_json(
        app.get(&format!("/api/products?category_id={garden}"), None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(count(&by_category), 2);
    let by_text = expect_json(app.get("/api/products?q=POT", None).await, StatusCode::OK).await;
    assert_eq!(count(&by_text), 1);
    assert_eq!(by_text["items"][0]["name"], "Teapot");
    // `%` and `_` are searched for literally.
    let literal = expect_json(
        app.get("/api/products?q=50%25_", None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(count(&literal), 1);
    let by_price = expect_json(
        app.get("/api/products?min_price=19.99&max_price=30", None)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(count(&by_price), 3);

    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "limit=ten",
        "min_price=abc",
        "min_price=10&max_price=5",
        "category_id=x",
    ] {
        expect_problem(
            app.get(&format!("/api/products?{bad}"), None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
    }
}

#[tokio::test]
async fn admins_update_restock_and_delete_products() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let customer = app.customer("cust@example.com").await;
    let id = app.create_product(&admin, "Kettle", "19.99", 2).await;
    let path = format!("/api/products/{id}");

    let updated = expect_json(
        app.patch(
            &path,
            Some(&admin),
            &json!({"price": "17.50", "name": "Kettle Pro"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["price"], "17.50");
    assert_eq!(updated["name"], "Kettle Pro");
    assert_eq!(updated["description"], "");

    let restocked = expect_json(
        app.post(
            &format!("{path}/restock"),
            Some(&admin),
            &json!({"quantity": 5}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(restocked["stock"], 7);
    expect_problem(
        app.post(
            &format!("{path}/restock"),
            Some(&admin),
            &json!({"quantity": 0}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;
    expect_problem(
        app.patch(&path, Some(&customer), &json!({"price": "1.00"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.patch(&path, Some(&admin), &json!({"category_id": 987654}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-error",
    )
    .await;

    // Deleting takes it off the catalog and out of carts.
    assert_eq!(
        app.add_to_cart(&customer, id, 1).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.delete(&path, Some(&admin)).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_problem(
        app.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.delete(&path, Some(&admin)).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let cart = expect_json(app.get("/api/cart", Some(&customer)).await, StatusCode::OK).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 0);
    let page = expect_json(app.get("/api/products", None).await, StatusCode::OK).await;
    assert_eq!(page["total"], 0);
}
