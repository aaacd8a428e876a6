//! `ecommerce-monolith faults …`, `mode …`, `resilience …` and `outbox replay`: the live settings and
//! the dead letters of a running service from the command line, so a tour can say "type
//! this, then look at that chart". They log in as an admin and call the admin API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use strum::VariantArray;

use crate::client::ApiClient;
use ecommerce_monolith::domain::{
    CheckoutMode, FaultSettings, FaultsUpdate, JobKind, PolicyUpdate, ResilienceSettings,
    ResilienceUpdate,
};

/// Which service, as which admin.
#[derive(Debug, clap::Args)]
pub struct AdminConnection {
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
}

#[derive(Debug, clap::Args)]
pub struct FaultsArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
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
        /// `true` makes the mail server accept and never answer (until the client gives
        /// up: SMTP_TIMEOUT_MS, or the resilience timeout).
        #[arg(long)]
        email_hang: Option<bool>,
        /// Share of gateway calls that fail (the gateway flaps), 0 to 1.
        #[arg(long)]
        payment_flap_rate: Option<f64>,
        /// Calls per second the gateway serves at its delay; beyond, it slows down and
        /// turns calls away (overloaded). 0 is unlimited.
        #[arg(long)]
        payment_capacity: Option<u64>,
    },
    /// Back to the defaults: 1000 ms, 0.95, 2000 ms, no outage, no hang, no flapping,
    /// unlimited capacity.
    Reset,
}

#[derive(Debug, clap::Args)]
pub struct ResilienceArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: ResilienceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ResilienceCommand {
    /// Print the rungs in force, per dependency.
    Show,
    /// Change some rungs; the others keep their value.
    Set {
        #[command(flatten)]
        payment: Box<PaymentRungs>,
        #[command(flatten)]
        email: Box<EmailRungs>,
    },
    /// Everything off: the blocking checkout as the design card draws it.
    Reset,
}

#[derive(Debug, clap::Args)]
pub struct ModeArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: ModeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModeCommand {
    /// Print the checkout mode in force.
    Show,
    /// Switch the checkout mode (every replica follows within a second).
    Set {
        #[arg(value_parser = parse_mode)]
        mode: CheckoutMode,
    },
}

#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Put dead-lettered jobs back in the queue (after the outage that killed them).
    Replay {
        /// Only jobs of this kind: charge_order, send_confirmation or send_cancellation.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<JobKind>,
    },
}

fn parse_kind(text: &str) -> Result<JobKind, String> {
    text.trim().parse().map_err(|_| {
        let kinds: Vec<&str> = JobKind::VARIANTS.iter().map(|k| k.as_str()).collect();
        format!("expected one of {}, got {text:?}", kinds.join(", "))
    })
}

fn parse_mode(text: &str) -> Result<CheckoutMode, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected blocking or async, got {text:?}"))
}

/// Runs `faults …`; returns the settings now in force, as the service printed them.
pub async fn faults(args: FaultsArgs) -> anyhow::Result<Value> {
    let update = match args.command {
        FaultsCommand::Show => None,
        FaultsCommand::Set {
            payment_delay_ms,
            payment_success_rate,
            email_delay_ms,
            email_outage,
            email_hang,
            payment_flap_rate,
            payment_capacity,
        } => Some(FaultsUpdate {
            payment_delay_ms,
            payment_success_rate,
            email_delay_ms,
            email_outage,
            email_hang,
            payment_flap_rate,
            payment_capacity,
        }),
        FaultsCommand::Reset => Some(FaultsUpdate::from(FaultSettings::DEFAULT)),
    };
    let body = update.map(serde_json::to_value).transpose()?;
    call(
        &args.connection,
        change_or_show(&body),
        "/api/admin/faults",
        body,
    )
    .await
}

/// The payment gateway's rungs, as `resilience set` takes them.
#[derive(Debug, clap::Args)]
pub struct PaymentRungs {
    /// Give up a charge after this many milliseconds (0: no timeout).
    #[arg(long)]
    payment_timeout_ms: Option<u64>,
    /// Open the gateway's breaker after this many failures in a row (0: no breaker).
    #[arg(long)]
    payment_breaker_failures: Option<u64>,
    /// How long the open breaker refuses calls before a probe, in milliseconds.
    #[arg(long)]
    payment_breaker_open_ms: Option<u64>,
    /// Probes that must succeed, half-open, to close it.
    #[arg(long)]
    payment_breaker_probes: Option<u64>,
    /// Charge again this many times after a failure (0: no retries; same idempotency
    /// key, so never twice).
    #[arg(long)]
    payment_retries: Option<u64>,
    /// The first retry's backoff, in milliseconds (doubled for each next, with jitter).
    #[arg(long)]
    payment_retry_backoff_ms: Option<u64>,
    /// Retries may add at most this share of the calls, in percent (0: no budget).
    #[arg(long)]
    payment_retry_budget_percent: Option<u64>,
}

