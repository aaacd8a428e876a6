//! ecommerce-monolith: a deliberately monolithic, thoroughly instrumented e-commerce
//! backend for learning system design. See `docs/ARCHITECTURE.md` for the tour.
//!
//! Read the modules from the bottom of the layering up: the values ([`domain`]); the
//! settings and instruments ([`config`], [`telemetry`], [`db`], [`live_settings`]); the
//! external systems' clients ([`payment`], [`mailer`], and their [`resilience`]); the
//! stores, every statement on their tables ([`catalog`], [`cart`], [`inventory`],
//! [`orders`], [`reviews`], [`notifications`], [`auth`], [`outbox`], [`idempotency`], [`reconciliation`]); the
//! [`checkout`]; the API ([`http`]); the wiring ([`startup`], [`shutdown`]). The layers,
//! numbered, and which module may import which, are one table in `docs/ARCHITECTURE.md`
//! ("Where does X live"), which `tests/api/architecture.rs` holds the code to.
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
pub mod resilience;
pub mod reviews;
pub mod seed;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
