//! Checkout, the customer's orders, and the admin's order desk.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{AdminUser, AuthUser, IdempotencyHeader, Json, Page, Paged, Path, Query};
use super::openapi::{BadGateway, Conflict, PaymentRequired};
use super::state::AppState;
use crate::checkout::{CheckoutError, CheckoutRequest, Placement};
use crate::domain::IdempotencyKey;
use crate::idempotency::{self, Claim, Kept, StoredAnswer};
use crate::orders::store::{self, Scope};
use crate::orders::timeline::{self, OrderTimeline};
use crate::orders::{OrderStatus, OrderView, lifecycle};
use crate::telemetry::http::in_request_context;
use crate::telemetry::server_timing::{self, StepTiming};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkout))
        .routes(routes!(my_orders))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(order_timeline))
        .routes(routes!(change_status))
        .routes(routes!(cancel_order))
}

/// Buy what is in the cart, in the checkout mode in force.
///
/// Blocking (the original): about three seconds by design (a 1 s payment gateway and a
/// 2 s mail server run inside the database transaction), then 201 with the confirmed
/// order. All or nothing: on any failure no order exists, stock is untouched and the
/// cart is kept. Asynchronous: 202 in milliseconds with the order `pending` and its
/// `Location`; follow `GET /api/orders/{id}` until it is `confirmed` or
/// `payment_failed`. A client that gives up cancels neither.
///
/// With an `Idempotency-Key`, a repeated request (same user, key and body) gets the
/// first answer again, with `Idempotent-Replayed: true`, and nothing is charged twice:
/// the gateway's charge is bound to the key, so even a checkout that lost its order
/// after the charge (a 503 that says so) is retried with the same key into an order
/// paid by that first charge. The same key with another body is a 422; a repeat while
/// the first request still runs a 409 with `Retry-After` (after a crash, seconds until
/// the dead request's lease lapses). Keys are kept for 24 hours.
///
/// An order holds at most 9999999999.99: a larger cart is a 422 (`total-too-large`).
#[utoipa::path(
    post, path = "/api/orders/checkout", tag = "orders",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "1 to 255 visible ASCII characters, unique per intended checkout (a UUID)"),
    ),
    request_body = CheckoutRequest,
    responses(
        (status = 202, description = "Order accepted (asynchronous mode): `pending` until the workers charge and confirm it",
            body = OrderView,
            headers(
                ("Location" = String, description = "The order, to follow: /api/orders/{id}"),
                ("Server-Timing" = String, description = "The request's own steps (validate_cart, check_inventory, place_order, commit), `name;dur=<ms>` each"),
            ),
            links(
                ("GetAcceptedOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id"))))
            )
        ),
        (status = 201, description = "Order confirmed (blocking mode)", body = OrderView,
            headers(
                ("Server-Timing" = String, description = "Each of the eleven steps that ran and the commit, `name;dur=<ms>` (W3C Server Timing): `process_payment;dur=1001.2, …, send_email;dur=2002.9, commit;dur=1.1`"),
            ),
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))),
                ("ChangeOrderStatus" = (operation_id = "change_status", parameters(("id" = "$response.body#/id"))))
            )
        ),
        (status = 402, response = PaymentRequired),
        (status = 409, response = Conflict),
        (status = 502, response = BadGateway),
    )
)]
async fn checkout(
    State(state): State<AppState>,
    user: AuthUser,
    IdempotencyHeader(key): IdempotencyHeader,
    Json(request): Json<CheckoutRequest>,
) -> Result<Response, ApiError> {
    // Spawned, so that a client that disconnects does not cancel a checkout halfway
    // (after the charge, say); shutdown waits for it until its deadline.
    let work = checkout_once(state.clone(), user.id, key, request);
    state
        .in_flight
        .spawn(in_request_context(work))
        .await
        .map_err(|error| anyhow::anyhow!("the checkout task failed: {error}"))?
}

async fn checkout_once(
    state: AppState,
    user_id: i64,
    key: Option<IdempotencyKey>,
    request: CheckoutRequest,
) -> Result<Response, ApiError> {
    let Some(key) = key else {
        return Ok(place(&state, user_id, request, None).await.0);
    };
    let fingerprint = serde_json::to_string(&request).map_err(anyhow::Error::new)?;
    match idempotency::claim(&state.db, user_id, &key, &fingerprint).await? {
        Claim::Replay(earlier) => Ok(replay(earlier)),
        Claim::Order(order_id) => replay_order(&state, order_id).await,
        Claim::InProgress(lease_left) => Err(ApiError::RequestInProgress(lease_left)),
        Claim::Mismatch => Err(ApiError::IdempotencyKeyReused),
        Claim::First => {
            let placing = place(&state, user_id, request, Some(&key));
            // The key's lease is renewed while the checkout runs, so that a retry can
            // tell a running first request from one that died with its process.
            let (placed, order_id) = tokio::select! {
                placed = placing => placed,
                never = idempotency::keep_alive(&state.db, user_id, &key) => match never {},
            };
            let (response, kept) = keep(placed).await;
            // A 503 took no money for good (shutting down, database away; a charge
            // taken is bound to the key, and the retry gets it back): the client may
            // retry, and the retry runs anew.
            if kept.status == StatusCode::SERVICE_UNAVAILABLE.as_u16() as i16 {
                if let Err(error) = idempotency::release(&state.db, user_id, &key).await {
                    tracing::warn!(%error, "could not free the Idempotency-Key of a checkout");
                }
                return Ok(response);
            }
            // The first committed answer wins: if another run under this key (one that
            // stalled, then went on) answered or placed the order first, this run's
            // answer — an empty cart, typically — gives way to it.
            match idempotency::complete(&state.db, user_id, &key, &kept, order_id).await {
                Ok(Kept::Stored) => Ok(response),
                Ok(Kept::Earlier(earlier)) => Ok(replay(earlier)),
                Ok(Kept::Order(order_id)) => replay_order(&state, order_id).await,
                Err(error) => {
                    tracing::warn!(%error, "could not store the answer of an idempotent checkout");
                    Ok(response)
                }
            }
        }
    }
}

