//! Black-box tests: each drives a freshly spawned app over HTTP, as an API client would.

mod auth;
mod bench_smoke;
mod cart;
mod checkout;
mod errors;
mod helpers;
mod lifecycle;
mod metrics;
mod ops;
mod otlp;
mod products;
mod reviews_and_notifications;
mod stack;
mod telemetry;
mod tools;
mod tour;
