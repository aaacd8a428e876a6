//! The HTTP API: one module per resource, each exposing `router()`, assembled here with
//! the state they share, the OpenAPI document, Swagger UI and the cross-cutting layers.

pub mod admin;
pub mod auth;
pub mod cart;
pub mod error;
pub mod extract;
pub mod lab;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod products;
pub mod reviews;
mod state;
pub mod storefront;
pub mod tool_links;

use std::any::Any;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use self::error::ApiError;
pub use self::state::{AppState, Services};
use crate::telemetry;

pub fn router(state: AppState, body_limit_bytes: usize) -> Router {
    let (api, openapi) = api();

    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One `layer` call for the whole stack, outermost first: each call boxes every
        // route once more, and a request cloned each box and the boxes inside it
        // (22 allocations per request for four layers, heaptrack).
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(
                    telemetry::http::RequestInstruments::new(),
                    telemetry::http::instrument_request,
                ))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    refuse_while_draining,
                ))
                // gzip for a client that asks (the page's modules and styles, JSON,
                // /metrics for Prometheus); tower-http leaves small bodies and images be.
                .layer(CompressionLayer::new())
                // A bug must still answer with a problem (and be logged with its trace
                // id), not drop the connection.
                .layer(CatchPanicLayer::custom(panic_to_problem))
                .layer(DefaultBodyLimit::max(body_limit_bytes)),
        )
        .with_state(state)
}

/// Every route of every resource, and the OpenAPI document of those that have one (the
/// API; not the page, its assets and `/metrics`).
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (api, mut openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(auth::router())
        .merge(products::router())
        .merge(reviews::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(notifications::router())
        .merge(admin::router())
        .merge(lab::router())
        .merge(ops::router())
        .merge(storefront::router())
        .split_for_parts();
    openapi::add_common_responses(&mut openapi);
    (api, openapi)
}

/// While the service drains (after SIGTERM), new requests get a 503 that says so, with
/// `Connection: close`: the load balancer sends them elsewhere. `/metrics` and `/health`
/// still answer, so that what the drain rolls back can be scraped.
async fn refuse_while_draining(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let exempt = matches!(request.uri().path(), "/metrics" | "/health" | "/ready");
    if !state.draining.is_cancelled() || exempt {
        return next.run(request).await;
    }
    let mut response = ApiError::ServiceUnavailable(
        "the service is shutting down; retry shortly (another replica will answer)".to_string(),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
