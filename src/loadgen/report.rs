//! What the load generator measured: per operation, the count, the errors by status and
//! the latency distribution (HdrHistogram); and the outcome of every checkout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde::Serialize;

use crate::checkout::CheckoutOutcome;

/// A checkout's outcome as the service's `checkouts_total{outcome}` names it, told
/// from the status of its answer.
pub fn checkout_outcome(status: Option<StatusCode>) -> CheckoutOutcome {
    match status.map(|s| s.as_u16()) {
        Some(201) => CheckoutOutcome::Success,
        Some(400) => CheckoutOutcome::EmptyCart,
        Some(402) => CheckoutOutcome::PaymentDeclined,
        Some(409) => CheckoutOutcome::InsufficientStock,
        Some(502) => CheckoutOutcome::EmailFailed,
        _ => CheckoutOutcome::Error,
    }
}

/// Collects measurements from all shoppers; cheap enough to call per request.
pub struct Recorder {
    operations: Mutex<BTreeMap<&'static str, OperationStats>>,
    checkouts: Mutex<BTreeMap<CheckoutOutcome, u64>>,
    requests: AtomicU64,
    errors: AtomicU64,
}

struct OperationStats {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            operations: Mutex::new(BTreeMap::new()),
            checkouts: Mutex::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// One request of `operation`; `status` is `None` when no answer came (network error).
    pub fn record(&self, operation: &'static str, status: Option<StatusCode>, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let failed = status.is_none_or(|s| s.is_client_error() || s.is_server_error());
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut operations = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        let stats = operations
            .entry(operation)
            .or_insert_with(|| OperationStats {
                latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                    .expect("constant bounds: 1 µs to 10 min at 3 significant digits"),
                errors: BTreeMap::new(),
            });
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        stats.latency_us.saturating_record(micros);
        if failed {
            let key = status.map_or_else(|| "network".to_string(), |s| s.as_u16().to_string());
            *stats.errors.entry(key).or_default() += 1;
        }
    }

    pub fn record_checkout(&self, status: Option<StatusCode>) {
        let mut checkouts = self.checkouts.lock().unwrap_or_else(|p| p.into_inner());
        *checkouts.entry(checkout_outcome(status)).or_default() += 1;
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn checkouts(&self) -> u64 {
        self.checkouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    pub fn report(
        &self,
        base_url: &str,
        users: usize,
        elapsed: Duration,
        interrupted: bool,
    ) -> Report {
        let operations = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        let checkouts = self.checkouts.lock().unwrap_or_else(|p| p.into_inner());
        let millis = |us: u64| us as f64 / 1000.0;
        Report {
            base_url: base_url.to_string(),
            users,
            duration_seconds: elapsed.as_secs_f64(),
            interrupted,
            requests: self.requests(),
            errors: self.errors(),
            operations: operations
                .iter()
                .map(|(name, stats)| {
                    let h = &stats.latency_us;
                    (
                        (*name).to_string(),
                        OperationReport {
                            count: h.len(),
                            errors: stats.errors.clone(),
                            latency_ms: Latency {
                                p50: millis(h.value_at_quantile(0.50)),
                                p95: millis(h.value_at_quantile(0.95)),
                                p99: millis(h.value_at_quantile(0.99)),
                                max: millis(h.max()),
                            },
                        },
                    )
                })
                .collect(),
            checkouts: CheckoutOutcome::ALL
                .iter()
                .map(|outcome| {
                    (
                        outcome.as_str().to_string(),
                        checkouts.get(outcome).copied().unwrap_or(0),
                    )
                })
                .collect(),
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub base_url: String,
    pub users: usize,
    pub duration_seconds: f64,
    /// True when the run was stopped by Ctrl-C or SIGTERM before its duration.
    pub interrupted: bool,
    pub requests: u64,
    pub errors: u64,
    pub operations: BTreeMap<String, OperationReport>,
    pub checkouts: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct OperationReport {
    pub count: u64,
    /// Failed requests by HTTP status (`network` when no answer came).
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Report {
    /// The report as a table for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rate = self.requests as f64 / self.duration_seconds.max(0.001);
        let _ = writeln!(
            out,
            "\n{} users for {:.1} s against {}{}: {} requests ({:.1}/s), {} errors\n",
            self.users,
            self.duration_seconds,
            self.base_url,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.requests,
            rate,
            self.errors
        );
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10}  errors by status",
            "operation", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for (name, op) in &self.operations {
            let errors: u64 = op.errors.values().sum();
            let by_status = op
                .errors
                .iter()
                .map(|(status, n)| format!("{status}×{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "{:<14} {:>7} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {}",
                name,
                op.count,
                errors,
                op.latency_ms.p50,
                op.latency_ms.p95,
                op.latency_ms.p99,
                op.latency_ms.max,
                by_status
            );
        }
        let outcomes = self
            .checkouts
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "\ncheckout outcomes: {outcomes}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_service_statuses() {
        let outcome = |status| checkout_outcome(status).as_str();
        assert_eq!(outcome(Some(StatusCode::CREATED)), "success");
        assert_eq!(
            outcome(Some(StatusCode::PAYMENT_REQUIRED)),
            "payment_declined"
        );
        assert_eq!(outcome(Some(StatusCode::CONFLICT)), "insufficient_stock");
        assert_eq!(outcome(Some(StatusCode::BAD_GATEWAY)), "email_failed");
        assert_eq!(outcome(Some(StatusCode::BAD_REQUEST)), "empty_cart");
        assert_eq!(outcome(Some(StatusCode::SERVICE_UNAVAILABLE)), "error");
        assert_eq!(outcome(None), "error");
    }

    #[test]
    fn the_report_counts_and_ranks_latencies() {
        let recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.record("browse", Some(StatusCode::OK), Duration::from_millis(ms));
        }
        recorder.record(
            "add_to_cart",
            Some(StatusCode::CONFLICT),
            Duration::from_millis(3),
        );
        recorder.record("checkout", None, Duration::from_secs(3));
        recorder.record_checkout(None);
        recorder.record_checkout(Some(StatusCode::CREATED));

        let report = recorder.report("http://x", 2, Duration::from_secs(10), false);
        assert_eq!(report.requests, 102);
        assert_eq!(report.errors, 2);
        let browse = &report.operations["browse"];
        assert_eq!(browse.count, 100);
        assert!((49.0..=51.0).contains(&browse.latency_ms.p50));
        assert!((99.0..=101.0).contains(&browse.latency_ms.max));
        assert_eq!(report.operations["add_to_cart"].errors["409"], 1);
        assert_eq!(report.operations["checkout"].errors["network"], 1);
        assert_eq!(report.checkouts["success"], 1);
        assert_eq!(report.checkouts["error"], 1);
        assert_eq!(report.checkouts["payment_declined"], 0);
        assert!(report.render().contains("checkout outcomes: "));
    }
}
