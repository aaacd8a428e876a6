//! The command line: `serve`, `migrate` (and more to come).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecommerce_monolith::config::{DatabaseSettings, LogFormat, ProcessEnv, Settings};
use ecommerce_monolith::startup::{Application, shutdown_signal};
use ecommerce_monolith::{db, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "A deliberately monolithic, thoroughly instrumented e-commerce backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    // A `.env` file is optional; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => serve().await,
        Command::Migrate => migrate().await,
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

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let telemetry = telemetry::init(&settings.telemetry)?;
    let metrics = if settings.telemetry.metrics_enabled {
        let handle = telemetry::metrics::install_recorder()?;
        telemetry::metrics::spawn_upkeep(handle.clone());
        Some(handle)
    } else {
        None
    };
    let app = Application::build(&settings, metrics).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    let served = app.run_until_stopped(shutdown_signal()).await;
    telemetry.shutdown().await;
    served?;
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let settings = DatabaseSettings::from_source(&ProcessEnv)?;
    telemetry::init_cli_logging(LogFormat::Pretty, "info")?;
    db::create_and_migrate(&settings).await
}
