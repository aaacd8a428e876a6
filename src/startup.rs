//! Wiring: builds the parts from the settings, hands them to the router, listens, and
//! shuts down gracefully.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, JwtKeys, LoginThrottle};
use crate::checkout::Checkout;
use crate::checkout::workers::Workers;
use crate::config::Settings;
use crate::db::{self, Database};
use crate::http::tool_links::ToolLinks;
use crate::http::{self, AppState, Services};
use crate::live_settings::{self, LiveSettings};
use crate::mailer::Mailer;
use crate::payment::{self, PaymentGateway, SimulatedGateway};
use crate::telemetry::metrics::Exposition;
use crate::{idempotency, outbox, reconciliation};

pub struct Application {
    listener: TcpListener,
    router: Router,
    shutdown_timeout: Duration,
    /// After the deadline, how long `/metrics` still answers.
    metrics_linger: Duration,
    /// Work that outlives its request (checkouts whose client left) and the outbox
    /// workers.
    in_flight: TaskTracker,
    /// Cancelled at SIGTERM: the workers take no new job.
    draining: CancellationToken,
    /// Cancelled at the shutdown deadline: checkouts still running roll back.
    stopping: CancellationToken,
    workers: Workers,
}

/// After the deadline, how long the interrupted work gets to roll back and count
/// itself (a payment under way finishes first).
pub const AFTER_DEADLINE: Duration = Duration::from_secs(5);
/// How often the ledger is reconciled for the `payments_without_order` gauges.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// How long finished outbox jobs stay in the table (for a person to look at).
const DONE_JOBS_KEPT: Duration = Duration::from_secs(24 * 60 * 60);
/// How often idle housekeeping runs (login throttle memory, expired idempotency keys).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

impl Application {
    /// Migrates the database, makes sure the admin exists, and binds the listener
    /// (port 0 picks a free port, which tests use).
    pub async fn build(settings: &Settings, metrics: Option<Exposition>) -> anyhow::Result<Self> {
        db::create_and_migrate(&settings.database).await?;
        let db = Database::connect(&settings.database)?;
        if let Some(admin) = &settings.auth.admin {
            auth::ensure_admin(&db, admin)
                .await
                .context("creating the admin account")?;
        }

        let live = LiveSettings::load(db.clone(), &settings.live)
            .await
            .context("loading the live settings")?;

        let draining = CancellationToken::new();
        let stopping = CancellationToken::new();
        let in_flight = TaskTracker::new();
        let mailer = Mailer::new(&settings.smtp, live.clone())?;
        let ledger = db.sibling(&settings.database, payment::LEDGER_CONNECTIONS)?;
        tokio::spawn(reconciliation::export_periodically(
            ledger.clone(),
            RECONCILE_EVERY,
        ));
        let gateway: Arc<dyn PaymentGateway> =
            Arc::new(SimulatedGateway::new(live.clone(), ledger));

        let workers = Workers::new(
            db.clone(),
            gateway.clone(),
            mailer.clone(),
            settings.workers,
            draining.clone(),
            stopping.clone(),
        );
        let outbox_waiting = workers.waker();
        if settings.workers.in_background {
            workers.spawn(&in_flight);
        }
        let settings_changed = Arc::new(Notify::new());
        tokio::spawn(live.clone().follow(settings_changed.clone()));
        tokio::spawn(db::follow_notifications(
            Database::separate_pool(&settings.database, 1)?,
            &[live_settings::CHANNEL, outbox::CHANNEL],
            move |channel| {
                if channel == outbox::CHANNEL {
                    outbox_waiting.notify_one();
                } else {
                    settings_changed.notify_one();
                }
            },
        ));

        let login_throttle = Arc::new(LoginThrottle::new(settings.auth.login_throttle));
        let state = AppState::new(Services {
            checkout: Checkout::new(
                db.clone(),
                gateway.clone(),
                mailer,
                live.clone(),
                stopping.clone(),
            ),
            gateway,
            db: db.clone(),
            jwt: Arc::new(JwtKeys::new(
                &settings.auth.jwt_secret,
                settings.auth.jwt_ttl,
            )),
            login_throttle: login_throttle.clone(),
            live,
            in_flight: in_flight.clone(),
            draining: draining.clone(),
            metrics,
            storefront: Arc::new(settings.storefront.clone()),
            tool_links: ToolLinks::watch(settings.storefront.tools.clone(), stopping.clone()),
        });
        tokio::spawn(housekeeping(db, login_throttle));
        let router = http::router(state, settings.http.body_limit_bytes);
        let listener = TcpListener::bind(settings.bind_addr)
            .await
            .with_context(|| format!("BIND_ADDR: cannot listen on {}", settings.bind_addr))?;
        Ok(Self {
            listener,
            router,
            shutdown_timeout: settings.shutdown_timeout,
            metrics_linger: settings.shutdown_metrics_linger,
            in_flight,
            draining,
            stopping,
            workers,
        })
    }

    /// The outbox's workers, for a test that runs the due jobs itself
    /// (`Workers::run_due`, with `in_background` off).
    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then drains: new requests are answered 503
    /// (all but `/metrics` and `/health`; `/ready` says 503), the workers take no new
    /// job, and the requests in flight — and checkouts whose client left — get until
    /// `SHUTDOWN_TIMEOUT_SECONDS`. Whatever still runs then is rolled back, logged and
    /// counted (an order lost after its payment as an orphaned payment), `/metrics`
    /// keeps answering `SHUTDOWN_METRICS_LINGER_SECONDS` more so that a last scrape sees
    /// those counts, and the server stops.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let requested = CancellationToken::new();
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(requested.clone().cancelled_owned());
        let mut server = tokio::spawn(serve.into_future());
        tokio::select! {
            finished = &mut server => return finished.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            () = shutdown => {
                tracing::info!("shutting down: finishing the requests in flight until the deadline");
                self.draining.cancel();
            }
        }

        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.in_flight.close();
        if tokio::time::timeout_at(deadline, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_seconds = self.shutdown_timeout.as_secs(),
                "shutdown deadline reached: rolling back what still runs"
            );
            self.stopping.cancel();
            let _ = tokio::time::timeout(AFTER_DEADLINE, self.in_flight.wait()).await;
            tracing::info!(
                linger_seconds = self.metrics_linger.as_secs(),
                "serving /metrics a little longer, for a last scrape of what was rolled back"
            );
            tokio::time::sleep(self.metrics_linger).await;
        }
        requested.cancel();
        match tokio::time::timeout(AFTER_DEADLINE, &mut server).await {
            Ok(served) => served.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(_) => {
                server.abort();
                tracing::warn!("requests still open after the deadline were dropped");
                Ok(())
            }
        }
    }
}

/// Periodic upkeep: the login throttle forgets idle keys, expired idempotency keys go.
async fn housekeeping(db: Database, login_throttle: Arc<LoginThrottle>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        tick.tick().await;
        login_throttle.forget_idle();
        if !db.is_reachable() {
            continue;
        }
        if let Err(error) = idempotency::purge_expired(&db).await {
            tracing::warn!(%error, "could not delete expired idempotency keys");
        }
        if let Err(error) = outbox::purge_done(&db, DONE_JOBS_KEPT).await {
            tracing::warn!(%error, "could not delete finished outbox jobs");
        }
    }
}
