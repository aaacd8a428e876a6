//! ecommerce-monolith: a deliberately monolithic, thoroughly instrumented e-commerce
//! backend for learning system design. See `docs/ARCHITECTURE.md` for the tour.
//!
//! Read the modules bottom-up; each one imports only modules above it in this list
//! (`tests/api/architecture.rs` holds the code to it):
//!
//! 1. [`domain`]: values that parse instead of validate, and the closed sets of names
//!    (checkout mode and outcomes, payment method, fault settings). Imports nothing.
//! 2. [`config`]: the environment, read once into typed settings.
//! 3. [`telemetry`]: spans, metrics, exemplars, logs — set up in one place.
//! 4. [`db`]: the pool, migrations, reachability, LISTEN/NOTIFY.
//! 5. [`live_settings`]: faults and the checkout mode, shared by every replica.
//! 6. The external systems' clients, peers of `db`: [`payment`] (the gateway and its
//!    ledger) and [`mailer`] (SMTP).
//! 7. The stores, every statement on their tables: [`catalog`], [`cart`],
//!    [`inventory`], [`orders`], [`reviews`], [`notifications`], [`auth::users`],
//!    [`outbox`], [`idempotency`], and [`reconciliation`] (the ledger against orders).
//! 8. [`checkout`]: the eleven steps, the asynchronous checkout and its workers.
//! 9. [`http`]: one module per resource, the error type, the extractors.
//! 10. [`startup`]: wiring, graceful shutdown ([`shutdown`] is the signal).
//!
//! Beside them, [`seed`], the demo catalog. The client-side tools — the load generator,
//! the admin commands, the lab — are the `ecommerce-lab` crate (`crates/lab/`).

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod inventory;
pub mod live_settings;
pub mod mailer;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod payment;
pub mod reconciliation;
pub mod reviews;
pub mod seed;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
