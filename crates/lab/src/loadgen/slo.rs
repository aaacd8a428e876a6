//! The service's four SLOs, judged on one load-generator run: the same events as the
//! recording rules in `slo.yml` (a test holds the two together), counted from the
//! client's side. Per SLO the report says how many events were good, whether the
//! objective held over the run, and how much of a 30-day error budget the run burned.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use strum::{IntoStaticStr, VariantArray};

use super::operation::Operation;

/// The SLOs of `slo.yml`, by their `sloth_slo` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "kebab-case")]
pub enum Slo {
    /// 99 % of checkout requests answered within 500 ms.
    CheckoutResponsiveness,
    /// 99.5 % of checkout requests not answered 5xx.
    CheckoutAvailability,
    /// 99 % of orders confirmed within 10 s of their checkout request.
    OrderConfirmation,
    /// 99 % of catalog reads (`GET /api/products…`) answered within 100 ms.
    CatalogResponsiveness,
}

/// The period every objective is set over.
pub const PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

impl Slo {
    /// The `sloth_slo` label of its rules in `slo.yml`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The share of good events the objective asks for over [`PERIOD`].
    pub fn objective(self) -> f64 {
        match self {
            Slo::CheckoutAvailability => 0.995,
            Slo::CheckoutResponsiveness | Slo::OrderConfirmation | Slo::CatalogResponsiveness => {
                0.99
            }
        }
    }

    /// For an SLO about time: the latency within which an event is good (a bucket
    /// boundary of the service's histograms).
    pub fn threshold(self) -> Option<Duration> {
        match self {
            Slo::CheckoutResponsiveness => Some(Duration::from_millis(500)),
            Slo::CheckoutAvailability => None,
            Slo::OrderConfirmation => Some(Duration::from_secs(10)),
            Slo::CatalogResponsiveness => Some(Duration::from_millis(100)),
        }
    }

    /// What one event is, and when it is good, for a reader of the report.
    pub fn describe(self) -> &'static str {
        match self {
            Slo::CheckoutResponsiveness => "checkout requests answered within 500 ms",
            Slo::CheckoutAvailability => "checkout requests not answered 5xx",
            Slo::OrderConfirmation => "orders confirmed within 10 s of the checkout",
            Slo::CatalogResponsiveness => "catalog reads answered within 100 ms",
        }
    }
}

/// The SLO events one request makes: `(slo, good)` pairs. A request that got no answer
/// at all (a timeout, a refused connection) counts as bad, though the service — and so
/// Prometheus — never recorded it: the customer still waited for nothing.
pub fn request_events(
    operation: Operation,
    status: Option<StatusCode>,
    took: Duration,
) -> Vec<(Slo, bool)> {
    let within = |slo: Slo| status.is_some() && slo.threshold().is_none_or(|t| took <= t);
    match operation {
        Operation::Checkout => vec![
            (
                Slo::CheckoutResponsiveness,
                within(Slo::CheckoutResponsiveness),
            ),
            (
                Slo::CheckoutAvailability,
                status.is_some_and(|s| !s.is_server_error()),
            ),
        ],
        // Every GET /api/products… the load generator makes.
        Operation::Browse | Operation::ViewProduct | Operation::Catalog => vec![(
            Slo::CatalogResponsiveness,
            within(Slo::CatalogResponsiveness),
        )],
        _ => Vec::new(),
    }
}

/// The SLO event of an order confirmed `after` its checkout request.
pub fn confirmation_event(after: Duration) -> (Slo, bool) {
    let good = Slo::OrderConfirmation
        .threshold()
        .is_none_or(|limit| after <= limit);
    (Slo::OrderConfirmation, good)
}

/// Good and total events of one SLO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    pub good: u64,
    pub total: u64,
}

impl Events {
    pub fn add(&mut self, good: bool) {
        self.total += 1;
        self.good += u64::from(good);
    }
}

/// One SLO judged on a run.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The `sloth_slo` label.
    pub slo: &'static str,
    pub describe: &'static str,
    pub objective: f64,
    pub good: u64,
    pub total: u64,
    /// Bad over total (0 without events): what `slo:sli_error:ratio_rate<window>` says
    /// for a window that holds exactly this run.
    pub error_ratio: f64,
    /// Whether the run kept to the objective (true without events: nothing to judge).
    pub held: bool,
    /// The error ratio over the error budget (1 - objective): how many times faster than
    /// sustainable the run spent the budget.
    pub burn_rate: f64,
    /// The share of a 30-day error budget this run spent: burn rate × run / 30 days.
    pub budget_burned: f64,
}

