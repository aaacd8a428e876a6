//! The client side of ecommerce-monolith, in a crate of its own so that the server links
//! none of it: the load generator ([`loadgen`]: simulated shoppers, their report, its
//! HTML page and the SLO verdicts), the admin commands ([`admin_cli`]: faults, checkout
//! mode, dead letters), the lab that plays the experiments of `lab/` and judges them
//! ([`lab`]), and the HTTP client they share ([`client`]).
//!
//! From the service it takes only its names (`ecommerce_monolith::domain`), its telemetry
//! set-up and its shutdown signal; it talks to a running service through its HTTP API,
//! like any client (`tests/api/architecture.rs` holds it to that).

pub mod admin_cli;
pub mod client;
pub mod lab;
pub mod loadgen;
