//! Black-box tests: each drives a freshly spawned app over HTTP, as an API client would.
//! They need only a Postgres; tests that need other tools are in `tests/external/`.

mod architecture;
mod async_checkout;
mod auth;
mod cart;
mod checkout;
mod crashes_and_retries;
mod docs;
mod edges;
mod errors;
mod helpers;
mod lab;
mod lifecycle;
mod metrics;
mod money;
mod ops;
mod otlp;
mod products;
mod replicas;
mod resilience;
mod reviews_and_notifications;
mod storefront;
mod telemetry;
mod tools;
mod tour;