/// The answer of a key whose run committed `order_id` but could not store its answer:
/// the order, as the checkout that placed it would have answered (201 confirmed or
/// later, 202 while it waits for its payment).
async fn replay_order(state: &AppState, order_id: i64) -> Result<Response, ApiError> {
    let order = {
        let mut conn = state.db.acquire().await?;
        store::fetch(&mut conn, order_id).await?
    }
    .ok_or_else(|| ApiError::not_found(format!("order {order_id}")))?;
    let mut response = match order.status {
        OrderStatus::Pending => answer(Ok(Placement::Accepted(order))),
        _ => answer(Ok(Placement::Confirmed(order))),
    };
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

/// Runs the checkout and answers with its result and, in `Server-Timing`, how long each
/// of its steps took (the browser's developer tools draw them); also returns the order
/// it placed, if it did.
async fn place(
    state: &AppState,
    user_id: i64,
    request: CheckoutRequest,
    key: Option<&IdempotencyKey>,
) -> (Response, Option<i64>) {
    let (placed, steps) =
        server_timing::recorded(state.checkout.place_order(user_id, request, key)).await;
    let order_id = match &placed {
        Ok(Placement::Confirmed(order) | Placement::Accepted(order)) => Some(order.id),
        Err(_) => None,
    };
    let mut response = answer(placed);
    if let Ok(value) = HeaderValue::from_str(&server_timing(&steps)) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
    (response, order_id)
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `validate_cart;dur=0.4, check_inventory;dur=1.2, …` (W3C Server Timing), in
/// milliseconds, one entry per step that ran; a rung's entry says what it did
/// (`payment_gateway.attempt;dur=250.3;desc="attempt 1: failed"`).
fn server_timing(steps: &[StepTiming]) -> String {
    steps
        .iter()
        .map(|step| {
            let ms = step.duration.as_secs_f64() * 1000.0;
            match &step.description {
                // A quoted string may hold neither quotes nor backslashes unescaped.
                Some(text) => format!(
                    "{};dur={ms:.1};desc=\"{}\"",
                    step.step,
                    text.replace(['"', '\\'], "'")
                ),
                None => format!("{};dur={ms:.1}", step.step),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// 201 with the confirmed order; 202 with the accepted one and where to follow it.
fn answer(placed: Result<Placement, CheckoutError>) -> Response {
    match placed {
        Ok(Placement::Confirmed(order)) => (StatusCode::CREATED, Json(order)).into_response(),
        Ok(Placement::Accepted(order)) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/orders/{}", order.id))],
            Json(order),
        )
            .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// The response, and a copy of it to keep for replays.
async fn keep(response: Response) -> (Response, StoredAnswer) {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let kept = StoredAnswer {
        status: parts.status.as_u16() as i16,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    (Response::from_parts(parts, Body::from(bytes)), kept)
}

fn replay(earlier: StoredAnswer) -> Response {
    let status = u16::try_from(earlier.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    (
        status,
        [
            (header::CONTENT_TYPE, earlier.content_type),
            (IDEMPOTENT_REPLAYED, "true".to_string()),
        ],
        earlier.body,
    )
        .into_response()
}

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The caller's orders, newest first.
#[utoipa::path(
    get, path = "/api/orders/my-orders", tag = "orders",
    security(("bearer" = [])),
    params(Page),
    responses((status = 200, description = "Orders, newest first", body = Vec<OrderView>,
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/0/id")))),
                ("ChangeOrderStatus" = (operation_id = "change_status", parameters(("id" = "$response.body#/0/id"))))
            )
        ))
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

/// When an order's work happened, for its owner or an admin: placed, charged,
/// confirmed, its e-mail sent (each job's attempts), as seconds after it was placed.
///
/// The asynchronous checkout answers right after `placed`; the rest happens after the
/// answer, in the outbox's workers — the page draws it on the time axis of a blocking
/// checkout's wait. `settled` turns true once no work of the order waits.
#[utoipa::path(
    get, path = "/api/orders/{id}/timeline", tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses((status = 200, description = "The order's timeline", body = OrderTimeline))
)]
async fn order_timeline(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<OrderTimeline>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let order = store::fetch(&mut conn, id)
        .await?
        .filter(|order| order.user_id == user.id || user.is_admin())
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))?;
    Ok(Json(timeline::of(&mut conn, &order).await?))
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
    let order =
        lifecycle::change_status(&state.db, state.gateway.as_ref(), id, change.status).await?;
    Ok(Json(order))
}

/// Cancel one of your orders while nothing has shipped: the stock goes back and the
/// payment is refunded.
///
/// Only a `confirmed` order can be cancelled (409 otherwise); someone else's order is a
/// 404.
#[utoipa::path(
    post, path = "/api/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order, cancelled and refunded", body = OrderView),
        (status = 409, response = Conflict),
    )
)]
async fn cancel_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<OrderView>, ApiError> {
    let owner = {
        let mut conn = state.db.acquire().await?;
        store::owner_of(&mut conn, id).await?
    };
    if owner.is_none_or(|owner| owner != user.id && !user.is_admin()) {
        return Err(ApiError::not_found(format!("order {id}")));
    }
    let order = lifecycle::change_status(
        &state.db,
        state.gateway.as_ref(),
        id,
        OrderStatus::Cancelled,
    )
    .await?;
    Ok(Json(order))
}
