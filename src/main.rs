//! The command line: `serve`, `migrate`, `seed`, `healthcheck` — and, as a front door to
//! the `ecommerce-lab` binary beside this one, `loadgen`, `faults`, `mode`, `outbox` and
//! `lab`:
//! the client-side tools live in a crate of their own, so that the server links none of
//! them, and both spellings work.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ecommerce_monolith::config::{
    DEFAULT_LOG_FORMAT_CLI, DatabaseSettings, DemoCustomer, ProcessEnv, Settings,
};
use ecommerce_monolith::shutdown::shutdown_signal;
use ecommerce_monolith::startup::Application;
use ecommerce_monolith::{checkout, db, resilience, seed, telemetry};
use secrecy::ExposeSecret;
use sqlx::Connection;

/// With `--features mimalloc`: mimalloc instead of the system allocator. The request
/// path allocates and frees across threads (a span built on a worker is freed by the
/// exporter's thread), where glibc's arenas take a lock, so reads get ~15-20 % faster —
/// but a burst of checkouts takes 6-8 MiB more, and memory is the budget this service
/// keeps (BENCHMARKS.md, measures 1 and 6). Built without transparent huge pages
/// (`no_thp`), which doubled the resident memory.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// glibc's malloc serves a block above `M_MMAP_THRESHOLD` with its own mapping and gives
/// it back on free — but after the first such free it raises the threshold to that
/// block's size, so argon2's 7 MiB and other large buffers move into the heap and stay
/// resident after a burst. A fixed threshold keeps large blocks returnable: a burst of
/// 100 logins and checkouts peaked at ~30.5 instead of ~34.5 MiB and fell back to ~27
/// (BENCHMARKS.md, measure 6); reads did not measurably change.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
fn keep_large_blocks_returnable() {
    const LARGE_BLOCK_BYTES: libc::c_int = 256 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other
    // thread of ours exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc"))))]
fn keep_large_blocks_returnable() {}

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
    Serve {
        /// Also create the demo catalog (idempotent) before serving.
        #[arg(long)]
        seed: bool,
    },
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Create the demo catalog (idempotent; migrates first).
    Seed {
        /// Put the seeded stock levels back (after a load test sold things out).
        #[arg(long)]
        restock: bool,
    },
    /// Simulate shoppers against a running service and report latencies and outcomes
    /// (runs `ecommerce-lab loadgen`).
    #[command(disable_help_flag = true)]
    Loadgen(Forwarded),
    /// Show or change the live fault injection of a running service (`ecommerce-lab
    /// faults`).
    #[command(disable_help_flag = true)]
    Faults(Forwarded),
    /// Show or switch the checkout mode of a running service (`ecommerce-lab mode`).
    #[command(disable_help_flag = true)]
    Mode(Forwarded),
    /// Show or change the rungs of the ladder of cures (a timeout per dependency) of a
    /// running service (`ecommerce-lab resilience`).
    #[command(disable_help_flag = true)]
    Resilience(Forwarded),
    /// The outbox of a running service: replay its dead letters (`ecommerce-lab outbox`).
    #[command(disable_help_flag = true)]
    Outbox(Forwarded),
    /// The lessons as experiments: `lab list`, `lab show NAME`, `lab run NAME|FILE`
    /// (`ecommerce-lab lab`).
    #[command(disable_help_flag = true)]
    Lab(Forwarded),
    /// Exit 0 if the service answers `/health` (for container health checks).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8000/health")]
        url: String,
    },
}

/// The arguments of a command that `ecommerce-lab` runs, passed on as they are.
#[derive(clap::Args)]
struct Forwarded {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let forwarded = match &cli.command {
        Command::Loadgen(f) => Some(("loadgen", f)),
        Command::Faults(f) => Some(("faults", f)),
        Command::Mode(f) => Some(("mode", f)),
        Command::Resilience(f) => Some(("resilience", f)),
        Command::Outbox(f) => Some(("outbox", f)),
        Command::Lab(f) => Some(("lab", f)),
        _ => None,
    };
    if let Some((command, forwarded)) = forwarded {
        return run_lab(command, &forwarded.args);
    }
    keep_large_blocks_returnable();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

/// Runs `ecommerce-lab <command> <args>` in place of this process: the binary beside
/// this one (as the image and `cargo build` put them), else the one on the `PATH`.
fn run_lab(command: &str, args: &[OsString]) -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .map(|this| this.with_file_name("ecommerce-lab"))
        .filter(|lab| lab.exists());
    let lab = beside.unwrap_or_else(|| PathBuf::from("ecommerce-lab"));
    let mut run = std::process::Command::new(&lab);
    run.arg(command).args(args);
    #[cfg(unix)]
    let error = std::os::unix::process::CommandExt::exec(&mut run);
    #[cfg(not(unix))]
    let error = match run.status() {
        Ok(status) => {
            return ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1));
        }
        Err(error) => error,
    };
    eprintln!(
        "error: `{command}` is run by the ecommerce-lab binary, which could not be started \
         ({}: {error}); build it with `cargo build --workspace`",
        lab.display()
    );
    ExitCode::FAILURE
}

async fn run(command: Command) -> ExitCode {
    // A `.env` file is optional; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let result = match command {
        Command::Serve { seed } => serve(seed).await,
        Command::Migrate => migrate().await,
        Command::Seed { restock } => seed_catalog(restock).await,
        Command::Healthcheck { url } => healthcheck(&url).await,
        // Run by ecommerce-lab, in `main`.
        Command::Loadgen(_)
        | Command::Faults(_)
        | Command::Mode(_)
        | Command::Resilience(_)
        | Command::Outbox(_)
        | Command::Lab(_) => Ok(()),
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

async fn serve(with_seed: bool) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let telemetry = telemetry::init(&settings.telemetry)?;
    let metrics = if settings.telemetry.metrics_enabled {
        let handle = telemetry::metrics::install_recorder()?;
        checkout::start_metrics_at_zero();
        resilience::start_metrics_at_zero();
        telemetry::metrics::spawn_upkeep(&handle);
        Some(handle)
    } else {
        None
    };
    let app = Application::build(&settings, metrics).await?;
    if with_seed {
        seed_database(
            &settings.database,
            &settings.storefront.demo_customer,
            false,
        )
        .await?;
    }
    tracing::info!(address = %app.local_addr(), "listening");
    let served = app.run_until_stopped(shutdown_signal()).await;
    telemetry.shutdown().await;
    served?;
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let settings = DatabaseSettings::from_source(&ProcessEnv)?;
    telemetry::init_cli_logging(DEFAULT_LOG_FORMAT_CLI, "info")?;
    db::create_and_migrate(&settings).await
}

async fn seed_catalog(restock: bool) -> anyhow::Result<()> {
    let settings = DatabaseSettings::from_source(&ProcessEnv)?;
    let demo_customer = DemoCustomer::from_source(&ProcessEnv)?;
    telemetry::init_cli_logging(DEFAULT_LOG_FORMAT_CLI, "info")?;
    db::create_and_migrate(&settings).await?;
    seed_database(&settings, &demo_customer, restock).await
}

async fn seed_database(
    settings: &DatabaseSettings,
    demo_customer: &DemoCustomer,
    restock: bool,
) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(settings.url.expose_secret()).await?;
    seed::seed_demo_customer(&mut conn, demo_customer).await?;
    let report = seed::seed_demo_catalog(&mut conn, restock).await?;
    tracing::info!(
        categories_created = report.categories_created,
        products_created = report.products_created,
        products_restocked = report.products_restocked,
        "demo catalog ready"
    );
    Ok(())
}

async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(url)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}
