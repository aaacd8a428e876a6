//! `ecommerce-lab`: the load generator, the admin commands and the lab of a running
//! ecommerce-monolith. `ecommerce-monolith loadgen|faults|mode|resilience|outbox|lab …` runs this binary
//! (it lies beside the server's), so both spellings work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecommerce_lab::admin_cli::{self, FaultsArgs, ModeArgs, OutboxArgs, ResilienceArgs};
use ecommerce_lab::lab::LabArgs;
use ecommerce_lab::loadgen::LoadgenArgs;
use ecommerce_monolith::config::{ProcessEnv, TelemetrySettings};
use ecommerce_monolith::telemetry;

#[derive(Parser)]
#[command(
    name = "ecommerce-lab",
    version,
    about = "Load, judge and steer a running ecommerce-monolith"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Loadgen(LoadgenArgs),
    Faults(FaultsArgs),
    Mode(ModeArgs),
    /// The ladder of cures: what the clients of the gateway and the mail server do about
    /// a dependency that is slow or hangs.
    Resilience(ResilienceArgs),
    Outbox(OutboxArgs),
    /// The lessons as experiments: list, show, run (and judge) them.
    Lab(LabArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    // A `.env` file is optional; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let result = match cli.command {
        // The lab's exit code says how the experiment went (0, 1) or that it could not
        // be read (2).
        Command::Lab(args) => return lab(args).await,
        Command::Loadgen(args) => loadgen(args).await,
        Command::Faults(args) => print_json(admin_cli::faults(args).await),
        Command::Mode(args) => print_json(admin_cli::mode(args).await),
        Command::Resilience(args) => print_json(admin_cli::resilience(args).await),
        Command::Outbox(args) => print_json(admin_cli::outbox(args).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole chain on one line, without a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let mut settings = TelemetrySettings::from_source(&ProcessEnv, "loadgen")?;
    // The report is the output; logs only say what goes wrong.
    if std::env::var_os("RUST_LOG").is_none() {
        settings.log_filter = "warn".to_string();
    }
    let telemetry = telemetry::init_for_tool(&settings)?;
    let result = ecommerce_lab::loadgen::run(args).await;
    telemetry.shutdown().await;
    result.map(|_| ())
}

async fn lab(args: LabArgs) -> ExitCode {
    let settings = TelemetrySettings::from_source(&ProcessEnv, "lab").map(|mut settings| {
        // The journal is the output; logs only say what goes wrong.
        if std::env::var_os("RUST_LOG").is_none() {
            settings.log_filter = "warn".to_string();
        }
        settings
    });
    let telemetry = match settings
        .map_err(anyhow::Error::from)
        .and_then(|s| telemetry::init_for_tool(&s))
    {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let code = ecommerce_lab::lab::run(args).await;
    telemetry.shutdown().await;
    code
}

/// Prints what an admin command answered.
fn print_json(answer: anyhow::Result<serde_json::Value>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&answer?)?);
    Ok(())
}
