//! ecommerce-monolith: a deliberately monolithic, thoroughly instrumented e-commerce
//! backend for learning system design. See `docs/ARCHITECTURE.md` for the tour.

pub mod admin_cli;
pub mod auth;
pub mod checkout;
pub mod client;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod inventory;
pub mod live_settings;
pub mod loadgen;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod reconciliation;
pub mod seed;
pub mod startup;
pub mod telemetry;
