//! What the load generator measured: per operation, the count, the statuses and the
//! latency distribution (HdrHistogram); every answer sorted into what it says about the
//! service — a server error, a business outcome, a client mistake, or fine; the final
//! outcome of every checkout; and all of it over time, for the HTML report's charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde::Serialize;

use strum::{IntoStaticStr, VariantArray};

pub use super::operation::Operation;
use super::slo::{self, Events, Slo, Verdict};
use ecommerce_monolith::domain::{CheckoutMode, CheckoutOutcome};

/// What an answer says about the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// It did what was asked.
    Fine,
    /// The shop said no for a reason of the shop's: a declined card, sold out, an empty
    /// cart, too many attempts. Not the service failing.
    Business(Business),
    /// The request was wrong (a 4xx of any other kind).
    ClientMistake,
    /// The service failed: a 5xx, a timeout, no answer at all.
    ServerError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Business {
    Declined,
    SoldOut,
    EmptyCart,
    Throttled,
}

impl Business {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Sorts one answer of `operation`; `None` is no answer (timeout, connection failure).
pub fn classify(operation: Operation, status: Option<StatusCode>) -> Class {
    let Some(status) = status else {
        return Class::ServerError;
    };
    match status.as_u16() {
        200..=299 => Class::Fine,
        402 => Class::Business(Business::Declined),
        409 if matches!(operation, Operation::AddToCart | Operation::Checkout) => {
            Class::Business(Business::SoldOut)
        }
        400 if operation == Operation::Checkout => Class::Business(Business::EmptyCart),
        429 => Class::Business(Business::Throttled),
        500..=599 => Class::ServerError,
        _ => Class::ClientMistake,
    }
}

/// Latencies in microseconds, 1 µs to 10 min.
fn latency_histogram(significant_digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, significant_digits)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Counts of answers by class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassCounts {
    pub fine: u64,
    pub business: u64,
    pub client_mistakes: u64,
    pub server_errors: u64,
}

impl ClassCounts {
    fn add(&mut self, class: Class) {
        match class {
            Class::Fine => self.fine += 1,
            Class::Business(_) => self.business += 1,
            Class::ClientMistake => self.client_mistakes += 1,
            Class::ServerError => self.server_errors += 1,
        }
    }
}

/// One slice of the run, for the charts over time.
struct Window {
    latency_us: BTreeMap<Operation, Histogram<u64>>,
    classes: ClassCounts,
    checkouts: BTreeMap<CheckoutOutcome, u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            latency_us: BTreeMap::new(),
            classes: ClassCounts::default(),
            checkouts: BTreeMap::new(),
        }
    }
}

struct OperationStats {
    latency_us: Histogram<u64>,
    /// Failed requests by status (`network` when no answer came).
    errors: BTreeMap<String, u64>,
    classes: ClassCounts,
}

#[derive(Default)]
struct Inner {
    operations: BTreeMap<Operation, OperationStats>,
    checkouts: BTreeMap<CheckoutOutcome, u64>,
    business: BTreeMap<Business, u64>,
    windows: Vec<Window>,
    /// From the checkout request to the order confirmed, per mode.
    time_to_confirmed_us: BTreeMap<CheckoutMode, Histogram<u64>>,
    /// The checkout's answer, per mode (`blocking`: 201s, `async`: 202s).
    response_us: BTreeMap<CheckoutMode, Histogram<u64>>,
    unsettled: u64,
    purchases: u64,
    slo_events: BTreeMap<Slo, Events>,
}

/// Collects measurements from all shoppers; cheap enough to call per request.
pub struct Recorder {
    started: Instant,
    window: Duration,
    inner: Mutex<Inner>,
    requests: AtomicU64,
    errors: AtomicU64,
    server_errors: AtomicU64,
}

