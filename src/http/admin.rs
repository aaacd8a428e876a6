//! Live fault injection for teaching: make the gateway slow or flaky, the mail server
//! slow or down — without a restart.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, FieldError};
use super::extract::{AdminUser, Json};
use crate::checkout::faults::{FaultsUpdate, FaultsView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_faults, update_faults))
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