impl Verdict {
    pub fn of(slo: Slo, events: Events, run: Duration) -> Self {
        let bad = events.total - events.good;
        let error_ratio = if events.total == 0 {
            0.0
        } else {
            bad as f64 / events.total as f64
        };
        let budget = 1.0 - slo.objective();
        let burn_rate = error_ratio / budget;
        Self {
            slo: slo.name(),
            describe: slo.describe(),
            objective: slo.objective(),
            good: events.good,
            total: events.total,
            error_ratio,
            // Compared in whole events, so that 99 good of 100 holds a 99 % objective
            // whatever floating point makes of 0.01.
            held: (bad as f64) <= (budget * events.total as f64) + 1e-9,
            burn_rate,
            budget_burned: burn_rate * run.as_secs_f64() / PERIOD.as_secs_f64(),
        }
    }

    /// "0.0023 % of the 30-day budget (burn rate 1.4×)": two significant digits, as a
    /// short run burns a small share.
    pub fn budget_burned_text(&self) -> String {
        if self.total == 0 {
            return "no events".to_string();
        }
        let percent = self.budget_burned * 100.0;
        let decimals = if percent > 0.0 && percent < 10.0 {
            // Two significant digits: 0.0023, 0.12, 4.5.
            usize::try_from((1.0 - percent.log10().floor()).max(0.0) as i64).unwrap_or(0)
        } else {
            0
        };
        format!(
            "{percent:.decimals$} % of the 30-day budget (burn rate {:.1}×)",
            self.burn_rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_checkout_is_slow_but_available() {
        let events = request_events(
            Operation::Checkout,
            Some(StatusCode::CREATED),
            Duration::from_secs(3),
        );
        assert_eq!(
            events,
            vec![
                (Slo::CheckoutResponsiveness, false),
                (Slo::CheckoutAvailability, true)
            ]
        );
        let events = request_events(
            Operation::Checkout,
            Some(StatusCode::SERVICE_UNAVAILABLE),
            Duration::from_millis(3),
        );
        assert_eq!(
            events,
            vec![
                (Slo::CheckoutResponsiveness, true),
                (Slo::CheckoutAvailability, false)
            ]
        );
    }

    #[test]
    fn catalog_reads_count_and_other_requests_do_not() {
        let read = |op, ms| request_events(op, Some(StatusCode::OK), Duration::from_millis(ms));
        assert_eq!(
            read(Operation::ViewProduct, 100),
            vec![(Slo::CatalogResponsiveness, true)]
        );
        assert_eq!(
            read(Operation::Browse, 101),
            vec![(Slo::CatalogResponsiveness, false)]
        );
        assert!(read(Operation::AddToCart, 1).is_empty());
        assert_eq!(
            request_events(Operation::ViewProduct, None, Duration::from_millis(1)),
            vec![(Slo::CatalogResponsiveness, false)],
            "no answer is a bad event"
        );
    }

    #[test]
    fn the_verdict_burns_budget_in_proportion_to_the_run() {
        // A minute of every checkout slow: 100 times the sustainable rate, for one
        // minute of 30 days.
        let all_bad = Events { good: 0, total: 60 };
        let verdict = Verdict::of(
            Slo::CheckoutResponsiveness,
            all_bad,
            Duration::from_secs(60),
        );
        assert!(!verdict.held);
        assert!((verdict.burn_rate - 100.0).abs() < 1e-9);
        assert!((verdict.budget_burned - 100.0 * 60.0 / (30.0 * 86_400.0)).abs() < 1e-12);

        let at_the_line = Events {
            good: 99,
            total: 100,
        };
        assert!(Verdict::of(Slo::CatalogResponsiveness, at_the_line, Duration::ZERO).held);
        let none = Verdict::of(Slo::OrderConfirmation, Events::default(), Duration::ZERO);
        assert!(none.held && none.error_ratio == 0.0);
        assert_eq!(none.budget_burned_text(), "no events");
        assert_eq!(
            verdict.budget_burned_text(),
            "0.23 % of the 30-day budget (burn rate 100.0×)"
        );
        assert_eq!(
            confirmation_event(Duration::from_secs(10)),
            (Slo::OrderConfirmation, true)
        );
    }
}
