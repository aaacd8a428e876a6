//! Prometheus metrics: every series the service exports is named and described here,
//! so this file is the catalogue the dashboards and alert rules are written against.
//!
//! The three latency histograms with exemplars are the exception: they are defined in
//! [`exemplars`] and rendered after these.
//!
//! Units are base units (`_seconds`), counters end in `_total`, and labels carry only
//! bounded values (route templates, step names, outcomes) — never ids or raw paths.

use std::time::Duration;

use anyhow::Context;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use super::exemplars::{self, DURATION_BUCKETS, LatencyHistograms};
use super::openmetrics;

pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_server_active_requests";
pub const CHECKOUT_STEP_DURATION: &str = "checkout_step_duration_seconds";
pub const CHECKOUTS: &str = "checkouts_total";
pub const CHECKOUTS_IN_FLIGHT: &str = "checkouts_in_flight";
pub const INVENTORY_LOCK_WAIT: &str = "checkout_inventory_lock_wait_seconds";
pub const PAYMENT_GATEWAY_DURATION: &str = "payment_gateway_duration_seconds";
pub const EMAIL_SEND_DURATION: &str = "email_send_duration_seconds";
pub const PAYMENTS_ORPHANED: &str = "payments_orphaned_total";
pub const PAYMENTS_ORPHANED_AMOUNT: &str = "payments_orphaned_amount_cents_total";
pub const PAYMENTS_REATTACHED: &str = "payments_reattached_total";
pub const PAYMENTS_WITHOUT_ORDER: &str = "payments_without_order";
pub const PAYMENTS_WITHOUT_ORDER_AMOUNT: &str = "payments_without_order_amount_cents";
pub const LOGIN_THROTTLED: &str = "login_attempts_throttled_total";
/// Money is counted in whole cents: counters are integers, and money is never a float.
pub const ORDERS_REVENUE: &str = "orders_revenue_cents_total";
pub const DB_POOL_SIZE: &str = "db_pool_connections_size";
pub const DB_POOL_IDLE: &str = "db_pool_connections_idle";
pub const DB_POOL_IN_USE: &str = "db_pool_connections_in_use";
pub const DB_POOL_MAX: &str = "db_pool_connections_max";
pub const DB_POOL_ACQUIRE_DURATION: &str = "db_pool_acquire_duration_seconds";
pub const FAULT_PAYMENT_DELAY: &str = "fault_payment_delay_seconds";
pub const FAULT_PAYMENT_SUCCESS_RATE: &str = "fault_payment_success_ratio";
pub const FAULT_EMAIL_DELAY: &str = "fault_email_delay_seconds";
pub const FAULT_EMAIL_OUTAGE: &str = "fault_email_outage";
pub const FAULT_EMAIL_HANG: &str = "fault_email_hang";
/// The resilience each dependency's client applies (label `dependency`).
pub const RESILIENCE_TIMEOUT: &str = "resilience_timeout_seconds";
/// Calls given up by a resilience timeout (label `dependency`).
pub const RESILIENCE_TIMEOUTS: &str = "resilience_timeouts_total";
/// A dependency's circuit breaker: 0 closed, 1 open, 2 half-open (label `dependency`).
pub const RESILIENCE_BREAKER_STATE: &str = "resilience_breaker_state";
/// Its changes of state (labels `dependency`, `to`).
pub const RESILIENCE_BREAKER_TRANSITIONS: &str = "resilience_breaker_transitions_total";
/// Calls it refused without making them (label `dependency`).
pub const RESILIENCE_BREAKER_REFUSALS: &str = "resilience_breaker_refusals_total";
/// Attempts made again after a failure (label `dependency`).
pub const RESILIENCE_RETRIES: &str = "resilience_retries_total";
/// Retries the budget refused (label `dependency`).
pub const RESILIENCE_RETRY_BUDGET_EXHAUSTED: &str = "resilience_retry_budget_exhausted_total";
/// The backoff waited before each retry (label `dependency`).
pub const RESILIENCE_RETRY_BACKOFF: &str = "resilience_retry_backoff_seconds";
/// Attempts per call, retries on (label `dependency`).
pub const RESILIENCE_CALL_ATTEMPTS: &str = "resilience_call_attempts";
/// Confirmation e-mails queued by the fallback (label `dependency`).
pub const RESILIENCE_FALLBACKS: &str = "resilience_fallbacks_total";
/// The retries, budget and fallback each client applies (labels `dependency`).
pub const RESILIENCE_RETRIES_ALLOWED: &str = "resilience_retries_allowed";
pub const RESILIENCE_RETRY_BUDGET: &str = "resilience_retry_budget_ratio";
pub const RESILIENCE_FALLBACK_ON: &str = "resilience_fallback_enabled";
/// The gateway's flapping (share of calls failed) and its capacity (0: unlimited).
pub const FAULT_PAYMENT_FLAP_RATE: &str = "fault_payment_flap_ratio";
pub const FAULT_PAYMENT_CAPACITY: &str = "fault_payment_capacity";
/// Calls the simulated gateway is serving now (what overloads it).
pub const PAYMENT_GATEWAY_IN_FLIGHT: &str = "payment_gateway_calls_in_flight";
pub const BUILD_INFO: &str = "ecommerce_monolith_build_info";
pub const CHECKOUT_MODE_ACTIVE: &str = "checkout_mode";
pub const LAB_PHASE: &str = "lab_phase";
pub const ORDERS_SETTLED: &str = "orders_settled_total";
pub const OUTBOX_PENDING: &str = "outbox_jobs_pending";
pub const OUTBOX_OLDEST_AGE: &str = "outbox_oldest_job_age_seconds";
pub const OUTBOX_DEAD: &str = "outbox_jobs_dead";
pub const OUTBOX_PROCESSED: &str = "outbox_jobs_processed_total";
pub const OUTBOX_ATTEMPTS: &str = "outbox_job_attempts_total";
pub const OUTBOX_JOB_DURATION: &str = "outbox_job_duration_seconds";
pub const OUTBOX_IN_FLIGHT: &str = "outbox_jobs_in_flight";
pub const OUTBOX_CONCURRENCY_LIMIT: &str = "outbox_concurrency_limit";
pub const OUTBOX_REPLAYED: &str = "outbox_jobs_replayed_total";

