//! The database: connecting, creating it on first start, migrating, handing out pooled
//! connections with the wait for one measured, and the service's statements, each
//! traced ([`statement`]).

mod lost_connections;
pub mod statement;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection as _, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit, watch};
use tracing::Instrument;

use crate::config::DatabaseSettings;
use crate::telemetry::db_spans;
use crate::telemetry::metrics::DB_POOL_ACQUIRE_DURATION;

pub(crate) use self::statement::statement;
pub use self::statement::{Statement, commit, rollback};

/// Waits for a pooled connection at least this long are traced.
pub const NOTABLE_POOL_WAIT: Duration = Duration::from_millis(1);

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often a probe asks the database whether it answers, while it does and while it
/// does not, and how long one probe may take: together they bound how long requests
/// wait before an outage turns into quick 503s (≈1.5 s) and how soon they stop after
/// the database is back (≈1.25 s).
const PROBE_WHILE_UP: Duration = Duration::from_millis(500);
const PROBE_WHILE_DOWN: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared connection pool. All requests draw from it — including the checkouts that
/// hold a connection for seconds, which is one of the lessons of this service.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
    max_connections: u32,
    /// Whether the last probe reached the server (see [`Database::connect`]).
    reachable: watch::Receiver<bool>,
    /// `db_pool_acquire_duration_seconds`, looked up once rather than per request.
    acquire_wait: metrics::Histogram,
    /// The asynchronous checkout's share of the pool (see [`Database::enter_async_share`]).
    async_share: Arc<Semaphore>,
}

