//! The catalog: categories, products with their stock, and admin upkeep (edit, delete,
//! restock).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, OnConstraint};
use super::extract::{AdminUser, Json, Page, Paged, Path, Query};
use super::openapi::Conflict;
use crate::domain::{
    Amount, CategoryName, Description, Money, ProductName, Quantity, SearchText, StockLevel,
    optional_whole, whole,
};
use crate::inventory;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
        .routes(routes!(restock_product))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CategoryView {
    pub id: i64,
    #[schema(example = "Kitchen")]
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    pub name: CategoryName,
    pub description: Option<Description>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProductView {
    pub id: i64,
    #[schema(example = "Espresso machine")]
    pub name: String,
    pub description: String,
    #[schema(value_type = String, example = "249.00")]
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub category_id: i64,
    #[schema(example = "Kitchen")]
    pub category_name: String,
    /// Units available to buy now (on hand minus those held by running checkouts).
    #[schema(example = 12)]
    pub stock: i32,
    /// Mean review rating, 1 to 5; absent without reviews.
    #[schema(example = 4.5)]
    pub average_rating: Option<f64>,
    pub review_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub name: ProductName,
    pub description: Option<Description>,
    pub price: Money,
    #[serde(deserialize_with = "whole")]
    pub category_id: i64,
    /// Units on hand to start with (default 0).
    #[serde(default)]
    pub initial_stock: StockLevel,
}

/// A partial update: absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdate {
    pub name: Option<ProductName>,
    pub description: Option<Description>,
    pub price: Option<Money>,
    #[serde(default, deserialize_with = "optional_whole")]
    pub category_id: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add to what is on hand.
    pub quantity: Quantity,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductFilter {
    pub category_id: Option<i64>,
    /// Words to look for in the name or description (case-insensitive).
    #[param(value_type = Option<String>, max_length = 200)]
    pub q: Option<SearchText>,
    /// The lowest price, a decimal such as `10.00`.
    #[param(value_type = Option<String>, pattern = r"^(0|[1-9][0-9]{0,7})(\.[0-9]{1,2})?$", example = "10.00")]
    pub min_price: Option<Amount>,
    /// The highest price, a decimal such as `100.00` (not below `min_price`).
    #[param(value_type = Option<String>, pattern = r"^(0|[1-9][0-9]{0,7})(\.[0-9]{1,2})?$", example = "100.00")]
    pub max_price: Option<Amount>,
}

/// The columns of [`ProductView`], shared by the single and the list query.
macro_rules! product_select {
    () => {
        "SELECT p.id, p.name, p.description, p.price, p.category_id, c.name AS category_name, \
                i.quantity - i.reserved AS stock, r.average_rating, \
                COALESCE(r.review_count, 0) AS review_count, p.created_at, p.updated_at \
         FROM products p \
         JOIN categories c ON c.id = p.category_id \
         JOIN inventory i ON i.product_id = p.id \
         LEFT JOIN LATERAL ( \
             SELECT round(avg(rating), 2)::float8 AS average_rating, count(*) AS review_count \
             FROM reviews WHERE product_id = p.id \
         ) r ON TRUE "
    };
}

/// Filters of the list and its count; `$1`–`$4` are category, pattern, min and max price.
macro_rules! product_filter {
    () => {
        "WHERE p.is_active \
           AND ($1::bigint IS NULL OR p.category_id = $1) \
           AND ($2::text IS NULL OR p.name ILIKE $2 OR p.description ILIKE $2) \
           AND ($3::numeric IS NULL OR p.price >= $3) \
           AND ($4::numeric IS NULL OR p.price <= $4) "
    };
}

pub async fn fetch_product(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<ProductView>> {
    sqlx::query_as(concat!(
        product_select!(),
        "WHERE p.id = $1 AND p.is_active"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

fn product_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("product {id}"))
}

/// All categories, by name.
#[utoipa::path(
    get, path = "/api/products/categories", tag = "catalog",
    responses((status = 200, description = "Categories", body = Vec<CategoryView>))
)]
async fn list_categories(
    State(state): State<AppState>,
) -> Result<Json<Vec<CategoryView>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let categories = sqlx::query_as(
        "SELECT id, name, description, created_at FROM categories ORDER BY lower(name)",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(categories))
}

/// Create a category (admin).
#[utoipa::path(
    post, path = "/api/products/categories", tag = "catalog",
    security(("bearer" = ["admin"])),
    request_body = NewCategory,
    responses(
        (status = 201, description = "Created", body = CategoryView),
        (status = 409, response = Conflict),
    )
)]
async fn create_category(
    State(state): State<AppState>,
    _admin: AdminUser,
    Json(new): Json<NewCategory>,
) -> Result<(StatusCode, Json<CategoryView>), ApiError> {
    let mut conn = state.db.acquire().await?;
    let category: CategoryView = sqlx::query_as(
        "INSERT INTO categories (name, description) VALUES ($1, $2) \
         RETURNING id, name, description, created_at",
    )
    .bind(new.name.as_str())
    .bind(new.description.as_ref().map_or("", |d| d.as_str()))
    .fetch_one(&mut *conn)
    .await
    .on_constraint("categories_name_key", || {
        ApiError::AlreadyExists(format!("category {:?} already exists", new.name.as_str()))
    })?;
    Ok((StatusCode::CREATED, Json(category)))
}

