//! Operational endpoints: liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::Json;
use super::openapi::ServiceUnavailable;
use super::state::AppState;
use crate::telemetry::metrics::sample_gauges;
use crate::telemetry::openmetrics;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .route("/metrics", axum::routing::get(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

/// Liveness: the process answers. Does not touch the database.
#[utoipa::path(
    get, path = "/health", tag = "ops",
    responses((status = 200, description = "Alive", body = HealthView))
)]
async fn health() -> Json<HealthView> {
    Json(HealthView {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Readiness: the database answers. 503 while it does not, and while the service
/// shuts down.
#[utoipa::path(
    get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = HealthView),
        (status = 503, response = ServiceUnavailable),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<HealthView>, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::ServiceUnavailable(
            "the service is shutting down".to_string(),
        ));
    }
    if state.db.ping().await {
        Ok(Json(HealthView {
            status: "ready",
            version: env!("CARGO_PKG_VERSION"),
        }))
    } else {
        Err(ApiError::ServiceUnavailable(
            "the database is unreachable".to_string(),
        ))
    }
}

/// The metrics, as OpenMetrics with exemplars to whoever asks for it (Prometheus
/// does), else as classic Prometheus text (curl, promtool, people).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let exposition = state
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::not_found("metrics (switched off with METRICS_ENABLED=false)"))?;
    sample_gauges(state.db.pool(), state.db.max_connections());
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(openmetrics::is_accepted);
    let (content_type, body) = if wants_openmetrics {
        (openmetrics::CONTENT_TYPE, exposition.openmetrics())
    } else {
        (openmetrics::CLASSIC_CONTENT_TYPE, exposition.classic())
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::VARY, "accept"),
        ],
        body,
    )
        .into_response())
}