/// The mail server's rungs, as `resilience set` takes them.
#[derive(Debug, clap::Args)]
pub struct EmailRungs {
    /// Give up an e-mail after this many milliseconds (0: no timeout).
    #[arg(long)]
    email_timeout_ms: Option<u64>,
    /// Open the mail server's breaker after this many failures in a row (0: no breaker).
    #[arg(long)]
    email_breaker_failures: Option<u64>,
    /// How long the open breaker refuses calls before a probe, in milliseconds.
    #[arg(long)]
    email_breaker_open_ms: Option<u64>,
    /// Probes that must succeed, half-open, to close it.
    #[arg(long)]
    email_breaker_probes: Option<u64>,
    /// Send again this many times after a failure (0: no retries).
    #[arg(long)]
    email_retries: Option<u64>,
    /// The first retry's backoff, in milliseconds (doubled for each next, with jitter).
    #[arg(long)]
    email_retry_backoff_ms: Option<u64>,
    /// Retries may add at most this share of the calls, in percent (0: no budget).
    #[arg(long)]
    email_retry_budget_percent: Option<u64>,
    /// `true`: when the confirmation cannot be sent, queue it in the outbox and confirm
    /// the order anyway.
    #[arg(long)]
    email_fallback: Option<bool>,
}

/// A policy update with what was given; `None` if nothing was.
fn policy_update(given: [Option<u64>; 7], fallback: Option<bool>) -> Option<PolicyUpdate> {
    let [
        timeout_ms,
        breaker_failures,
        breaker_open_ms,
        breaker_probes,
        retries,
        retry_backoff_ms,
        retry_budget_percent,
    ] = given;
    (given.iter().any(Option::is_some) || fallback.is_some()).then_some(PolicyUpdate {
        timeout_ms,
        breaker_failures,
        breaker_open_ms,
        breaker_probes,
        retries,
        retry_backoff_ms,
        retry_budget_percent,
        fallback,
    })
}

/// Runs `resilience …`; returns the rungs now in force, as the service printed them.
pub async fn resilience(args: ResilienceArgs) -> anyhow::Result<Value> {
    let update = match args.command {
        ResilienceCommand::Show => None,
        ResilienceCommand::Set { payment, email } => Some(ResilienceUpdate {
            payment: policy_update(
                [
                    payment.payment_timeout_ms,
                    payment.payment_breaker_failures,
                    payment.payment_breaker_open_ms,
                    payment.payment_breaker_probes,
                    payment.payment_retries,
                    payment.payment_retry_backoff_ms,
                    payment.payment_retry_budget_percent,
                ],
                None,
            ),
            email: policy_update(
                [
                    email.email_timeout_ms,
                    email.email_breaker_failures,
                    email.email_breaker_open_ms,
                    email.email_breaker_probes,
                    email.email_retries,
                    email.email_retry_backoff_ms,
                    email.email_retry_budget_percent,
                ],
                email.email_fallback,
            ),
        }),
        ResilienceCommand::Reset => Some(ResilienceUpdate::from(ResilienceSettings::OFF)),
    };
    let body = update.map(serde_json::to_value).transpose()?;
    call(
        &args.connection,
        change_or_show(&body),
        "/api/admin/resilience",
        body,
    )
    .await
}

/// Runs `mode …`; returns the mode now in force, as the service printed it.
pub async fn mode(args: ModeArgs) -> anyhow::Result<Value> {
    let body = match args.command {
        ModeCommand::Show => None,
        ModeCommand::Set { mode } => Some(json!({ "mode": mode })),
    };
    let method = change_or_show(&body);
    call(&args.connection, method, "/api/admin/checkout-mode", body).await
}

/// Runs `outbox replay`; returns what the service put back in the queue.
pub async fn outbox(args: OutboxArgs) -> anyhow::Result<Value> {
    let OutboxCommand::Replay { kind } = args.command;
    let body = json!({ "kind": kind });
    call(
        &args.connection,
        Method::POST,
        "/api/admin/outbox/replay",
        Some(body),
    )
    .await
}

/// A setting is shown with GET and changed with PUT.
fn change_or_show(body: &Option<Value>) -> Method {
    if body.is_some() {
        Method::PUT
    } else {
        Method::GET
    }
}

/// Logs in as the admin, then sends `body` (or nothing) to `path` with `method`.
async fn call(
    connection: &AdminConnection,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (Some(email), Some(password)) = (&connection.admin_email, &connection.admin_password)
    else {
        anyhow::bail!(
            "an admin account is needed: --admin-email/--admin-password or ADMIN_EMAIL/ADMIN_PASSWORD"
        );
    };
    let client = ApiClient::new(&connection.base_url, Duration::from_secs(30))?;
    let token = client.login(email, password).await?;
    let response = client
        .send(method, path, Some(&token), body.as_ref())
        .await?;
    if response.status != StatusCode::OK {
        anyhow::bail!(
            "the service refused ({}): {}",
            response.status,
            response.body["detail"].as_str().unwrap_or("no detail")
        );
    }
    Ok(response.body)
}
