//! The shopping cart: one per user, created on first use.

use axum::extract::State;
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{AuthUser, Json, Path};
use super::openapi::{Conflict, NotFound};
use crate::domain::{LineItem, Quantity, StockShortage, whole};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart, clear_cart))
        .routes(routes!(add_item))
        .routes(routes!(update_item, remove_item))
}

/// A line of the cart, at the product's price as it is now.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CartItemView {
    /// The cart item's id, for changing or removing it.
    pub id: i64,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub line: LineItem,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartView {
    pub items: Vec<CartItemView>,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    #[serde(deserialize_with = "whole")]
    pub product_id: i64,
    pub quantity: Quantity,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    /// The new quantity (not an increment).
    pub quantity: Quantity,
}

/// Item columns; `$1` is the user id and the cart item lookups add their own filter.
macro_rules! item_select {
    () => {
        "SELECT ci.id, ci.product_id, p.name AS product_name, p.price AS unit_price, ci.quantity, \
                p.price * ci.quantity AS subtotal \
         FROM cart_items ci \
         JOIN carts c ON c.id = ci.cart_id \
         JOIN products p ON p.id = ci.product_id \
         WHERE c.user_id = $1 "
    };
}

/// The caller's cart with prices as they are now.
#[utoipa::path(
    get, path = "/api/cart", tag = "cart",
    security(("bearer" = [])),
    responses((status = 200, description = "The cart (empty if never used)", body = CartView))
)]
async fn get_cart(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<CartView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let items: Vec<CartItemView> = sqlx::query_as(concat!(item_select!(), "ORDER BY ci.id"))
        .bind(user.id)
        .fetch_all(&mut *conn)
        .await?;
    let mut total: Decimal = items.iter().map(|item| item.line.subtotal).sum();
    total.rescale(2);
    Ok(Json(CartView { items, total }))
}

/// Put a product in the cart; adding one that is already there adds to its quantity.
#[utoipa::path(
    post, path = "/api/cart/items", tag = "cart",
    security(("bearer" = [])),
    request_body = AddItem,
    responses(
        (status = 201, description = "The cart item after the addition", body = CartItemView,
            links(
                ("UpdateCartItem" = (operation_id = "update_item", parameters(("id" = "$response.body#/id")))),
                ("RemoveCartItem" = (operation_id = "remove_item", parameters(("id" = "$response.body#/id"))))
            )
        ),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
async fn add_item(
    State(state): State<AppState>,
    user: AuthUser,
    Json(add): Json<AddItem>,
) -> Result<(StatusCode, Json<CartItemView>), ApiError> {
    let mut tx = state.db.begin().await?;
    let cart_id: i64 = sqlx::query_scalar(
        "INSERT INTO carts (user_id) VALUES ($1) \
         ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING id",
    )
    .bind(user.id)
    .fetch_one(&mut *tx)
    .await?;
    let already: i32 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::int FROM cart_items \
         WHERE cart_id = $1 AND product_id = $2",
    )
    .bind(cart_id)
    .bind(add.product_id)
    .fetch_one(&mut *tx)
    .await?;
    let wanted = i64::from(already) + i64::from(add.quantity.get());
    ensure_in_stock(&mut tx, add.product_id, wanted).await?;
    let item_id: i64 = sqlx::query_scalar(
        "INSERT INTO cart_items (cart_id, product_id, quantity) VALUES ($1, $2, $3) \
         ON CONFLICT (cart_id, product_id) \
         DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity RETURNING id",
    )
    .bind(cart_id)
    .bind(add.product_id)
    .bind(add.quantity.get())
    .fetch_one(&mut *tx)
    .await?;
    let item = fetch_item(&mut tx, user.id, item_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("cart item {item_id} vanished"))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(item)))
}

/// Set an item's quantity.
#[utoipa::path(
    patch, path = "/api/cart/items/{id}", tag = "cart",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Cart item id")),
    request_body = UpdateItem,
    responses(
        (status = 200, description = "The updated item", body = CartItemView),
        (status = 409, response = Conflict),
    )
)]
async fn update_item(
    State(state): State<AppState>,
    user: AuthUser,
    Path(item_id): Path<i64>,
    Json(update): Json<UpdateItem>,
) -> Result<Json<CartItemView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let item = fetch_item(&mut tx, user.id, item_id)
        .await?
        .ok_or_else(|| item_not_found(item_id))?;
    ensure_in_stock(
        &mut tx,
        item.line.product_id,
        i64::from(update.quantity.get()),
    )
    .await?;
    sqlx::query("UPDATE cart_items SET quantity = $2 WHERE id = $1")
        .bind(item_id)
        .bind(update.quantity.get())
        .execute(&mut *tx)
        .await?;
    let item = fetch_item(&mut tx, user.id, item_id)
        .await?
        .ok_or_else(|| item_not_found(item_id))?;
    tx.commit().await?;
    Ok(Json(item))
}

/// Remove an item from the cart.
#[utoipa::path(
    delete, path = "/api/cart/items/{id}", tag = "cart",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Cart item id")),
    responses((status = 204, description = "Removed"))
)]
async fn remove_item(
    State(state): State<AppState>,
    user: AuthUser,
    Path(item_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let mut conn = state.db.acquire().await?;
    let removed = sqlx::query(
        "DELETE FROM cart_items ci USING carts c \
         WHERE ci.id = $2 AND ci.cart_id = c.id AND c.user_id = $1",
    )
    .bind(user.id)
    .bind(item_id)
    .execute(&mut *conn)
    .await?;
    if removed.rows_affected() == 0 {
        // Another user's item looks exactly like a missing one.
        return Err(item_not_found(item_id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Empty the cart.
#[utoipa::path(
    delete, path = "/api/cart", tag = "cart",
    security(("bearer" = [])),
    responses((status = 204, description = "Emptied"))
)]
async fn clear_cart(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    let mut conn = state.db.acquire().await?;
    sqlx::query(
        "DELETE FROM cart_items ci USING carts c WHERE ci.cart_id = c.id AND c.user_id = $1",
    )
    .bind(user.id)
    .execute(&mut *conn)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn fetch_item(
    conn: &mut PgConnection,
    user_id: i64,
    item_id: i64,
) -> sqlx::Result<Option<CartItemView>> {
    sqlx::query_as(concat!(item_select!(), "AND ci.id = $2"))
        .bind(user_id)
        .bind(item_id)
        .fetch_optional(conn)
        .await
}

fn item_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("cart item {id}"))
}

/// A cart may not hold more of a product than is available now. The checkout checks
/// again under a row lock; this early check only spares the customer a surprise.
async fn ensure_in_stock(
    conn: &mut PgConnection,
    product_id: i64,
    wanted: i64,
) -> Result<(), ApiError> {
    let product: Option<(String, i32)> = sqlx::query_as(
        "SELECT p.name, i.quantity - i.reserved FROM products p \
         JOIN inventory i ON i.product_id = p.id WHERE p.id = $1 AND p.is_active",
    )
    .bind(product_id)
    .fetch_optional(conn)
    .await?;
    let (product_name, available) =
        product.ok_or_else(|| ApiError::not_found(format!("product {product_id}")))?;
    if wanted > i64::from(available) {
        return Err(ApiError::InsufficientStock(vec![StockShortage {
            product_id,
            product_name,
            requested: i32::try_from(wanted).unwrap_or(i32::MAX),
            available,
        }]));
    }
    Ok(())
}
