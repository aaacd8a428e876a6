//! The catalog: categories, products with their stock, and admin upkeep (edit, delete,
//! restock).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, OnConstraint};
use super::extract::{AdminUser, Json, Page, Paged, Path, Query};
use super::openapi::Conflict;
use super::state::AppState;
use crate::catalog::store::{self, ProductChanges};
use crate::catalog::{CategoryView, ProductQuery, ProductView};
use crate::db;
use crate::domain::{
    Amount, CategoryName, Description, Money, ProductName, Quantity, SearchText, StockLevel,
    optional_whole, whole,
};
use crate::{cart, inventory};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
        .routes(routes!(restock_product))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    pub name: CategoryName,
    pub description: Option<Description>,
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
    Ok(Json(store::categories(&mut conn).await?))
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
    let description = new.description.as_ref().map_or("", |d| d.as_str());
    let category = store::insert_category(&mut conn, new.name.as_str(), description)
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
    let selection = ProductQuery {
        category_id: query.category_id,
        search: query.q.as_ref().map(SearchText::as_str),
        min_price: query.min_price.map(Amount::get),
        max_price: query.max_price.map(Amount::get),
    };
    let mut conn = state.db.acquire().await?;
    let (items, total) = store::products(&mut conn, &selection, limit, offset).await?;
    Ok(Json(Paged {
        items,
        total,
        limit,
        offset,
    }))
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
    let description = new.description.as_ref().map_or("", |d| d.as_str());
    let id = store::insert_product(
        &mut tx,
        new.name.as_str(),
        description,
        new.price.amount(),
        new.category_id,
    )
    .await
    .on_constraint("products_category_id_fkey", || {
        unknown_category(new.category_id)
    })?;
    inventory::open(&mut tx, id, new.initial_stock.get()).await?;
    let product = store::product(&mut tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("product {id} vanished right after insert"))?;
    db::commit(tx).await?;
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
    store::product(&mut conn, id)
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
    let changes = ProductChanges {
        name: update.name.as_ref().map(|n| n.as_str()),
        description: update.description.as_ref().map(|d| d.as_str()),
        price: update.price.map(Money::amount),
        category_id: update.category_id,
    };
    let updated = store::update_product(&mut conn, id, &changes)
        .await
        .on_constraint("products_category_id_fkey", || {
            unknown_category(update.category_id.unwrap_or_default())
        })?;
    if !updated {
        return Err(product_not_found(id));
    }
    store::product(&mut conn, id)
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
    if !store::deactivate(&mut tx, id).await? {
        return Err(product_not_found(id));
    }
    cart::store::remove_product(&mut tx, id).await?;
    db::commit(tx).await?;
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
    store::product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| product_not_found(id))
}
