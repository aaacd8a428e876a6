//! Tests that need tools beyond Postgres: Prometheus and promtool (the dashboards and
//! alerts proved against the real thing), docker-compose (the compose file), and the
//! benchmark harness (python3, wrk, pgbench), the Kubernetes manifests (kubectl,
//! kubernetes-validate), the contract (schemathesis), the HTML report (chromium), and a
//! Postgres server of their own to stop and start (initdb, pg_ctl). Without a tool its tests are skipped with
//! a note; with `CI=true` a missing tool fails them.

#[path = "../api/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../api/otlp.rs"]
#[allow(dead_code)]
mod otlp;

mod bench_smoke;
mod contract;
mod exemplars;
mod kubernetes;
mod loadgen_report;
mod outage;
mod postgres_cluster;
mod prometheus;
mod promtool;
mod require;
mod slo;
mod stack;
mod statement_counts;
mod storefront;
