//! Wiring: builds the parts from the settings, hands them to the router, listens, and
//! shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::auth::{self, JwtKeys};
use crate::checkout::Checkout;
use crate::checkout::email::Mailer;
use crate::checkout::faults::Faults;
use crate::checkout::payment::SimulatedGateway;
use crate::config::Settings;
use crate::db::{self, Database};
use crate::http::{self, AppState};

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Migrates the database, makes sure the admin exists, and binds the listener
    /// (port 0 picks a free port, which tests use).
    pub async fn build(
        settings: &Settings,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        db::create_and_migrate(&settings.database).await?;
        let db = Database::connect_lazy(&settings.database)?;
        if let Some(admin) = &settings.auth.admin {
            auth::ensure_admin(&db, admin)
                .await
                .context("creating the admin account")?;
        }

        let faults = Faults::new(settings.faults);
        let mailer = Mailer::new(&settings.smtp, faults.clone())?;
        let gateway = Arc::new(SimulatedGateway::new(faults.clone()));
        let state = AppState {
            checkout: Checkout::new(db.clone(), gateway, mailer),
            db,
            jwt: Arc::new(JwtKeys::new(
                &settings.auth.jwt_secret,
                settings.auth.jwt_ttl,
            )),
            faults,
            metrics,
        };
        let router = http::router(state, settings.http.body_limit_bytes);
        let listener = TcpListener::bind(settings.bind_addr)
            .await
            .with_context(|| format!("BIND_ADDR: cannot listen on {}", settings.bind_addr))?;
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then stops accepting and lets the requests
    /// in flight finish (a checkout in its 3 s included).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
