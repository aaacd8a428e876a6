//! Live fault injection for teaching: make the gateway slow or flaky, the mail server
//! slow, down or hung — and the rungs of the ladder of cures that answer them — without
//! a restart.

use std::collections::BTreeMap;

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{AdminUser, Json, LabKeeper};
use crate::checkout::workers;
use crate::domain::{
    CheckoutMode, FaultsUpdate, FaultsView, JobKind, MapOnly, ResilienceSettings, ResilienceUpdate,
};
use crate::reconciliation::{self, Reconciliation};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_faults, update_faults))
        .routes(routes!(get_checkout_mode, set_checkout_mode))
        .routes(routes!(get_resilience, update_resilience))
        .routes(routes!(reconciliation))
        .routes(routes!(replay_dead_letters))
}

/// Which dead letters to replay.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only jobs of this kind; absent (`{}`): every dead letter.
    pub kind: Option<JobKind>,
}

/// What was put back in the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    /// Jobs replayed, by kind.
    pub replayed: BTreeMap<String, i64>,
    pub total: i64,
}

/// Put dead-lettered outbox jobs back in the queue (admin), e.g. the e-mails that
/// failed through a long mail outage, once it is over.
///
/// Their attempts start again from zero; each is due at once. Logged, and counted in
/// `outbox_jobs_replayed_total{kind}`.
#[utoipa::path(
    post, path = "/api/admin/outbox/replay", tag = "admin",
    security(("bearer" = ["admin"])),
    request_body = ReplayRequest,
    responses((status = 200, description = "What was replayed", body = ReplayView))
)]
async fn replay_dead_letters(
    State(state): State<AppState>,
    _admin: AdminUser,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<ReplayView>, ApiError> {
    let replayed = workers::replay_dead_letters(&state.db, request.kind).await?;
    Ok(Json(ReplayView {
        total: replayed.iter().map(|(_, count)| count).sum(),
        replayed: replayed
            .into_iter()
            .map(|(kind, count)| (kind.as_str().to_string(), count))
            .collect(),
    }))
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
    Json(state.live.faults().into())
}

/// Change some fault settings (admin — or any signed-in user with the classroom switch
/// `STOREFRONT_OPEN_LAB`); fields left out keep their value.
///
/// Takes effect with the next checkout, on every replica within a second. Each value is
/// also exported as a gauge (`fault_*`), so dashboards show when a fault was switched on.
#[utoipa::path(
    put, path = "/api/admin/faults", tag = "admin",
    security(("bearer" = ["admin"])),
    request_body = FaultsUpdate,
    responses((status = 200, description = "The settings now in force", body = FaultsView))
)]
async fn update_faults(
    State(state): State<AppState>,
    _keeper: LabKeeper,
    Json(update): Json<FaultsUpdate>,
) -> Result<Json<FaultsView>, ApiError> {
    let settings = state.live.update_faults(&update).await?;
    Ok(Json(settings.faults.into()))
}

/// The checkout mode.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutModeView {
    /// `blocking`: eleven steps in one transaction (201 after ~3 s); `async`: one short
    /// transaction, 202 at once, workers do the rest.
    pub mode: CheckoutMode,
}

/// The checkout mode in force (admin).
#[utoipa::path(
    get, path = "/api/admin/checkout-mode", tag = "admin",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The mode in force", body = CheckoutModeView))
)]
async fn get_checkout_mode(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Json<CheckoutModeView> {
    Json(CheckoutModeView {
        mode: state.live.checkout_mode(),
    })
}

/// Switch the checkout mode (admin — or any signed-in user with `STOREFRONT_OPEN_LAB`),
/// on every replica within a second.
///
/// Checkouts already running finish in the mode they started in; orders accepted
/// asynchronously are still charged and confirmed after a switch back to blocking. The
/// gauge `checkout_mode{mode}` marks the switch on every chart.
#[utoipa::path(
    put, path = "/api/admin/checkout-mode", tag = "admin",
    security(("bearer" = ["admin"])),
    request_body = CheckoutModeView,
    responses((status = 200, description = "The mode now in force", body = CheckoutModeView))
)]
async fn set_checkout_mode(
    State(state): State<AppState>,
    _keeper: LabKeeper,
    Json(change): Json<CheckoutModeView>,
) -> Result<Json<CheckoutModeView>, ApiError> {
    let settings = state.live.set_checkout_mode(change.mode).await?;
    Ok(Json(CheckoutModeView {
        mode: settings.checkout_mode,
    }))
}

/// What the clients of the payment gateway and the mail server do about a dependency
/// that is slow, hangs, flaps or is down (admin): the ladder of cures' rungs in force.
/// All off by default.
#[utoipa::path(
    get, path = "/api/admin/resilience", tag = "admin",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The rungs in force", body = ResilienceSettings))
)]
async fn get_resilience(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Json<ResilienceSettings> {
    Json(state.live.resilience())
}

/// Change some resilience settings (admin — or any signed-in user with
/// `STOREFRONT_OPEN_LAB`); fields left out keep their value.
///
/// On every replica within a second, with the next call: a timeout (`timeout_ms`, 0:
/// off), retries with backoff and a budget, a circuit breaker, and the mail server's
/// fallback; each counted per dependency (`resilience_*`) and marked on the charts.
#[utoipa::path(
    put, path = "/api/admin/resilience", tag = "admin",
    security(("bearer" = ["admin"])),
    request_body = ResilienceUpdate,
    responses((status = 200, description = "The rungs now in force", body = ResilienceSettings))
)]
async fn update_resilience(
    State(state): State<AppState>,
    _keeper: LabKeeper,
    Json(MapOnly(update)): Json<MapOnly<ResilienceUpdate>>,
) -> Result<Json<ResilienceSettings>, ApiError> {
    let settings = state.live.update_resilience(&update).await?;
    Ok(Json(settings.resilience))
}