/// Browse the catalog, a page at a time, with optional filters.
#[utoipa::path(
    get, path = "/api/products", tag = "catalog",
    params(Page, ProductFilter),
    responses((status = 200, description = "A page of products", body = Paged<ProductView>,
            links(
                ("GetProduct" = (operation_id = "get_product", parameters(("id" = "$response.body#/items/0/id")))),
                ("CreateReview" = (operation_id = "create_review", parameters(("id" = "$response.body#/items/0/id"))))
            )
        ))
)]
async fn list_products(
    State(state): State<AppState>,
    Query(page): Query<Page>,
    Query(query): Query<ProductFilter>,
) -> Result<Json<Paged<ProductView>>, ApiError> {
    let (limit, offset) = page.bounds()?;
    if let (Some(min), Some(max)) = (query.min_price, query.max_price)
        && min > max
    {
        return Err(ApiError::validation(
            "min_price",
            "must not exceed max_price",
        ));
    }
    let pattern = query
        .q
        .as_ref()
        .map(SearchText::as_str)
        .filter(|q| !q.is_empty())
        .map(|q| format!("%{}%", escape_like(q)));

    let mut conn = state.db.acquire().await?;
    let items: Vec<ProductView> = sqlx::query_as(concat!(
        product_select!(),
        product_filter!(),
        "ORDER BY p.id LIMIT $5 OFFSET $6"
    ))
    .bind(query.category_id)
    .bind(&pattern)
    .bind(query.min_price.map(Amount::get))
    .bind(query.max_price.map(Amount::get))
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM products p ",
        product_filter!()
    ))
    .bind(query.category_id)
    .bind(&pattern)
    .bind(query.min_price.map(Amount::get))
    .bind(query.max_price.map(Amount::get))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Json(Paged {
        items,
        total,
        limit,
        offset,
    }))
}

/// `%` and `_` in a search are literal characters, not wildcards.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Create a product with its initial stock (admin).
#[utoipa::path(
    post, path = "/api/products", tag = "catalog",
    security(("bearer" = ["admin"])),
    request_body = NewProduct,
    responses((status = 201, description = "Created, with its stock", body = ProductView,
            links(
                ("GetProduct" = (operation_id = "get_product", parameters(("id" = "$response.body#/id")))),
                ("UpdateProduct" = (operation_id = "update_product", parameters(("id" = "$response.body#/id")))),
                ("RestockProduct" = (operation_id = "restock_product", parameters(("id" = "$response.body#/id")))),
                ("ListReviews" = (operation_id = "list_reviews", parameters(("id" = "$response.body#/id")))),
                ("CreateReview" = (operation_id = "create_review", parameters(("id" = "$response.body#/id")))),
                ("DeleteProduct" = (operation_id = "delete_product", parameters(("id" = "$response.body#/id"))))
            )
        ))
)]
async fn create_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    Json(new): Json<NewProduct>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let mut tx = state.db.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO products (name, description, price, category_id) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(new.name.as_str())
    .bind(new.description.as_ref().map_or("", |d| d.as_str()))
    .bind(new.price.amount())
    .bind(new.category_id)
    .fetch_one(&mut *tx)
    .await
    .on_constraint("products_category_id_fkey", || {
        unknown_category(new.category_id)
    })?;
    sqlx::query("INSERT INTO inventory (product_id, quantity) VALUES ($1, $2)")
        .bind(id)
        .bind(new.initial_stock.get())
        .execute(&mut *tx)
        .await?;
    let product = fetch_product(&mut tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("product {id} vanished right after insert"))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(product)))
}

fn unknown_category(id: i64) -> ApiError {
    ApiError::validation("category_id", format!("there is no category {id}"))
}

/// One product with its available stock and rating.
#[utoipa::path(
    get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = i64, Path, description = "Product id")),
    responses((status = 200, description = "The product", body = ProductView))
)]
async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ProductView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    fetch_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| product_not_found(id))
}

/// Change a product's name, description, price or category (admin).
///
/// Orders already placed keep the name and price they were placed with.
#[utoipa::path(
    patch, path = "/api/products/{id}", tag = "catalog",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Product id")),
    request_body = ProductUpdate,
    responses((status = 200, description = "Updated", body = ProductView))
)]
async fn update_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    Json(update): Json<ProductUpdate>,
) -> Result<Json<ProductView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let updated = sqlx::query(
        "UPDATE products SET name = COALESCE($2, name), description = COALESCE($3, description), \
                price = COALESCE($4, price), category_id = COALESCE($5, category_id), \
                updated_at = now() \
         WHERE id = $1 AND is_active",
    )
    .bind(id)
    .bind(update.name.as_ref().map(|n| n.as_str()))
    .bind(update.description.as_ref().map(|d| d.as_str()))
    .bind(update.price.map(Money::amount))
    .bind(update.category_id)
    .execute(&mut *conn)
    .await
    .on_constraint("products_category_id_fkey", || {
        unknown_category(update.category_id.unwrap_or_default())
    })?;
    if updated.rows_affected() == 0 {
        return Err(product_not_found(id));
    }
    fetch_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| product_not_found(id))
}

/// Take a product off the catalog (admin).
///
/// The product disappears from listings and carts; orders that contain it keep it.
#[utoipa::path(
    delete, path = "/api/products/{id}", tag = "catalog",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Product id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    let deleted = sqlx::query(
        "UPDATE products SET is_active = FALSE, updated_at = now() WHERE id = $1 AND is_active",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(product_not_found(id));
    }
    sqlx::query("DELETE FROM cart_items WHERE product_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add units to a product's stock (admin).
#[utoipa::path(
    post, path = "/api/products/{id}/restock", tag = "catalog",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Product id")),
    request_body = Restock,
    responses((status = 200, description = "The product with its new stock", body = ProductView))
)]
async fn restock_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    Json(restock): Json<Restock>,
) -> Result<Json<ProductView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    if !inventory::restock(&mut conn, id, restock.quantity.get()).await? {
        return Err(product_not_found(id));
    }
    fetch_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| product_not_found(id))
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }
}