impl Database {
    /// A pool that connects lazily (the service starts even if Postgres is not up yet),
    /// and a background probe on a connection of its own that tells whether the server
    /// answers. While it does not, [`Database::acquire`] fails at once instead of
    /// waiting `DB_ACQUIRE_TIMEOUT_SECONDS` for a connection that cannot come.
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let options = connect_options(settings)?;
        let pool = tested_before_use(settings)
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options.clone());
        let (reachable_tx, reachable) = watch::channel(true);
        tokio::spawn(watch_reachability(
            options.disable_statement_logging(),
            reachable_tx,
        ));
        Ok(Self {
            pool,
            max_connections: settings.max_connections,
            reachable,
            acquire_wait: metrics::histogram!(DB_POOL_ACQUIRE_DURATION),
            async_share: Arc::new(Semaphore::new(async_share_of(settings.max_connections))),
        })
    }

    /// A small pool of its own, for a part that must not take from or wait behind the
    /// shop's own connections: the notification listener (which keeps its connection).
    /// It tests its connections before use as the shop's pool does (`DB_PING_BEFORE_ACQUIRE`).
    pub fn separate_pool(settings: &DatabaseSettings, size: u32) -> anyhow::Result<PgPool> {
        Ok(tested_before_use(settings)
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(connect_options(settings)?))
    }

    /// A pool of `size` connections of its own that shares this one's probe, so that it
    /// too fails at once while the database is away: for a part that must not wait
    /// behind the shop's connections (the payment gateway's ledger, an external system).
    pub fn sibling(&self, settings: &DatabaseSettings, size: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pool: Self::separate_pool(settings, size)?,
            max_connections: size,
            reachable: self.reachable.clone(),
            acquire_wait: self.acquire_wait.clone(),
            async_share: Arc::new(Semaphore::new(async_share_of(size))),
        })
    }

    /// The places of the asynchronous checkout's work in the pool — its requests and its
    /// outbox jobs alike: half the connections. A burst of either queues here, holding
    /// nothing, instead of in the pool, so a catalog read arriving during the burst still
    /// finds a free connection. Each place is needed for milliseconds (the jobs wait for
    /// the gateway and the mail server outside it), so the queue drains as fast as it
    /// would have in the pool. The blocking checkout takes no place: it holds its
    /// connection for seconds, and the pool it exhausts is the lesson it teaches.
    ///
    /// Returns a place, queueing for it in `waiting` (a span, made only if every place is
    /// taken) when it must. Never fails while the service runs: the share is never closed.
    pub async fn enter_async_share(
        &self,
        waiting: impl FnOnce() -> tracing::Span,
    ) -> Result<SemaphorePermit<'_>, AcquireError> {
        if let Ok(place) = self.async_share.try_acquire() {
            return Ok(place);
        }
        self.async_share.acquire().instrument(waiting()).await
    }

    /// Whether the database answered its last probe.
    pub fn is_reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Completes when the database answers (at once if it does now).
    pub async fn until_reachable(&self) {
        let mut reachable = self.reachable.clone();
        if reachable.wait_for(|up| *up).await.is_err() {
            // The probe has stopped (the runtime is shutting down).
            std::future::pending::<()>().await;
        }
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
    ///
    /// While the database is unreachable it fails at once with an I/O error (a 503 for
    /// the client), and a wait under way ends as soon as the probe notices an outage.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        if !self.is_reachable() {
            return Err(unreachable());
        }
        let mut reachable = self.reachable.clone();
        let outage = async move {
            if reachable.wait_for(|up| !*up).await.is_err() {
                // The probe has stopped (the runtime is shutting down): wait on the pool.
                std::future::pending::<()>().await;
            }
        };
        let started = Instant::now();
        // Boxed: sqlx's acquire (with the connect it may do) is a ~14 KB future, and
        // inline it made every future that takes a connection at least that large for
        // its whole life — a checkout waiting on the gateway, a job waiting on the mail
        // server, a login queued for the hashing thread. Boxed, it is held only while a
        // connection is being acquired.
        let acquiring = Box::pin(self.pool.acquire());
        let connection = tokio::select! {
            connection = acquiring => connection,
            () = outage => Err(unreachable()),
        };
        let waited = started.elapsed();
        self.acquire_wait.record(waited.as_secs_f64());
        if waited >= NOTABLE_POOL_WAIT {
            let now = SystemTime::now();
            db_spans::record_pool_wait(now.checked_sub(waited).unwrap_or(now));
        }
        connection
    }

    /// A transaction on a measured connection. End it with [`commit`] (or [`rollback`]),
    /// which trace its last statement as the others are.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let connection = self.acquire().await?;
        statement::begin(connection).await
    }

    /// Whether the database answers, for `/ready`.
    pub async fn ping(&self) -> bool {
        if !self.is_reachable() {
            return false;
        }
        let check = async {
            let mut connection = self.pool.acquire().await?;
            statement!("SELECT 1")
                .query()
                .execute(&mut *connection)
                .await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), check).await,
            Ok(Ok(_))
        )
    }
}

/// Listens on `channels` (LISTEN/NOTIFY) and calls `notified` with the channel of every
/// notification, reconnecting after a failure. `pool` should be a pool of its own (see
/// [`Database::separate_pool`]): the listener keeps its connection for good. Runs until
/// the runtime stops; whoever relies on it also polls, since a notification sent while
/// the connection was down is lost.
pub async fn follow_notifications(
    pool: PgPool,
    channels: &'static [&'static str],
    notified: impl Fn(&str) + Send + 'static,
) {
    loop {
        let listened = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all(channels.iter().copied()).await?;
            loop {
                let notification = listener.recv().await?;
                notified(notification.channel());
            }
        };
        let result: Result<(), sqlx::Error> = listened.await;
        if let Err(error) = result {
            tracing::debug!(%error, "notification listener lost its connection; reconnecting");
        }
        tokio::time::sleep(PROBE_WHILE_DOWN * 4).await;
    }
}

