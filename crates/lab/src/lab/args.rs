//! What `lab run` is told: the experiment, the service, and how long to play it.

use std::path::PathBuf;
use std::time::Duration;

use super::experiment::Experiment;

/// About this long, a `--quick` run: each experiment's durations scaled to fit.
const QUICK_LENGTH: Duration = Duration::from_secs(60);
/// No phase shorter than this, even in `--quick`.
const SHORTEST_PHASE: Duration = Duration::from_secs(3);
/// Injected delays are scaled with the durations in `--quick`, but no lower than this
/// share: a checkout must still be slower than the objectives it is judged against.
const LOWEST_DELAY_SCALE: f64 = 0.25;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A shipped experiment's name (`lab list`), or an experiment file.
    pub experiment: String,
    /// The service.
    #[arg(long, env = "BASE_URL", default_value = "http://localhost:8000")]
    pub base_url: String,
    /// A Prometheus that scrapes the service: alert hypotheses are judged on it
    /// (without one they are skipped, never held).
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// About a minute: the durations, and the injected delays with them (to a quarter at
    /// the least), scaled down, with the same hypotheses. What cannot be judged in that
    /// time (an alert's `for:`) is skipped.
    #[arg(long)]
    pub quick: bool,
    /// Also write the journal as JSON to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the journal as one self-contained HTML page with the charts.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// The admin account that changes the settings.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Where the HTML report's links to the dashboards lead.
    #[arg(
        long,
        env = "STOREFRONT_GRAFANA_URL",
        default_value = "http://localhost:3000"
    )]
    pub grafana_url: String,
    /// Where the HTML report's links to the traces lead.
    #[arg(
        long,
        env = "STOREFRONT_JAEGER_URL",
        default_value = "http://localhost:16686"
    )]
    pub jaeger_url: String,
}

/// How a run's durations and delays are scaled (1 for a full run).
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub time: f64,
    pub delays: f64,
}

impl Scale {
    pub fn of(experiment: &Experiment, quick: bool) -> Self {
        if !quick {
            return Self {
                time: 1.0,
                delays: 1.0,
            };
        }
        let time = (QUICK_LENGTH.as_secs_f64() / experiment.length().as_secs_f64()).min(1.0);
        Self {
            time,
            delays: time.max(LOWEST_DELAY_SCALE),
        }
    }

    pub fn duration(self, full: Duration) -> Duration {
        if self.time >= 1.0 {
            full
        } else {
            full.mul_f64(self.time).max(SHORTEST_PHASE)
        }
    }
}
