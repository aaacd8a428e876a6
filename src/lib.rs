//! ecommerce-monolith: a deliberately monolithic, thoroughly instrumented e-commerce
//! backend for learning system design. See `docs/ARCHITECTURE.md` for the tour.

pub mod auth;
pub mod checkout;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod orders;
pub mod startup;
pub mod telemetry;
