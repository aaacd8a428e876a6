//! Checkout, the customer's orders, and the admin's order desk.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{AdminUser, AuthUser, Json, Path, Query};
use crate::checkout::CheckoutRequest;
use crate::orders::{self, OrderStatus, OrderView, Scope};
use crate::startup::AppState;

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
        (status = 400, description = "The cart is empty", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Payment declined", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock; `products` lists what is short", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The confirmation e-mail failed; the order was rolled back", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No database connection became free in time", body = Problem, content_type = "application/problem+json"),
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
    responses(
        (status = 200, description = "Orders, newest first", body = Vec<OrderView>),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn my_orders(
    State(state): State<AppState>,
    user: AuthUser,
    Query(page): Query<Page>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let mut conn = state.db.acquire().await?;
    let (orders, _total) =
        orders::list(&mut conn, Scope::Customer(user.id), None, limit, offset).await?;
    Ok(Json(orders))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

impl Page {
    fn bounds(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(50);
        let offset = self.offset.unwrap_or(0);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::validation("limit", "must be from 1 to 100"));
        }
        if offset < 0 {
            return Err(ApiError::validation("offset", "must not be negative"));
        }
        Ok((limit, offset))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Every customer's orders, newest first (admin).
#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    security(("bearer" = [])),
    params(OrderFilter),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_orders(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(filter): Query<OrderFilter>,
) -> Result<Json<OrderPage>, ApiError> {
    let (limit, offset) = Page {
        limit: filter.limit,
        offset: filter.offset,
    }
    .bounds()?;
    let mut conn = state.db.acquire().await?;
    let (items, total) =
        orders::list(&mut conn, Scope::Everyone, filter.status, limit, offset).await?;
    Ok(Json(OrderPage {
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
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<OrderView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    orders::fetch(&mut conn, id)
        .await?
        .filter(|order| order.user_id == user.id || user.is_admin())
        .map(Json)
        .ok_or_else(|| order_not_found(id))
}

fn order_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("order {id}"))
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
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The order in its new status", body = OrderView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Transition not allowed from the current status", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown status", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change_status(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    Json(change): Json<StatusChange>,
) -> Result<Json<OrderView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current
        .and_then(|status| OrderStatus::parse(&status))
        .ok_or_else(|| order_not_found(id))?;
    if !current.can_become(change.status) {
        return Err(ApiError::InvalidTransition(format!(
            "order {id} is {} and cannot become {}",
            current.as_str(),
            change.status.as_str()
        )));
    }
    sqlx::query("UPDATE orders SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(change.status.as_str())
        .execute(&mut *tx)
        .await?;
    if change.status == OrderStatus::Cancelled {
        // Same lock order as the checkout (product id), so the two cannot deadlock.
        sqlx::query(
            "SELECT 1 FROM inventory WHERE product_id IN \
               (SELECT product_id FROM order_items WHERE order_id = $1) \
             ORDER BY product_id FOR UPDATE",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE inventory SET quantity = inventory.quantity + oi.quantity, updated_at = now() \
             FROM order_items oi \
             WHERE oi.order_id = $1 AND inventory.product_id = oi.product_id",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE payments SET status = 'refunded' WHERE order_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let order = orders::fetch(&mut tx, id)
        .await?
        .ok_or_else(|| order_not_found(id))?;
    tx.commit().await?;
    tracing::info!(
        order.id = id,
        from = current.as_str(),
        to = change.status.as_str(),
        "order status changed"
    );
    Ok(Json(order))
}
