//! The shopping cart: one per user, created on first use.

use axum::extract::State;
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{AuthUser, Json, Path};
use super::openapi::{Conflict, NotFound};
use super::state::AppState;
use crate::cart::{Cart, CartLine, store};
use crate::db;
use crate::domain::{LineItem, ORDER_TOTAL_MAX, Quantity, StockShortage, whole};
use crate::inventory;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart, clear_cart))
        .routes(routes!(add_item))
        .routes(routes!(update_item, remove_item))
}

/// A line of the cart, at the product's price as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartItemView {
    /// The cart item's id, for changing or removing it.
    pub id: i64,
    #[serde(flatten)]
    pub line: LineItem,
}

impl From<&CartLine> for CartItemView {
    fn from(line: &CartLine) -> Self {
        Self {
            id: line.id,
            line: line.item(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartView {
    /// In the order they were first added.
    pub items: Vec<CartItemView>,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
}

impl From<&Cart> for CartView {
    fn from(cart: &Cart) -> Self {
        let mut items: Vec<CartItemView> = cart.lines.iter().map(CartItemView::from).collect();
        items.sort_by_key(|item| item.id);
        Self {
            items,
            total: cart.total(),
        }
    }
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
    let cart = store::find(&mut conn, user.id).await?;
    Ok(Json(CartView::from(&cart)))
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
    let product_id = add.product_id;
    let mut tx = state.db.begin().await?;
    let cart_id = store::open(&mut tx, user.id).await?;
    // Both checks and the addition in one statement (four round trips in all, not eight).
    let found = store::add_if_it_fits(
        &mut tx,
        cart_id,
        product_id,
        add.quantity.get(),
        ORDER_TOTAL_MAX,
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("product {product_id}")))?;
    let (Some(id), Some(quantity)) = (found.item_id, found.quantity) else {
        return Err(refusal(product_id, found));
    };
    db::commit(tx).await?;
    let line = CartLine {
        id,
        product_id,
        product_name: found.product_name,
        unit_price: found.unit_price,
        quantity,
        is_active: true,
    };
    Ok((StatusCode::CREATED, Json(CartItemView::from(&line))))
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
    // Waits for a checkout of this cart: the item may be ordered (and gone) after it.
    store::lock_row(&mut tx, user.id).await?;
    let mut line = store::line(&mut tx, user.id, item_id)
        .await?
        .ok_or_else(|| item_not_found(item_id))?;
    let quantity = update.quantity.get();
    ensure_in_stock(&mut tx, line.product_id, i64::from(quantity)).await?;
    store::set_quantity(&mut tx, item_id, quantity).await?;
    ensure_total_fits(&mut tx, user.id).await?;
    db::commit(tx).await?;
    line.quantity = quantity;
    Ok(Json(CartItemView::from(&line)))
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
    let mut tx = state.db.begin().await?;
    store::lock_row(&mut tx, user.id).await?;
    if !store::remove(&mut tx, user.id, item_id).await? {
        // Another user's item looks exactly like a missing one.
        return Err(item_not_found(item_id));
    }
    db::commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Empty the cart.
#[utoipa::path(
    delete, path = "/api/cart", tag = "cart",
    security(("bearer" = [])),
    responses((status = 204, description = "Emptied"))
)]
async fn clear_cart(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    store::lock_row(&mut tx, user.id).await?;
    store::clear(&mut tx, user.id).await?;
    db::commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Also what a change to an item that a checkout ordered gets: it waited for that
/// checkout, which took the item out of the cart.
fn item_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("cart item {id}"))
}

/// A cart may not cost more than an order can hold (the change is rolled back).
async fn ensure_total_fits(conn: &mut PgConnection, user_id: i64) -> Result<(), ApiError> {
    let total = store::total(conn, user_id).await?;
    if total > ORDER_TOTAL_MAX {
        return Err(too_large(total));
    }
    Ok(())
}

fn too_large(mut total: Decimal) -> ApiError {
    total.rescale(2);
    ApiError::validation(
        "quantity",
        format!(
            "the cart's total would be {total}, more than an order can hold ({ORDER_TOTAL_MAX})"
        ),
    )
}

/// Why [`store::add_if_it_fits`] added nothing: the stock first, then the total, as
/// [`ensure_in_stock`] and [`ensure_total_fits`] would say it.
fn refusal(product_id: i64, found: store::Addition) -> ApiError {
    if found.wanted > i64::from(found.available) {
        return short_of_stock(
            product_id,
            found.product_name,
            found.wanted,
            found.available,
        );
    }
    too_large(found.total)
}

/// The 409 for a cart that would hold more of a product than is available.
fn short_of_stock(product_id: i64, product_name: String, wanted: i64, available: i32) -> ApiError {
    ApiError::InsufficientStock(vec![StockShortage {
        product_id,
        product_name,
        requested: i32::try_from(wanted).unwrap_or(i32::MAX),
        available,
    }])
}

/// A cart may not hold more of a product than is available now. The checkout checks
/// again under a row lock; this early check only spares the customer a surprise.
async fn ensure_in_stock(
    conn: &mut PgConnection,
    product_id: i64,
    wanted: i64,
) -> Result<(), ApiError> {
    let (product_name, available) = inventory::available(conn, product_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("product {product_id}")))?;
    if wanted > i64::from(available) {
        return Err(short_of_stock(product_id, product_name, wanted, available));
    }
    Ok(())
}
