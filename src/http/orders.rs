//! Checkout, the customer's orders, and the admin's order desk.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminUser, AuthUser, Json, Page, Paged, Path, Query};
use super::openapi::{BadGateway, Conflict, PaymentRequired};
use crate::checkout::CheckoutRequest;
use crate::orders::store::{self, Scope};
use crate::orders::{OrderStatus, OrderView, lifecycle};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkout))
        .routes(routes!(my_orders))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(change_status))
}

/// Buy what is in the cart: the blocking, eleven-step checkout.
///
/// Takes about three seconds by design (a 1 s payment gateway and a 2 s mail server run
/// inside the database transaction). All or nothing: on any failure no order exists,
/// stock is untouched and the cart is kept.
#[utoipa::path(
    post, path = "/api/orders/checkout", tag = "orders",
    security(("bearer" = [])),
    request_body = CheckoutRequest,
    responses(
        (status = 201, description = "Order confirmed", body = OrderView),
        (status = 402, response = PaymentRequired),
        (status = 409, response = Conflict),
        (status = 502, response = BadGateway),
    )
)]
async fn checkout(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<CheckoutRequest>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let order = state.checkout.place_order(user.id, request).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// The caller's orders, newest first.
#[utoipa::path(
    get, path = "/api/orders/my-orders", tag = "orders",
    security(("bearer" = [])),
    params(Page),
    responses((status = 200, description = "Orders, newest first", body = Vec<OrderView>))
)]
async fn my_orders(
    State(state): State<AppState>,
    user: AuthUser,
    Query(page): Query<Page>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let mut conn = state.db.acquire().await?;
    let (orders, _total) =
        store::list(&mut conn, Scope::Customer(user.id), None, limit, offset).await?;
    Ok(Json(orders))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
}

/// Every customer's orders, newest first (admin).
#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    security(("bearer" = ["admin"])),
    params(Page, OrderFilter),
    responses((status = 200, description = "A page of orders", body = Paged<OrderView>))
)]
async fn list_orders(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<Page>,
    Query(filter): Query<OrderFilter>,
) -> Result<Json<Paged<OrderView>>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let mut conn = state.db.acquire().await?;
    let (items, total) =
        store::list(&mut conn, Scope::Everyone, filter.status, limit, offset).await?;
    Ok(Json(Paged {
        items,
        total,
        limit,
        offset,
    }))
}

/// One order, for its owner or an admin.
///
/// Someone else's order is a 404, never a 403: ids reveal nothing.
#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses((status = 200, description = "The order", body = OrderView))
)]
async fn get_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<OrderView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::fetch(&mut conn, id)
        .await?
        .filter(|order| order.user_id == user.id || user.is_admin())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `shipped`, `delivered` or `cancelled`.
    pub status: OrderStatus,
}

/// Move an order along its lifecycle (admin).
///
/// confirmed → shipped → delivered; confirmed → cancelled puts the stock back and marks
/// the payment refunded. Anything else is a 409.
#[utoipa::path(
    patch, path = "/api/orders/{id}/status", tag = "orders",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "Order id")),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The order in its new status", body = OrderView),
        (status = 409, response = Conflict),
    )
)]
async fn change_status(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    Json(change): Json<StatusChange>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(
        lifecycle::change_status(&state.db, id, change.status).await?,
    ))
}
