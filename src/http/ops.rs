//! Operational endpoints: liveness, readiness, metrics and a small landing page.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::Json;
use super::openapi::ServiceUnavailable;
use crate::telemetry::metrics::sample_gauges;
use crate::telemetry::openmetrics;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .route("/metrics", axum::routing::get(metrics))
        .route("/", axum::routing::get(index))
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

/// Readiness: the database answers. 503 while it does not.
#[utoipa::path(
    get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = HealthView),
        (status = 503, response = ServiceUnavailable),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<HealthView>, ApiError> {
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

/// Where to look: the API docs and the observability tools of the compose stack.
async fn index() -> impl IntoResponse {
    (StatusCode::OK, Html(INDEX_HTML))
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>ecommerce-monolith</title>
<style>body{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;line-height:1.5;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2rem}</style></head>
<body>
<h1>ecommerce-monolith</h1>
<p>A deliberately monolithic shop: one database, and a checkout that runs eleven steps,
a 1&nbsp;s payment and a 2&nbsp;s e-mail inside one transaction. Put load on it and watch.</p>
<h2>API</h2>
<ul>
<li><a href="/docs">Swagger UI</a> — try every endpoint</li>
<li><a href="/openapi.json">OpenAPI document</a></li>
<li><a href="/health">/health</a>, <a href="/ready">/ready</a>, <a href="/metrics">/metrics</a></li>
</ul>
<h2>Observability (with <code>docker compose up</code>)</h2>
<ul>
<li><a href="http://localhost:3000/d/checkout-anatomy">Grafana: checkout anatomy</a> — where the seconds go</li>
<li><a href="http://localhost:16686/search?service=ecommerce-monolith">Jaeger</a> — a span per checkout step</li>
<li><a href="http://localhost:9090/alerts">Prometheus alerts</a></li>
<li><a href="http://localhost:8025">MailHog</a> — the confirmation e-mails</li>
</ul>
</body>
</html>
"#;