/// What `/metrics` serves: the series of the `metrics` facade (rendered by
/// metrics-exporter-prometheus) followed by the three latency histograms with exemplars
/// (see [`exemplars`]), each series exactly once.
#[derive(Clone)]
pub struct Exposition {
    handle: PrometheusHandle,
    latency: &'static LatencyHistograms,
}

/// Said at the top of the classic text, where a person reading `curl /metrics` looks.
const WHERE_EXEMPLARS_ARE: &str = "# The latency histograms http_server_request_duration_seconds, \
checkout_duration_seconds and order_time_to_confirmed_seconds are at the end. Their \
exemplars (trace ids) need OpenMetrics: curl -H 'Accept: application/openmetrics-text' /metrics\n";

impl Exposition {
    /// The classic text format (0.0.4), without exemplars: for people and tools.
    pub fn classic(&self) -> String {
        let mut body = String::from(WHERE_EXEMPLARS_ARE);
        body.push_str(&self.handle.render());
        // Writing to a String cannot fail.
        let _ = self.latency.encode_classic(&mut body);
        body
    }

    /// OpenMetrics with exemplars: what Prometheus asks for.
    pub fn openmetrics(&self) -> String {
        let mut body = String::new();
        openmetrics::append_converted(&self.handle.render(), &mut body);
        let _ = self.latency.encode_openmetrics(&mut body);
        body.push_str("# EOF\n");
        body
    }
}

/// Installs the global recorder and the exemplar histograms. Call once per process.
/// Each module then starts its own counters at zero (e.g. `checkout::start_metrics_at_zero`).
pub fn install_recorder() -> anyhow::Result<Exposition> {
    let handle = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .context("configuring histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full(RESILIENCE_CALL_ATTEMPTS.to_string()),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 11.0],
        )
        .context("configuring the attempts' buckets")?
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    describe_all();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(Exposition {
        handle,
        latency: exemplars::install(),
    })
}