/// A pool that tests a connection with a round trip before handing it out
/// (`DB_PING_BEFORE_ACQUIRE`): one idle for `DB_PING_IDLE_AFTER_MS` or longer, or one
/// that sat idle through a lost connection seen anywhere in the process (see
/// [`lost_connections`]). A connection cut while it sat in the pool — a restart, a
/// killed backend — is caught by one or the other, replaced, and no request gets it;
/// a connection in steady use is trusted, which saves a round trip on every request
/// under load. (sqlx also pings each connection as it goes back to the pool; nothing
/// turns that one off.)
fn tested_before_use(settings: &DatabaseSettings) -> PgPoolOptions {
    let idle_after = settings.ping_idle_after;
    if !settings.ping_before_acquire || idle_after.is_zero() {
        return PgPoolOptions::new().test_before_acquire(settings.ping_before_acquire);
    }
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(move |connection, held| {
            Box::pin(async move {
                if held.idle_for >= idle_after
                    || lost_connections::idle_through_a_loss(held.idle_for)
                {
                    // An error discards the connection (sqlx logs it), and the pool
                    // hands out another or opens a new one, each tested the same way.
                    connection
                        .ping()
                        .await
                        .inspect_err(|_| lost_connections::lost())?;
                }
                Ok(true)
            })
        })
}

/// The error of a request that needs the database while it is unreachable.
fn unreachable() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the database is unreachable",
    ))
}

/// Whether `error` means the database could not be reached or went away (the client
/// should retry later: 503), rather than a fault of the request or of this service.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01-57P03: the server is shutting
            // down or starting; 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Probes the server on a connection of its own and publishes whether it answered.
/// Ends when nobody listens any more (every `Database` clone dropped).
async fn watch_reachability(options: PgConnectOptions, reachable: watch::Sender<bool>) {
    let mut connection: Option<PgConnection> = None;
    while !reachable.is_closed() {
        let up = probe(&mut connection, &options).await;
        if !up {
            lost_connections::lost();
        }
        let was_up = reachable.send_replace(up);
        if was_up && !up {
            tracing::warn!(
                "the database does not answer: requests that need it get 503 until it does"
            );
        } else if up && !was_up {
            tracing::info!("the database answers again");
        }
        tokio::time::sleep(if up { PROBE_WHILE_UP } else { PROBE_WHILE_DOWN }).await;
    }
}

/// Half the pool (at least one connection): see [`Database::enter_async_share`].
fn async_share_of(pool_size: u32) -> usize {
    usize::try_from(pool_size / 2).unwrap_or(usize::MAX).max(1)
}

/// `SELECT 1` on the probe's connection, reconnecting once if it was lost.
async fn probe(connection: &mut Option<PgConnection>, options: &PgConnectOptions) -> bool {
    for _attempt in 0..2 {
        if connection.is_none() {
            *connection = tokio::time::timeout(PROBE_TIMEOUT, options.connect())
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(conn) = connection.as_mut() else {
            return false;
        };
        let answered = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(conn))
            .await
            .is_ok_and(|result| result.is_ok());
        if answered {
            return true;
        }
        *connection = None;
    }
    false
}

fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .context("DATABASE_URL: not a valid postgres:// URL")?;
    // Each statement is a span of its own making (see `statement`): sqlx's log of every
    // statement, which copies its SQL for every run, is off. Statements slower than a
    // second are still logged, as warnings.
    Ok(options
        .log_statements(log::LevelFilter::Off)
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
        if let Err(error) = Postgres::create_database(url).await {
            // Replicas starting together race to create it: losing that race is fine.
            let created_by_another = Postgres::database_exists(url).await.unwrap_or(false);
            if !created_by_another {
                return Err(anyhow::Error::new(error).context("creating the database"));
            }
        }
    }
    // Migrations take an advisory lock: replicas starting together apply them once,
    // the others wait and find them applied.
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

#[cfg(test)]
mod tests {
    use super::async_share_of;

    #[test]
    fn the_async_share_is_half_the_pool_and_never_nobody() {
        assert_eq!(async_share_of(10), 5);
        assert_eq!(async_share_of(11), 5);
        assert_eq!(async_share_of(2), 1);
        assert_eq!(async_share_of(1), 1);
    }
}
