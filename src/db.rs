//! The database: connecting, creating it on first start, migrating, and handing out
//! pooled connections with the wait for one measured.

use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};

use crate::config::DatabaseSettings;
use crate::telemetry::db_spans::POOL_WAIT_TARGET;
use crate::telemetry::metrics::DB_POOL_ACQUIRE_DURATION;

/// Waits for a pooled connection at least this long are traced.
pub const NOTABLE_POOL_WAIT: Duration = Duration::from_millis(1);

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared connection pool. All requests draw from it — including the checkouts that
/// hold a connection for seconds, which is one of the lessons of this service.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    max_connections: u32,
}

impl Database {
    /// Connects lazily: the service starts even if Postgres is not up yet, and
    /// `/ready` says so.
    pub fn connect_lazy(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let options = connect_options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            max_connections: settings.max_connections,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// A connection from the pool. The wait is a histogram sample; a wait longer than
    /// [`NOTABLE_POOL_WAIT`] also becomes a `db.pool.acquire` span (see
    /// `telemetry::db_spans`), so a saturated pool shows up in every trace that suffers
    /// from it while the usual microsecond wait costs no span at all.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let started = Instant::now();
        let connection = self.pool.acquire().await;
        let waited = started.elapsed();
        metrics::histogram!(DB_POOL_ACQUIRE_DURATION).record(waited.as_secs_f64());
        if waited >= NOTABLE_POOL_WAIT {
            tracing::debug!(
                target: POOL_WAIT_TARGET,
                elapsed_secs = waited.as_secs_f64(),
                "waited for a pooled connection"
            );
        }
        connection
    }

    /// A transaction on a measured connection.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let connection = self.acquire().await?;
        Transaction::begin(connection, None).await
    }

    /// Whether the database answers, for `/ready`.
    pub async fn ping(&self) -> bool {
        let check = async {
            let mut connection = self.pool.acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *connection).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), check).await,
            Ok(Ok(_))
        )
    }
}

fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .context("DATABASE_URL: not a valid postgres:// URL")?;
    // Each statement becomes a span (see telemetry::db_spans); statements slower than a
    // second are also logged as warnings.
    Ok(options
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1))
        .application_name("ecommerce-monolith"))
}

/// Creates the database if it does not exist yet, then applies pending migrations.
pub async fn create_and_migrate(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let url = settings.url.expose_secret();
    let exists = Postgres::database_exists(url).await.with_context(|| {
        format!(
            "cannot reach Postgres at {} (is it running? is DATABASE_URL right?)",
            settings.redacted_url()
        )
    })?;
    if !exists {
        tracing::info!(database = %settings.redacted_url(), "creating the database");
        Postgres::create_database(url)
            .await
            .context("creating the database")?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(settings)?)
        .await
        .context("connecting to run migrations")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("applying database migrations")?;
    pool.close().await;
    tracing::info!("database schema is up to date");
    Ok(())
}