/// Drains histogram samples into their buckets periodically, so memory stays flat
/// even when nothing scrapes `/metrics`.
pub fn spawn_upkeep(exposition: &Exposition) {
    let handle = exposition.handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Samples the state that is cheaper to read than to track: the pool and the process.
/// Called right before each scrape renders.
pub fn sample_gauges(pool: &PgPool, max_connections: u32) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    gauge!(DB_POOL_SIZE).set(f64::from(size));
    gauge!(DB_POOL_IDLE).set(f64::from(idle));
    gauge!(DB_POOL_IN_USE).set(f64::from(size.saturating_sub(idle)));
    gauge!(DB_POOL_MAX).set(f64::from(max_connections));
    metrics_process::Collector::default().collect();
}

fn describe_all() {
    describe_gauge!(
        HTTP_REQUESTS_IN_FLIGHT,
        "HTTP requests being served right now."
    );
    describe_counter!(
        ORDERS_SETTLED,
        "Orders that reached their end state after the payment, by mode and outcome (confirmed, payment_failed)."
    );
    describe_gauge!(
        CHECKOUT_MODE_ACTIVE,
        "1 for the checkout mode in force (blocking or async), 0 for the other."
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Outbox jobs waiting or running, by kind (charge_order, send_confirmation, send_cancellation)."
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unfinished outbox job, by kind: the queue's lag."
    );
    describe_gauge!(
        OUTBOX_DEAD,
        "Outbox jobs given up after OUTBOX_MAX_ATTEMPTS, by kind."
    );
    describe_counter!(
        OUTBOX_PROCESSED,
        "Outbox job runs by kind and outcome (done, retried, dead_lettered, lease_lost)."
    );
    describe_counter!(OUTBOX_ATTEMPTS, "Attempts made at outbox jobs, by kind.");
    describe_gauge!(
        OUTBOX_IN_FLIGHT,
        "Outbox jobs running now in this process, by kind (against outbox_concurrency_limit)."
    );
    describe_gauge!(
        OUTBOX_CONCURRENCY_LIMIT,
        "How many outbox jobs may run at once in this process (OUTBOX_CONCURRENCY)."
    );
    describe_counter!(
        OUTBOX_REPLAYED,
        "Dead-lettered outbox jobs put back in the queue by an admin, by kind."
    );
    describe_histogram!(
        OUTBOX_JOB_DURATION,
        Unit::Seconds,
        "Time one attempt at an outbox job took, by kind and outcome."
    );
    describe_histogram!(
        CHECKOUT_STEP_DURATION,
        Unit::Seconds,
        "Time spent in each of the checkout's steps (and the commit)."
    );
    describe_counter!(
        CHECKOUTS,
        "Checkouts by mode and outcome; every checkout that starts ends in exactly one (an asynchronous one when its payment is settled)."
    );
    describe_gauge!(
        CHECKOUTS_IN_FLIGHT,
        "Checkouts running now; each holds a pooled connection for its whole duration."
    );
    describe_histogram!(
        INVENTORY_LOCK_WAIT,
        Unit::Seconds,
        "Time a checkout waited for the inventory row locks (SELECT ... FOR UPDATE)."
    );
    describe_histogram!(
        PAYMENT_GATEWAY_DURATION,
        Unit::Seconds,
        "Duration of each call to the payment gateway (each attempt of a retried charge), by outcome (approved, declined, unavailable)."
    );
    describe_histogram!(
        EMAIL_SEND_DURATION,
        Unit::Seconds,
        "Duration of the confirmation e-mail, including the slow server, by outcome (sent, failed)."
    );
    describe_counter!(
        PAYMENTS_ORPHANED,
        "Payments charged by the gateway whose order was then lost, by reason (email_failed, database_error, shutdown)."
    );
    describe_counter!(
        PAYMENTS_ORPHANED_AMOUNT,
        "Money charged for orders that were then lost, in cents, by reason."
    );
    describe_counter!(
        PAYMENTS_REATTACHED,
        "Orphaned payments a retried checkout (same Idempotency-Key) attached to its order instead of charging again."
    );
    describe_gauge!(
        PAYMENTS_WITHOUT_ORDER,
        "Approved charges in the gateway's ledger with neither an order nor a refund (read every 5 s; includes checkouts between the charge and the commit)."
    );
    describe_gauge!(
        PAYMENTS_WITHOUT_ORDER_AMOUNT,
        "Money of the approved charges without an order or a refund, in cents."
    );
    describe_counter!(
        LOGIN_THROTTLED,
        "Login attempts refused with 429 because an account or an address spent its budget."
    );
    describe_counter!(ORDERS_REVENUE, "Total of confirmed orders, in cents.");
    describe_gauge!(DB_POOL_SIZE, "Open connections in the database pool.");
    describe_gauge!(DB_POOL_IDLE, "Idle connections in the database pool.");
    describe_gauge!(DB_POOL_IN_USE, "Connections checked out of the pool.");
    describe_gauge!(DB_POOL_MAX, "The pool's maximum size (DB_MAX_CONNECTIONS).");
    describe_histogram!(
        DB_POOL_ACQUIRE_DURATION,
        Unit::Seconds,
        "Time spent waiting for a connection from the pool."
    );
    describe_gauge!(
        FAULT_PAYMENT_DELAY,
        Unit::Seconds,
        "Injected payment gateway latency."
    );
    describe_gauge!(
        FAULT_PAYMENT_SUCCESS_RATE,
        "Injected probability that the gateway approves a payment."
    );
    describe_gauge!(
        FAULT_EMAIL_DELAY,
        Unit::Seconds,
        "Injected SMTP server latency."
    );
    describe_gauge!(
        FAULT_EMAIL_OUTAGE,
        "1 while an e-mail outage is injected, else 0."
    );
    describe_gauge!(
        FAULT_EMAIL_HANG,
        "1 while the mail server is made to hang (accept and never answer), else 0."
    );
    describe_gauge!(
        RESILIENCE_TIMEOUT,
        Unit::Seconds,
        "The timeout the client of a dependency applies to a call (label dependency: payment_gateway, mail_server); 0 when off."
    );
    describe_counter!(
        RESILIENCE_TIMEOUTS,
        "Calls to a dependency given up by its resilience timeout (label dependency)."
    );
    describe_gauge!(
        RESILIENCE_BREAKER_STATE,
        "A dependency's circuit breaker on this replica: 0 closed, 1 open, 2 half-open (label dependency)."
    );
    describe_counter!(
        RESILIENCE_BREAKER_TRANSITIONS,
        "Changes of state of a dependency's circuit breaker (labels dependency, to: closed, open, half_open)."
    );
    describe_counter!(
        RESILIENCE_BREAKER_REFUSALS,
        "Calls to a dependency its open circuit breaker refused without making them (label dependency)."
    );
    describe_counter!(
        RESILIENCE_RETRIES,
        "Calls to a dependency made again after a failed attempt (label dependency)."
    );
    describe_counter!(
        RESILIENCE_RETRY_BUDGET_EXHAUSTED,
        "Retries a dependency's retry budget refused: the call's failure was answered as it was (label dependency)."
    );
    describe_histogram!(
        RESILIENCE_RETRY_BACKOFF,
        Unit::Seconds,
        "The backoff waited before each retry (exponential, with jitter; label dependency)."
    );
    describe_histogram!(
        RESILIENCE_CALL_ATTEMPTS,
        "Attempts per call to a dependency whose client retries (label dependency)."
    );
    describe_counter!(
        RESILIENCE_FALLBACKS,
        "Confirmation e-mails the mail server's fallback queued in the outbox instead of failing the order (label dependency)."
    );
    describe_gauge!(
        RESILIENCE_RETRIES_ALLOWED,
        "How many times the client of a dependency calls again after a failure; 0 when off (label dependency)."
    );
    describe_gauge!(
        RESILIENCE_RETRY_BUDGET,
        "The share of calls retries may add (0: no budget; label dependency)."
    );
    describe_gauge!(
        RESILIENCE_FALLBACK_ON,
        "1 while the mail server's fallback (queue the e-mail, confirm the order) is on, else 0 (label dependency)."
    );
    describe_gauge!(
        FAULT_PAYMENT_FLAP_RATE,
        "Injected share of payment gateway calls that fail (flapping), 0 to 1."
    );
    describe_gauge!(
        FAULT_PAYMENT_CAPACITY,
        "Injected capacity of the payment gateway, in calls per second: beyond it the gateway slows down and turns calls away; 0 is unlimited."
    );
    describe_gauge!(
        PAYMENT_GATEWAY_IN_FLIGHT,
        "Calls the simulated payment gateway is serving now, from this replica."
    );
    describe_gauge!(
        LAB_PHASE,
        "1 while a lab experiment's phase runs (labels: experiment, phase), else 0."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
    metrics_process::Collector::default().describe();
}
