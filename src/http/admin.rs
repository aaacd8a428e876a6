//! Live fault injection for teaching: make the gateway slow or flaky, the mail server
//! slow or down — without a restart.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, FieldError};
use super::extract::{AdminUser, Json};
use crate::checkout::faults::{FaultsUpdate, FaultsView};
use crate::reconciliation::{self, Reconciliation};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_faults, update_faults))
        .routes(routes!(reconciliation))
}

/// Every approved charge of the payment gateway against the orders (admin).
///
/// Each approved charge pays for an order, was refunded, or has no order: an orphaned
/// payment (the money the all-or-nothing checkout takes for orders it then loses).
/// Also exported as `payments_without_order`.
#[utoipa::path(
    get, path = "/api/admin/reconciliation", tag = "admin",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The ledger against the orders", body = Reconciliation))
)]
async fn reconciliation(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Reconciliation>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let reconciliation = reconciliation::reconcile(&mut conn).await?;
    reconciliation::export_gauges(&reconciliation);
    Ok(Json(reconciliation))
}

/// The fault settings in force now (admin).
#[utoipa::path(
    get, path = "/api/admin/faults", tag = "admin",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Current settings", body = FaultsView))
)]
async fn get_faults(State(state): State<AppState>, _admin: AdminUser) -> Json<FaultsView> {
    Json(state.faults.current().into())
}

/// Change some fault settings (admin); fields left out keep their value.
///
/// Takes effect with the next checkout. Each value is also exported as a gauge
/// (`fault_*`), so dashboards show when a fault was switched on.
#[utoipa::path(
    put, path = "/api/admin/faults", tag = "admin",
    security(("bearer" = ["admin"])),
    request_body = FaultsUpdate,
    responses((status = 200, description = "The settings now in force", body = FaultsView))
)]
async fn update_faults(
    State(state): State<AppState>,
    _admin: AdminUser,
    Json(update): Json<FaultsUpdate>,
) -> Result<Json<FaultsView>, ApiError> {
    state
        .faults
        .update(&update)
        .map(|settings| Json(settings.into()))
        .map_err(|problems| {
            ApiError::Validation(
                problems
                    .into_iter()
                    .map(|problem| FieldError {
                        field: problem.field.to_string(),
                        message: problem.message,
                    })
                    .collect(),
            )
        })
}
