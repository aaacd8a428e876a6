//! Settings an admin changes while the service runs — fault injection, the checkout
//! mode, the resilience of the dependencies' clients, and the lab experiment's phase
//! that `lab run` announces — kept in Postgres (`live_settings`, one row) so that every
//! replica follows the same values. A change is written and announced (`NOTIFY live_settings`) in one
//! transaction; every replica listens and also re-reads the row every few seconds, in
//! case a notification was missed. A replica that cannot reach the database keeps what
//! it last knew.
//!
//! What the environment sets (`PAYMENT_DELAY_MS`, …, `CHECKOUT_MODE`) is put in force at
//! start, on every replica; what it leaves unset keeps the shared value, so a restart
//! does not undo what an admin switched live. A fresh database starts from the defaults.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use metrics::gauge;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use strum::VariantArray;
use tokio::sync::Notify;

use crate::config::LiveStart;
use crate::db::{self, Database, statement};
use crate::domain::{
    CheckoutMode, Dependency, FaultProblem, FaultSettings, FaultsUpdate, LabPhase,
    ResilienceSettings, ResilienceUpdate,
};
use crate::telemetry::metrics::{
    CHECKOUT_MODE_ACTIVE, FAULT_EMAIL_DELAY, FAULT_EMAIL_HANG, FAULT_EMAIL_OUTAGE,
    FAULT_PAYMENT_CAPACITY, FAULT_PAYMENT_DELAY, FAULT_PAYMENT_FLAP_RATE,
    FAULT_PAYMENT_SUCCESS_RATE, LAB_PHASE, RESILIENCE_FALLBACK_ON, RESILIENCE_RETRIES_ALLOWED,
    RESILIENCE_RETRY_BUDGET, RESILIENCE_TIMEOUT,
};

