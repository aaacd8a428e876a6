//! What every handler can reach: the service's parts, shared behind one `Arc`.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tool_links::ToolLinks;
use crate::auth::{JwtKeys, LoginThrottle};
use crate::checkout::Checkout;
use crate::config::StorefrontSettings;
use crate::db::Database;
use crate::live_settings::LiveSettings;
use crate::payment::PaymentGateway;
use crate::telemetry::metrics::Exposition;

/// What every handler can reach: one `Arc`, so that the extractors that clone it per
/// request (every `State<AppState>`) pay one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Services {
    pub db: Database,
    pub jwt: Arc<JwtKeys>,
    pub login_throttle: Arc<LoginThrottle>,
    pub checkout: Checkout,
    pub gateway: Arc<dyn PaymentGateway>,
    /// Fault injection and the checkout mode, shared by every replica.
    pub live: LiveSettings,
    /// Work that must finish even if its client goes away (a checkout); shutdown waits
    /// for it until the deadline.
    pub in_flight: TaskTracker,
    /// Cancelled at SIGTERM: new requests are refused (but `/metrics` and `/health`).
    pub draining: CancellationToken,
    /// `None` when metrics are switched off (or in tests that run several apps in
    /// one process, where the global recorder cannot tell them apart).
    pub metrics: Option<Exposition>,
    /// What the shop page at `/` is told (links, browser trace export, demo customer).
    pub storefront: Arc<StorefrontSettings>,
    /// Which of the page's tool links answered lately.
    pub tool_links: ToolLinks,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl FromRef<AppState> for Arc<StorefrontSettings> {
    fn from_ref(state: &AppState) -> Self {
        state.storefront.clone()
    }
}
