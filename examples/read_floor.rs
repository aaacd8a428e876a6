//! The floor under `GET /api/products/{id}`: the same SQL and the same JSON as the
//! service (`catalog::store::product`, `ProductView`), served by a bare axum + sqlx
//! handler and nothing else — no telemetry, no problem details, no middleware. The
//! benchmark (`bench/run.py`, measure 1) runs it beside the service and reports the
//! service's rate as a share of this one: what the service's own parts cost. It uses
//! the service's allocator, so that the ratio is not about the allocator.
//!
//! `DATABASE_URL=… BIND_ADDR=127.0.0.1:8090 cargo run --release --example read_floor`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use ecommerce_monolith::catalog::ProductView;
use ecommerce_monolith::catalog::store;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The service's allocator (the system one, or mimalloc with `--features mimalloc`),
/// so that the ratio measures the service's own parts, not the choice of allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn product(
    State(pool): State<PgPool>,
    Path(id): Path<i64>,
) -> Result<Json<ProductView>, StatusCode> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    match store::product(&mut conn, id).await {
        Ok(Some(product)) => Ok(Json(product)),
        Ok(None) => Err(StatusCode::NOT_FOUND),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_string());
    let max_connections = std::env::var("DB_MAX_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    // No round trip to test a connection before use: under load the service's pool
    // makes none either (it tests only a connection that may be dead, see `db`).
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .connect(&url)
        .await?;
    let app = axum::Router::new()
        .route("/api/products/{id}", get(product))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