/// The channel that announces a change.
pub const CHANNEL: &str = "live_settings";
/// How often a replica re-reads the row without being told to.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub faults: FaultSettings,
    pub checkout_mode: CheckoutMode,
    pub resilience: ResilienceSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings")]
    Invalid(Vec<FaultProblem>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The settings in force on this replica; cheap to clone and to read.
#[derive(Clone)]
pub struct LiveSettings {
    current: Arc<RwLock<Settings>>,
    /// Apart from the settings: they are copied on every checkout, this seldom.
    lab: Arc<RwLock<Option<LabPhase>>>,
    db: Database,
}

#[derive(sqlx::FromRow)]
struct Row {
    payment_delay_ms: i64,
    payment_success_rate: f64,
    email_delay_ms: i64,
    email_outage: bool,
    email_hang: bool,
    payment_flap_rate: f64,
    payment_capacity: i32,
    checkout_mode: CheckoutMode,
    resilience: Json<ResilienceSettings>,
    lab_phase: Option<Json<LabPhase>>,
}

impl From<&Row> for Settings {
    fn from(row: &Row) -> Self {
        let millis = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Settings {
            faults: FaultSettings {
                payment_delay: millis(row.payment_delay_ms),
                payment_success_rate: row.payment_success_rate,
                email_delay: millis(row.email_delay_ms),
                email_outage: row.email_outage,
                email_hang: row.email_hang,
                payment_flap_rate: row.payment_flap_rate,
                payment_capacity: u32::try_from(row.payment_capacity).unwrap_or(0),
            },
            checkout_mode: row.checkout_mode,
            resilience: row.resilience.0,
        }
    }
}

/// The columns of `Row`.
macro_rules! live_columns {
    () => {
        "payment_delay_ms, payment_success_rate, email_delay_ms, email_outage, email_hang, \
         payment_flap_rate, payment_capacity, checkout_mode, resilience, lab_phase"
    };
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl LiveSettings {
    /// The shared settings, created with the defaults if this is the first replica to
    /// start on this database (replicas starting together agree: one insert wins), then
    /// with what the environment sets put in force.
    pub async fn load(db: Database, start: &LiveStart) -> Result<Self, SettingsError> {
        let initial = Settings {
            faults: FaultSettings::DEFAULT,
            checkout_mode: CheckoutMode::Blocking,
            resilience: ResilienceSettings::OFF,
        };
        let mut conn = db.acquire().await?;
        statement!(
            "INSERT INTO live_settings (id, payment_delay_ms, payment_success_rate, \
                                        email_delay_ms, email_outage, checkout_mode) \
             VALUES (1, $1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING"
        )
        .query()
        .bind(millis(initial.faults.payment_delay))
        .bind(initial.faults.payment_success_rate)
        .bind(millis(initial.faults.email_delay))
        .bind(initial.faults.email_outage)
        .bind(initial.checkout_mode)
        .execute(&mut *conn)
        .await?;
        let row: Row = statement!(concat!(
            "SELECT ",
            live_columns!(),
            " FROM live_settings WHERE id = 1"
        ))
        .query_as()
        .fetch_one(&mut *conn)
        .await?;
        drop(conn);
        let settings = Settings::from(&row);
        export_gauges(&settings);
        let live = Self {
            current: Arc::new(RwLock::new(settings)),
            lab: Arc::new(RwLock::new(None)),
            db,
        };
        live.apply_lab(row.lab_phase.map(|phase| phase.0));
        let sets_something = start.checkout_mode.is_some()
            || FaultSettings::DEFAULT.with(&start.faults) != FaultSettings::DEFAULT
            || start.faults.email_outage.is_some()
            || start.faults.email_hang.is_some()
            || start.faults.payment_flap_rate.is_some()
            || start.faults.payment_capacity.is_some()
            || start.faults.payment_delay_ms.is_some()
            || start.faults.payment_success_rate.is_some()
            || start.faults.email_delay_ms.is_some();
        if sets_something {
            live.change(|settings| {
                let faults = settings.faults.with(&start.faults);
                let problems = faults.problems();
                if !problems.is_empty() {
                    return Err(problems);
                }
                Ok(Settings {
                    faults,
                    checkout_mode: start.checkout_mode.unwrap_or(settings.checkout_mode),
                    ..settings
                })
            })
            .await?;
        }
        Ok(live)
    }

    pub fn current(&self) -> Settings {
        // A poisoned lock only means a panic elsewhere; the value itself is plain data.
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> FaultSettings {
        self.current().faults
    }

    pub fn checkout_mode(&self) -> CheckoutMode {
        self.current().checkout_mode
    }

    pub fn resilience(&self) -> ResilienceSettings {
        self.current().resilience
    }

    /// Changes some resilience settings on every replica, or explains per field why not.
    pub async fn update_resilience(
        &self,
        update: &ResilienceUpdate,
    ) -> Result<Settings, SettingsError> {
        self.change(|settings| {
            let resilience = settings.resilience.with(update);
            let problems = resilience.problems();
            if problems.is_empty() {
                Ok(Settings {
                    resilience,
                    ..settings
                })
            } else {
                Err(problems)
            }
        })
        .await
    }

    /// Changes some fault settings on every replica, or explains per field why not.
    pub async fn update_faults(&self, update: &FaultsUpdate) -> Result<Settings, SettingsError> {
        self.change(|settings| {
            let faults = settings.faults.with(update);
            let problems = faults.problems();
            if problems.is_empty() {
                Ok(Settings { faults, ..settings })
            } else {
                Err(problems)
            }
        })
        .await
    }

    pub async fn set_checkout_mode(&self, mode: CheckoutMode) -> Result<Settings, SettingsError> {
        self.change(|settings| {
            Ok(Settings {
                checkout_mode: mode,
                ..settings
            })
        })
        .await
    }

    /// Reads the row, lets `edit` change it, writes and announces it in one transaction.
    async fn change(
        &self,
        edit: impl FnOnce(Settings) -> Result<Settings, Vec<FaultProblem>>,
    ) -> Result<Settings, SettingsError> {
        let mut tx = self.db.begin().await?;
        let row: Row = statement!(concat!(
            "SELECT ",
            live_columns!(),
            " FROM live_settings WHERE id = 1 FOR UPDATE"
        ))
        .query_as()
        .fetch_one(&mut *tx)
        .await?;
        let changed = edit(Settings::from(&row)).map_err(SettingsError::Invalid)?;
        statement!(
            "UPDATE live_settings SET payment_delay_ms = $1, payment_success_rate = $2, \
                    email_delay_ms = $3, email_outage = $4, checkout_mode = $5, \
                    email_hang = $6, resilience = $7, payment_flap_rate = $8, \
                    payment_capacity = $9, updated_at = now() \
             WHERE id = 1"
        )
        .query()
        .bind(millis(changed.faults.payment_delay))
        .bind(changed.faults.payment_success_rate)
        .bind(millis(changed.faults.email_delay))
        .bind(changed.faults.email_outage)
        .bind(changed.checkout_mode)
        .bind(changed.faults.email_hang)
        .bind(Json(changed.resilience))
        .bind(changed.faults.payment_flap_rate)
        .bind(i32::try_from(changed.faults.payment_capacity).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        announce_and_commit(tx).await?;
        self.apply(changed);
        Ok(changed)
    }

    /// Re-reads the row (on a notification, or every [`REFRESH_EVERY`]); on failure the
    /// settings in force stay as they are.
    pub async fn refresh(&self) {
        let read = async {
            let mut conn = self.db.acquire().await?;
            statement!(concat!(
                "SELECT ",
                live_columns!(),
                " FROM live_settings WHERE id = 1"
            ))
            .query_as::<Row>()
            .fetch_one(&mut *conn)
            .await
        };
        if let Ok(row) = read.await {
            self.apply(Settings::from(&row));
            self.apply_lab(row.lab_phase.map(|phase| phase.0));
        } else {
            // Still, a phase whose time is up ends here.
            let known = self.lab.read().unwrap_or_else(|p| p.into_inner()).clone();
            self.apply_lab(known);
        }
    }

    /// The lab experiment's phase in progress, if one is (and its time, with the grace
    /// of [`crate::domain::PHASE_GRACE`], is not up).
    pub fn lab_phase(&self) -> Option<LabPhase> {
        let phase = self.lab.read().unwrap_or_else(|p| p.into_inner());
        phase.clone().filter(|phase| phase.runs_at(Utc::now()))
    }

    /// Announces the lab's phase on every replica (`None`: the experiment is over).
    pub async fn announce_lab(&self, phase: Option<LabPhase>) -> Result<(), SettingsError> {
        let mut tx = self.db.begin().await?;
        statement!("UPDATE live_settings SET lab_phase = $1, updated_at = now() WHERE id = 1")
            .query()
            .bind(phase.clone().map(Json))
            .execute(&mut *tx)
            .await?;
        announce_and_commit(tx).await?;
        self.apply_lab(phase);
        Ok(())
    }

    /// Puts the lab's phase in force here, and on the `lab_phase` gauge: 1 for the phase
    /// that runs, 0 for the one before (a phase whose time is up is over).
    fn apply_lab(&self, phase: Option<LabPhase>) {
        let phase = phase.filter(|phase| phase.runs_at(Utc::now()));
        let mut current = self.lab.write().unwrap_or_else(|p| p.into_inner());
        if *current == phase {
            return;
        }
        let mark = |phase: &LabPhase, value: f64| {
            gauge!(LAB_PHASE, "experiment" => phase.experiment.clone(), "phase" => phase.phase.clone())
                .set(value);
        };
        if let Some(before) = current.as_ref() {
            mark(before, 0.0);
        }
        if let Some(now) = phase.as_ref() {
            mark(now, 1.0);
        }
        *current = phase;
    }

    /// Follows the shared row: re-reads it when `changed` is notified (a NOTIFY on
    /// [`CHANNEL`]) and every [`REFRESH_EVERY`] in case a notification was lost.
    pub async fn follow(self, changed: Arc<Notify>) {
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(REFRESH_EVERY) => {}
            }
            self.refresh().await;
        }
    }

    /// Puts `settings` in force here, if they differ from what is.
    fn apply(&self, settings: Settings) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if *current == settings {
            return;
        }
        *current = settings;
        drop(current);
        export_gauges(&settings);
        tracing::warn!(
            faults = ?settings.faults,
            checkout_mode = settings.checkout_mode.as_str(),
            resilience = ?settings.resilience,
            "live settings changed"
        );
    }
}

/// Tells every replica the row changed (`NOTIFY`, delivered at the commit) and commits.
async fn announce_and_commit(mut tx: Transaction<'static, Postgres>) -> Result<(), sqlx::Error> {
    statement!("SELECT pg_notify($1, '')")
        .query()
        .bind(CHANNEL)
        .execute(&mut *tx)
        .await?;
    db::commit(tx).await
}

/// The `fault_*`, `checkout_mode` and `resilience_*` gauges, so dashboards show when a
/// fault or a rung was switched on and which mode was in force.
fn export_gauges(settings: &Settings) {
    let faults = &settings.faults;
    gauge!(FAULT_PAYMENT_DELAY).set(faults.payment_delay.as_secs_f64());
    gauge!(FAULT_PAYMENT_SUCCESS_RATE).set(faults.payment_success_rate);
    gauge!(FAULT_EMAIL_DELAY).set(faults.email_delay.as_secs_f64());
    gauge!(FAULT_EMAIL_OUTAGE).set(if faults.email_outage { 1.0 } else { 0.0 });
    gauge!(FAULT_EMAIL_HANG).set(if faults.email_hang { 1.0 } else { 0.0 });
    gauge!(FAULT_PAYMENT_FLAP_RATE).set(faults.payment_flap_rate);
    gauge!(FAULT_PAYMENT_CAPACITY).set(f64::from(faults.payment_capacity));
    for &dependency in Dependency::VARIANTS {
        let policy = settings.resilience.of(dependency);
        let name = dependency.as_str();
        gauge!(RESILIENCE_TIMEOUT, "dependency" => name)
            .set(policy.timeout().map_or(0.0, |t| t.as_secs_f64()));
        gauge!(RESILIENCE_RETRIES_ALLOWED, "dependency" => name).set(f64::from(policy.retries));
        gauge!(RESILIENCE_RETRY_BUDGET, "dependency" => name)
            .set(f64::from(policy.retry_budget_percent) / 100.0);
        gauge!(RESILIENCE_FALLBACK_ON, "dependency" => name).set(if policy.fallback {
            1.0
        } else {
            0.0
        });
    }
    for &mode in CheckoutMode::VARIANTS {
        let active = if mode == settings.checkout_mode {
            1.0
        } else {
            0.0
        };
        gauge!(CHECKOUT_MODE_ACTIVE, "mode" => mode.as_str()).set(active);
    }
}
