//! The lab, as the service sees it: the experiments shipped in `lab/` (for the
//! storefront's Lab panel) and the phase `lab run` is playing now — announced by the
//! runner (admin), read by anyone (the shop's banner), and exported as `lab_phase`
//! for the dashboards' annotations.
//!
//! The files are embedded like the storefront's assets (read from the source tree in
//! debug builds); only what the panel shows is read here — `ecommerce-lab` owns the
//! schema and checks the rest.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{AdminUser, Json};
use super::state::AppState;
use crate::domain::{CheckoutMode, FaultsView, LabAnnouncement, LabPhase, ResilienceSettings};

#[derive(rust_embed::Embed)]
#[folder = "lab/"]
struct ExperimentFiles;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(lab))
        .routes(routes!(announce, end))
}

/// A shipped experiment, as the Lab panel lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExperimentSummary {
    #[schema(example = "pool-exhaustion")]
    pub name: String,
    #[schema(example = "Pool exhaustion starves the catalog")]
    pub title: String,
    /// The question it answers.
    pub question: String,
    /// The command that runs it.
    #[serde(default)]
    #[schema(example = "ecommerce-monolith lab run pool-exhaustion")]
    pub command: String,
}

/// The phase in progress, with the time it has left.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunningPhase {
    #[serde(flatten)]
    pub phase: LabPhase,
    /// Whole seconds until the phase's announced end (0 once it is due).
    pub seconds_left: u64,
}

/// What the lab is doing, and what it can do.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabView {
    /// The experiment's phase in progress; `null` when none runs.
    pub running: Option<RunningPhase>,
    /// The shipped experiments, by name.
    pub experiments: Vec<ExperimentSummary>,
    /// The live settings in force, for anyone to read (the shop's Lab panel shows them
    /// read-only to whoever may not change them).
    pub settings: LiveSettingsView,
}

/// The checkout mode, the faults and the rungs in force, and who may change them.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveSettingsView {
    pub checkout_mode: CheckoutMode,
    pub faults: FaultsView,
    pub resilience: ResilienceSettings,
    /// True with the classroom switch `STOREFRONT_OPEN_LAB`: any signed-in user may
    /// change them. Otherwise only the admin.
    pub open_to_everyone: bool,
    /// The admin account's e-mail, to say whom to ask; absent when none is configured.
    #[schema(example = "admin@example.com")]
    pub admin_email: Option<String>,
}

/// The lab: the experiment phase running now (for the shop's banner), the shipped
/// experiments, each with its question and the command that runs it, and the live
/// settings in force with who may change them.
#[utoipa::path(
    get, path = "/api/lab", tag = "lab",
    responses((status = 200, description = "The lab now", body = LabView))
)]
async fn lab(State(state): State<AppState>) -> Json<LabView> {
    Json(LabView {
        running: running(state.live.lab_phase()),
        experiments: shipped().to_vec(),
        settings: LiveSettingsView {
            checkout_mode: state.live.checkout_mode(),
            faults: state.live.faults().into(),
            resilience: state.live.resilience(),
            open_to_everyone: state.storefront.open_lab,
            admin_email: state
                .storefront
                .lab_keeper
                .as_ref()
                .map(|email| email.as_str().to_string()),
        },
    })
}

/// Announce the phase of an experiment that begins now (admin; `lab run` does it at
/// every phase): on every replica's `lab_phase{experiment, phase}` gauge and in the shop.
///
/// An announcement ends with `DELETE`, or 30 s after the phase's announced end if
/// nobody says so (a runner that was killed).
#[utoipa::path(
    put, path = "/api/admin/lab", tag = "lab",
    security(("bearer" = ["admin"])),
    request_body = LabAnnouncement,
    responses((status = 200, description = "The phase now running", body = RunningPhase))
)]
async fn announce(
    State(state): State<AppState>,
    _admin: AdminUser,
    Json(announcement): Json<LabAnnouncement>,
) -> Result<Json<RunningPhase>, ApiError> {
    let phase = announcement
        .begun(Utc::now())
        .map_err(|(field, message)| ApiError::validation(field, message))?;
    state.live.announce_lab(Some(phase.clone())).await?;
    let seconds_left = phase.seconds_left(Utc::now());
    Ok(Json(RunningPhase {
        phase,
        seconds_left,
    }))
}

/// The experiment is over (admin): no phase shows any more.
#[utoipa::path(
    delete, path = "/api/admin/lab", tag = "lab",
    security(("bearer" = ["admin"])),
    responses((status = 204, description = "No experiment runs"))
)]
async fn end(State(state): State<AppState>, _admin: AdminUser) -> Result<StatusCode, ApiError> {
    state.live.announce_lab(None).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn running(phase: Option<LabPhase>) -> Option<RunningPhase> {
    phase.map(|phase| RunningPhase {
        seconds_left: phase.seconds_left(Utc::now()),
        phase,
    })
}

/// The shipped experiments' names, titles and questions, read once. A file this cannot
/// read is left out of the list (`ecommerce-lab lab list` says what is wrong with it).
fn shipped() -> &'static [ExperimentSummary] {
    static SHIPPED: OnceLock<Vec<ExperimentSummary>> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let mut experiments: Vec<ExperimentSummary> = ExperimentFiles::iter()
            .filter(|file| file.ends_with(".toml"))
            .filter_map(|file| {
                let text = ExperimentFiles::get(&file)?;
                let text = std::str::from_utf8(&text.data).ok()?;
                match toml::from_str::<ExperimentSummary>(text) {
                    Ok(mut summary) => {
                        summary.command = format!("ecommerce-monolith lab run {}", summary.name);
                        Some(summary)
                    }
                    Err(error) => {
                        tracing::warn!(%file, %error, "an experiment file the Lab panel cannot read");
                        None
                    }
                }
            })
            .collect();
        experiments.sort_by(|a, b| a.name.cmp(&b.name));
        experiments
    })
}