impl Recorder {
    /// `window`: the length of one slice of the charts over time.
    pub fn new(window: Duration) -> Self {
        Self {
            started: Instant::now(),
            window: window.max(Duration::from_millis(100)),
            inner: Mutex::default(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn window_of(&self, inner: &mut Inner) -> usize {
        let index = (self.started.elapsed().as_secs_f64() / self.window.as_secs_f64()) as usize;
        while inner.windows.len() <= index {
            inner.windows.push(Window::new());
        }
        index
    }

    /// One request of `operation`; `status` is `None` when no answer came.
    pub fn record(&self, operation: Operation, status: Option<StatusCode>, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let failed = status.is_none_or(|s| s.is_client_error() || s.is_server_error());
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let class = classify(operation, status);
        if class == Class::ServerError {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut inner = self.lock();
        let stats = inner
            .operations
            .entry(operation)
            .or_insert_with(|| OperationStats {
                latency_us: latency_histogram(3),
                errors: BTreeMap::new(),
                classes: ClassCounts::default(),
            });
        stats.latency_us.saturating_record(micros(took));
        stats.classes.add(class);
        if failed {
            let key = status.map_or_else(|| "network".to_string(), |s| s.as_u16().to_string());
            *stats.errors.entry(key).or_default() += 1;
        }
        if let Class::Business(kind) = class {
            *inner.business.entry(kind).or_default() += 1;
        }
        for (slo, good) in slo::request_events(operation, status, took) {
            inner.slo_events.entry(slo).or_default().add(good);
        }
        let index = self.window_of(&mut inner);
        let window = &mut inner.windows[index];
        window.classes.add(class);
        window
            .latency_us
            .entry(operation)
            .or_insert_with(|| latency_histogram(2))
            .saturating_record(micros(took));
    }

    /// How a checkout answered, in which mode (by its status), and how long it took.
    pub fn record_response(&self, mode: CheckoutMode, took: Duration) {
        self.lock()
            .response_us
            .entry(mode)
            .or_insert_with(|| latency_histogram(3))
            .saturating_record(micros(took));
    }

    /// A checkout's final outcome (after following a 202, once its order is settled).
    pub fn record_checkout(&self, outcome: CheckoutOutcome) {
        let mut inner = self.lock();
        *inner.checkouts.entry(outcome).or_default() += 1;
        let index = self.window_of(&mut inner);
        *inner.windows[index].checkouts.entry(outcome).or_default() += 1;
    }

    /// An order confirmed `took` after its checkout request.
    pub fn record_confirmed(&self, mode: CheckoutMode, took: Duration) {
        let mut inner = self.lock();
        inner
            .time_to_confirmed_us
            .entry(mode)
            .or_insert_with(|| latency_histogram(3))
            .saturating_record(micros(took));
        let (slo, good) = slo::confirmation_event(took);
        inner.slo_events.entry(slo).or_default().add(good);
    }

    /// An accepted order still pending when the load generator stopped following it.
    pub fn record_unsettled(&self) {
        self.lock().unsettled += 1;
    }

    /// A purchase a shopper meant to make, however many checkout requests it took (the
    /// impatient scenario sends some twice).
    pub fn record_purchase(&self) {
        self.lock().purchases += 1;
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    pub fn checkouts(&self) -> u64 {
        self.lock().checkouts.values().sum()
    }

    pub fn report(&self, run: RunInfo, elapsed: Duration, interrupted: bool) -> Report {
        let inner = self.lock();
        let requests = self.requests();
        let server_errors = self.server_errors();
        let window_seconds = self.window.as_secs_f64();
        let distribution = |h: &Histogram<u64>| Latency::of(h);
        Report {
            base_url: run.base_url,
            users: run.users,
            duration_seconds: elapsed.as_secs_f64(),
            interrupted,
            requests,
            errors: self.errors.load(Ordering::Relaxed),
            operations: inner
                .operations
                .iter()
                .map(|(name, stats)| {
                    (
                        name.as_str().to_string(),
                        OperationReport {
                            count: stats.latency_us.len(),
                            errors: stats.errors.clone(),
                            latency_ms: distribution(&stats.latency_us),
                            classes: stats.classes.clone(),
                            distribution_ms: percentile_curve(&stats.latency_us),
                        },
                    )
                })
                .collect(),
            checkouts: CheckoutOutcome::VARIANTS
                .iter()
                .map(|o| {
                    (
                        o.as_str().to_string(),
                        inner.checkouts.get(o).copied().unwrap_or(0),
                    )
                })
                .collect(),
            mode: run.mode,
            slos: Slo::VARIANTS
                .iter()
                .map(|&slo| {
                    let events = inner.slo_events.get(&slo).copied().unwrap_or_default();
                    Verdict::of(slo, events, elapsed)
                })
                .collect(),
            server_errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                server_errors as f64 / requests as f64
            },
            business_outcomes: Business::VARIANTS
                .iter()
                .map(|b| {
                    (
                        b.as_str().to_string(),
                        inner.business.get(b).copied().unwrap_or(0),
                    )
                })
                .collect(),
            client_mistakes: inner
                .operations
                .values()
                .map(|s| s.classes.client_mistakes)
                .sum(),
            checkout_response_ms: inner
                .response_us
                .iter()
                .map(|(mode, h)| (*mode, distribution(h)))
                .collect(),
            time_to_confirmed_ms: inner
                .time_to_confirmed_us
                .iter()
                .map(|(mode, h)| (*mode, distribution(h)))
                .collect(),
            unsettled_checkouts: inner.unsettled,
            purchases: inner.purchases,
            // The last slice is cut short by the end of the run: its rates would mislead.
            timeline: inner
                .windows
                .iter()
                .take(whole_windows(elapsed, self.window).max(1))
                .enumerate()
                .map(|(i, w)| TimelinePoint {
                    t_seconds: (i as f64 + 0.5) * window_seconds,
                    classes: w.classes.clone(),
                    latency_ms: w
                        .latency_us
                        .iter()
                        .map(|(op, h)| (op.as_str().to_string(), Latency::of(h)))
                        .collect(),
                    checkouts_per_second: w
                        .checkouts
                        .iter()
                        .map(|(o, n)| (o.as_str().to_string(), *n as f64 / window_seconds))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The SLO verdicts of several runs (`--compare`) side by side, one column per run.
pub fn render_slo_comparison(reports: &[Report]) -> String {
    let mut out = String::from(
        "\nSLOs side by side (error ratio, verdict, share of the 30-day budget burned):\n",
    );
    let _ = write!(out, "  {:<24}", "slo");
    for report in reports {
        let mode = report.mode.map_or("run", CheckoutMode::as_str);
        let _ = write!(out, " {mode:<40}");
    }
    out.push('\n');
    for &slo in Slo::VARIANTS {
        let _ = write!(out, "  {:<24}", slo.name());
        for report in reports {
            let cell =
                report
                    .slos
                    .iter()
                    .find(|v| v.slo == slo.name())
                    .map_or("–".to_string(), |v| {
                        format!(
                            "{:.4} {} {}",
                            v.error_ratio,
                            if v.held { "held" } else { "BROKEN" },
                            v.budget_burned_text()
                        )
                    });
            let _ = write!(out, " {cell:<40}");
        }
        out.push('\n');
    }
    out
}

/// How many whole slices of `window` fit in `elapsed`.
fn whole_windows(elapsed: Duration, window: Duration) -> usize {
    (elapsed.as_secs_f64() / window.as_secs_f64()) as usize
}

/// What the report says about the run itself.
pub struct RunInfo {
    pub base_url: String,
    pub users: usize,
    /// The checkout mode the run was made in, if the load generator set it.
    pub mode: Option<CheckoutMode>,
}

/// The latency at percentiles 0 to 100, for the distribution chart.
fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0]
        .iter()
        .map(|p| (*p, histogram.value_at_percentile(*p) as f64 / 1000.0))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub base_url: String,
    pub users: usize,
    pub duration_seconds: f64,
    /// True when the run was stopped by Ctrl-C or SIGTERM before its duration.
    pub interrupted: bool,
    pub requests: u64,
    /// Requests answered 4xx or 5xx, or not at all (see `server_errors` for what the
    /// service got wrong).
    pub errors: u64,
    pub operations: BTreeMap<String, OperationReport>,
    /// Final checkout outcomes, named as the service's `checkouts_total{outcome}`.
    pub checkouts: BTreeMap<String, u64>,
    /// `blocking` or `async` when the load generator set the mode (`--compare`).
    pub mode: Option<CheckoutMode>,
    /// The service's SLOs judged on this run (see `slo.yml`).
    pub slos: Vec<Verdict>,
    /// 5xx, timeouts and connection failures: the headline error count.
    pub server_errors: u64,
    /// `server_errors / requests`.
    pub error_rate: f64,
    /// The shop saying no for a reason of its own (declined, sold out, empty cart,
    /// throttled): not errors.
    pub business_outcomes: BTreeMap<String, u64>,
    /// Other 4xx: the requests were wrong.
    pub client_mistakes: u64,
    /// What the customer waited for at checkout, per mode.
    pub checkout_response_ms: BTreeMap<CheckoutMode, Latency>,
    /// From the checkout request to the order confirmed, per mode.
    pub time_to_confirmed_ms: BTreeMap<CheckoutMode, Latency>,
    /// Accepted orders still pending when the run ended.
    pub unsettled_checkouts: u64,
    /// Purchases the shoppers meant to make (the impatient scenario; 0 in the others).
    pub purchases: u64,
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    pub count: u64,
    /// Failed requests by HTTP status (`network` when no answer came).
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    pub classes: ClassCounts,
    /// (percentile, milliseconds) pairs.
    pub distribution_ms: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// The middle of the slice, in seconds since the start.
    pub t_seconds: f64,
    pub classes: ClassCounts,
    pub latency_ms: BTreeMap<String, Latency>,
    pub checkouts_per_second: BTreeMap<String, f64>,
}

impl Report {
    /// The SLO verdicts, first thing in the report.
    pub fn render_slos(&self) -> String {
        let mut out = String::from("SLOs (30-day objectives), judged on this run:\n");
        for verdict in &self.slos {
            let _ = writeln!(
                out,
                "  {:<8} {:<24} {:>6} % of {:<46} {:>7} of {:<7} error ratio {:.4}, burned {}",
                if verdict.held { "held" } else { "BROKEN" },
                verdict.slo,
                verdict.objective * 100.0,
                verdict.describe,
                verdict.good,
                verdict.total,
                verdict.error_ratio,
                verdict.budget_burned_text(),
            );
        }
        out.push('\n');
        out
    }

    /// The report as a table for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rate = self.requests as f64 / self.duration_seconds.max(0.001);
        let mode = self
            .mode
            .map(|m| format!(", {} checkout", m.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{} users for {:.1} s against {}{}{}: {} requests ({:.1}/s), {} server errors ({:.2} %)",
            self.users,
            self.duration_seconds,
            self.base_url,
            mode,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.requests,
            rate,
            self.server_errors,
            self.error_rate * 100.0,
        );
        out.push_str(&self.render_slos());
        let business = self
            .business_outcomes
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "business outcomes (the shop saying no, not errors): {business}; client mistakes: {}\n",
            self.client_mistakes
        );
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>8} {:>10} {:>10} {:>10} {:>10}  answers that were not 2xx",
            "operation", "count", "srv err", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for (name, op) in &self.operations {
            let by_status = op
                .errors
                .iter()
                .map(|(status, n)| format!("{status}×{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "{:<14} {:>7} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {}",
                name,
                op.count,
                op.classes.server_errors,
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
        for (mode, response) in &self.checkout_response_ms {
            let confirmed = self.time_to_confirmed_ms.get(mode);
            let _ = writeln!(
                out,
                "{} checkout: the customer waited p50 {:.1} ms / p99 {:.1} ms; \
                 confirmed after p50 {:.1} ms / p99 {:.1} ms",
                mode.as_str(),
                response.p50,
                response.p99,
                confirmed.map_or(f64::NAN, |c| c.p50),
                confirmed.map_or(f64::NAN, |c| c.p99),
            );
        }
        if self.unsettled_checkouts > 0 {
            let _ = writeln!(
                out,
                "{} accepted orders were still pending at the end",
                self.unsettled_checkouts
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_outcomes_are_not_errors() {
        assert_eq!(
            classify(Operation::Checkout, Some(StatusCode::PAYMENT_REQUIRED)),
            Class::Business(Business::Declined)
        );
        assert_eq!(
            classify(Operation::AddToCart, Some(StatusCode::CONFLICT)),
            Class::Business(Business::SoldOut)
        );
        assert_eq!(
            classify(Operation::Checkout, Some(StatusCode::BAD_REQUEST)),
            Class::Business(Business::EmptyCart)
        );
        assert_eq!(
            classify(Operation::Login, Some(StatusCode::TOO_MANY_REQUESTS)),
            Class::Business(Business::Throttled)
        );
        assert_eq!(
            classify(Operation::Register, Some(StatusCode::BAD_REQUEST)),
            Class::ClientMistake
        );
        assert_eq!(
            classify(Operation::Browse, Some(StatusCode::UNPROCESSABLE_ENTITY)),
            Class::ClientMistake
        );
        assert_eq!(
            classify(Operation::Checkout, Some(StatusCode::BAD_GATEWAY)),
            Class::ServerError
        );
        assert_eq!(classify(Operation::Browse, None), Class::ServerError);
        assert_eq!(
            classify(Operation::Checkout, Some(StatusCode::ACCEPTED)),
            Class::Fine
        );
    }

    #[test]
    fn the_report_counts_and_ranks_latencies() {
        let recorder = Recorder::new(Duration::from_secs(1));
        for ms in 1..=100 {
            recorder.record(
                Operation::Browse,
                Some(StatusCode::OK),
                Duration::from_millis(ms),
            );
        }
        recorder.record(
            Operation::AddToCart,
            Some(StatusCode::CONFLICT),
            Duration::from_millis(3),
        );
        recorder.record(Operation::Checkout, None, Duration::from_secs(3));
        recorder.record_checkout(CheckoutOutcome::Error);
        recorder.record_checkout(CheckoutOutcome::Success);

        let run = RunInfo {
            base_url: "http://x".into(),
            users: 2,
            mode: None,
        };
        let report = recorder.report(run, Duration::from_secs(10), false);
        assert_eq!(report.requests, 102);
        assert_eq!(report.errors, 2);
        assert_eq!(report.server_errors, 1, "the 409 is a business outcome");
        assert_eq!(report.business_outcomes["sold_out"], 1);
        let browse = &report.operations["browse"];
        assert_eq!(browse.count, 100);
        assert!((49.0..=51.0).contains(&browse.latency_ms.p50));
        assert!((99.0..=101.0).contains(&browse.latency_ms.max));
        assert_eq!(report.operations["add_to_cart"].errors["409"], 1);
        assert_eq!(report.operations["checkout"].errors["network"], 1);
        assert_eq!(report.checkouts["success"], 1);
        assert_eq!(report.checkouts["error"], 1);
        assert_eq!(report.checkouts["payment_declined"], 0);
        assert!(!report.timeline.is_empty());
        assert!(report.render().contains("checkout outcomes: "));
    }
}
