//! The HTTP API: one module per resource, each exposing `router()`, assembled here with
//! the OpenAPI document, Swagger UI and the cross-cutting layers.

pub mod admin;
pub mod auth;
pub mod cart;
pub mod error;
pub mod extract;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod products;
pub mod reviews;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use self::error::ApiError;
use crate::startup::AppState;
use crate::telemetry;

pub fn router(state: AppState, body_limit_bytes: usize) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(auth::router())
        .merge(products::router())
        .merge(reviews::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(notifications::router())
        .merge(admin::router())
        .merge(ops::router())
        .split_for_parts();

    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(middleware::from_fn(telemetry::http::instrument_request))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
