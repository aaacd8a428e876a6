//! `ecommerce-monolith faults show|set`: the fault-injection endpoint from the command
//! line, so a tour can say "type this, then look at that chart".

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::checkout::faults::{FaultSettings, FaultsUpdate};
use crate::client::ApiClient;

#[derive(Debug, clap::Args)]
pub struct FaultsArgs {
    /// The service to change.
    #[arg(
        long,
        env = "BASE_URL",
        default_value = "http://localhost:8000",
        global = true
    )]
    pub base_url: String,
    /// An admin account (the one from the service's ADMIN_EMAIL by default).
    #[arg(long, env = "ADMIN_EMAIL", global = true)]
    pub admin_email: Option<String>,
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true, global = true)]
    pub admin_password: Option<String>,
    #[command(subcommand)]
    pub command: FaultsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FaultsCommand {
    /// Print the settings in force.
    Show,
    /// Change some settings; the others keep their value.
    Set {
        /// Simulated payment gateway latency, in milliseconds.
        #[arg(long)]
        payment_delay_ms: Option<u64>,
        /// Probability that a payment is approved, 0 to 1.
        #[arg(long)]
        payment_success_rate: Option<f64>,
        /// Simulated SMTP server latency, in milliseconds.
        #[arg(long)]
        email_delay_ms: Option<u64>,
        /// `true` makes every confirmation e-mail fail.
        #[arg(long)]
        email_outage: Option<bool>,
    },
    /// Back to the defaults: 1000 ms, 0.95, 2000 ms, no outage.
    Reset,
}

/// Runs the command and returns the settings now in force, as the service printed them.
pub async fn run(args: FaultsArgs) -> anyhow::Result<serde_json::Value> {
    let (Some(email), Some(password)) = (&args.admin_email, &args.admin_password) else {
        anyhow::bail!(
            "an admin account is needed: --admin-email/--admin-password or ADMIN_EMAIL/ADMIN_PASSWORD"
        );
    };
    let client = ApiClient::new(&args.base_url, Duration::from_secs(30))?;
    let token = client.login(email, password).await?;
    let update = match args.command {
        FaultsCommand::Show => None,
        FaultsCommand::Set {
            payment_delay_ms,
            payment_success_rate,
            email_delay_ms,
            email_outage,
        } => Some(FaultsUpdate {
            payment_delay_ms,
            payment_success_rate,
            email_delay_ms,
            email_outage,
        }),
        FaultsCommand::Reset => Some(FaultsUpdate::from(FaultSettings::DEFAULT)),
    };
    let response = match &update {
        None => {
            client
                .send(Method::GET, "/api/admin/faults", Some(&token), None)
                .await?
        }
        Some(update) => {
            let body = serde_json::to_value(update)?;
            client
                .send(Method::PUT, "/api/admin/faults", Some(&token), Some(&body))
                .await?
        }
    };
    if response.status != StatusCode::OK {
        anyhow::bail!(
            "the service refused ({}): {}",
            response.status,
            response.body["detail"].as_str().unwrap_or("no detail")
        );
    }
    Ok(response.body)
}
