//! The rungs between the blocking checkout and the asynchronous one, as the clients of
//! the payment gateway and the mail server apply them (`crate::domain::Policy`, live):
//!
//! - a **timeout**: a call that takes longer is given up, so a dependency that hangs
//!   holds a checkout, its row locks and its pooled connection no longer than that;
//! - **retries**: a failed attempt (an error or a timeout) is made again, up to
//!   `retries` times, after an exponential backoff with jitter (backon's), as long as
//!   the **retry budget** allows — retries may add at most `retry_budget_percent` of
//!   the calls, so a dependency that fails because it is overloaded is not sent more;
//! - a **circuit breaker**: after `breaker_failures` failures in a row it opens, and
//!   every call is refused at once — no wait, no connection held — for
//!   `breaker_open_ms`; then it lets `breaker_probes` calls through (half-open): their
//!   success closes it, a failure opens it again.
//!
//! (The fourth rung, the mail server's fallback, is the checkout's: it queues the
//! e-mail in the outbox.) Each client keeps its own breaker and budget (per replica, as
//! a client library would). What a rung does is counted per dependency
//! (`resilience_timeouts_total`, `resilience_retries_total`,
//! `resilience_retry_budget_exhausted_total`, `resilience_breaker_refusals_total`,
//! `resilience_breaker_transitions_total`, `resilience_call_attempts`), the breaker's
//! state is a gauge, a call's span says what happened to it, and with retries on each
//! attempt is a span of its own (`resilience.attempt`: its number, the backoff waited
//! before it, its outcome) and an entry of the request's `Server-Timing`.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use metrics::{counter, gauge, histogram};
use tracing::Instrument;
use tracing::field::Empty;

use crate::domain::{Dependency, Policy};
use crate::telemetry::metrics::{
    RESILIENCE_BREAKER_REFUSALS, RESILIENCE_BREAKER_STATE, RESILIENCE_BREAKER_TRANSITIONS,
    RESILIENCE_CALL_ATTEMPTS, RESILIENCE_FALLBACKS, RESILIENCE_RETRIES, RESILIENCE_RETRY_BACKOFF,
    RESILIENCE_RETRY_BUDGET_EXHAUSTED, RESILIENCE_TIMEOUTS,
};
use crate::telemetry::server_timing;

/// Why a rung answered instead of the dependency.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Refusal {
    /// The call was given up after its timeout.
    #[error("no answer within the {}'s timeout of {} ms", .dependency.as_str(), .after.as_millis())]
    GaveUp {
        dependency: Dependency,
        after: Duration,
    },
    /// The breaker is open: the call was not made.
    #[error("the {}'s circuit breaker is open (retry in {} ms)", .dependency.as_str(), .retry_after.as_millis())]
    Open {
        dependency: Dependency,
        retry_after: Duration,
    },
}

/// The states of a circuit breaker, as the `resilience_breaker_state` gauge shows them
/// (0, 1, 2) and its transitions' `to` label names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, strum::VariantArray)]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// The state machine of one breaker, on a clock it is given (so that its tests need no
/// sleeps).
#[derive(Debug, Clone, Default)]
pub struct BreakerCore {
    state: BreakerState,
    /// Failures in a row while closed.
    failures: u32,
    /// When it last opened, or began a half-open round.
    since: Option<Instant>,
    /// Half-open: probes let through and not yet answered (reserved ones included),
    /// those reserved by a caller that calls later, and those that succeeded.
    probes_in_flight: u32,
    probes_reserved: u32,
    probes_succeeded: u32,
}

impl BreakerCore {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go through now; if not, how long until a probe may. An open
    /// breaker whose time is up turns half-open and lets its probes through; a half-open
    /// round whose probes never answered (their callers gave up before calling) starts
    /// again after the open time.
    ///
    /// `reserve`: the caller calls later (the checkout asks before the charge, calls at
    /// the e-mail); the next call without `reserve` is taken as that one.
    pub fn admit(&mut self, now: Instant, policy: Policy, reserve: bool) -> Result<(), Duration> {
        if !policy.has_breaker() {
            *self = Self::default();
            return Ok(());
        }
        let since = self.since.unwrap_or(now);
        let time_up = now >= since + policy.breaker_open();
        match self.state {
            BreakerState::Closed => return Ok(()),
            BreakerState::Open if !time_up => return Err(since + policy.breaker_open() - now),
            BreakerState::Open => self.half_open(now),
            BreakerState::HalfOpen if !reserve && self.probes_reserved > 0 => {
                // The reserved caller's call: its place is already counted.
                self.probes_reserved -= 1;
                return Ok(());
            }
            BreakerState::HalfOpen if time_up => self.half_open(now),
            BreakerState::HalfOpen if self.probes_in_flight < policy.breaker_probes => {}
            // Enough probes are out: the rest wait for their answer.
            BreakerState::HalfOpen => return Err(Duration::ZERO),
        }
        self.probes_in_flight += 1;
        if reserve {
            self.probes_reserved += 1;
        }
        Ok(())
    }

    /// What an admitted call's outcome does to the breaker.
    pub fn record(&mut self, now: Instant, policy: Policy, failed: bool) {
        if !policy.has_breaker() {
            return;
        }
        match (self.state, failed) {
            (BreakerState::Closed, false) => self.failures = 0,
            (BreakerState::Closed, true) => {
                self.failures += 1;
                if self.failures >= policy.breaker_failures {
                    self.open(now);
                }
            }
            (BreakerState::HalfOpen, false) => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.probes_succeeded += 1;
                if self.probes_succeeded >= policy.breaker_probes {
                    *self = Self::default();
                }
            }
            (BreakerState::HalfOpen, true) => self.open(now),
            // A call let through before it opened: its answer changes nothing now.
            (BreakerState::Open, _) => {}
        }
    }

    fn open(&mut self, now: Instant) {
        *self = Self {
            state: BreakerState::Open,
            since: Some(now),
            ..Self::default()
        };
    }

    /// A new half-open round, its probes not yet let through.
    fn half_open(&mut self, now: Instant) {
        *self = Self {
            state: BreakerState::HalfOpen,
            since: Some(now),
            ..Self::default()
        };
    }
}

/// A retry budget: a token bucket in which each first call earns
/// `retry_budget_percent` hundredths of a retry and each retry spends a whole one. So
/// retries add at most that share of the calls, whatever fails; a few may be saved up
/// for a quiet moment's blip.
#[derive(Debug, Clone, Default)]
pub struct RetryBudget {
    /// Hundredths of a retry, so that the sums are exact.
    hundredths: u32,
}

impl RetryBudget {
    /// At most ten retries saved up.
    const MOST: u32 = 10 * 100;

    /// A first call: earns its share (nothing without a budget).
    pub fn earn(&mut self, policy: Policy) {
        self.hundredths = (self.hundredths + policy.retry_budget_percent).min(Self::MOST);
    }

    /// Whether a retry may go: always without a budget, else if a whole retry was earned.
    pub fn spend(&mut self, policy: Policy) -> bool {
        if policy.retry_budget_percent == 0 {
            return true;
        }
        let allowed = self.hundredths >= 100;
        if allowed {
            self.hundredths -= 100;
        }
        allowed
    }
}

/// What became of one attempt, as its span and `Server-Timing` say.
fn outcome<T>(answer: &Result<T, Refusal>, failed: &impl Fn(&T) -> bool) -> &'static str {
    match answer {
        Ok(value) if failed(value) => "failed",
        Ok(_) => "ok",
        Err(Refusal::GaveUp { .. }) => "timed_out",
        Err(Refusal::Open { .. }) => "refused",
    }
}

/// A dependency's client-side rungs: its breaker, its retry budget, and the timeout
/// and retries it applies.
pub struct Rungs {
    dependency: Dependency,
    breaker: Mutex<BreakerCore>,
    budget: Mutex<RetryBudget>,
}

impl Rungs {
    pub fn new(dependency: Dependency) -> Self {
        Self {
            dependency,
            breaker: Mutex::new(BreakerCore::default()),
            budget: Mutex::new(RetryBudget::default()),
        }
    }

    /// Runs the call that `attempt` makes under `policy`: refused at once while the
    /// breaker is open, each attempt given up after the timeout, a failed one made
    /// again after a backoff while retries and the budget allow; `failed` tells which
    /// answers count against the dependency (a declined card does not: the gateway
    /// worked). Returns the last attempt's answer.
    pub async fn call<T, F: Future<Output = T>>(
        &self,
        policy: Policy,
        failed: impl Fn(&T) -> bool,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, Refusal> {
        let dependency = self.dependency.as_str();
        lock(&self.budget).earn(policy);
        // The waits before the retries; none built for a call without retries.
        let mut backoffs = (policy.retries > 0).then(|| {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(policy.retry_backoff_ms))
                .with_max_delay(Duration::from_secs(60))
                .with_max_times(policy.retries as usize)
                .with_jitter()
                .build()
        });
        let (mut number, mut waited) = (1_u32, Duration::ZERO);
        loop {
            let answer = if policy.retries == 0 {
                self.attempt(policy, &failed, attempt()).await
            } else {
                self.observed_attempt(policy, &failed, attempt(), number, waited)
                    .await
            };
            let retry = match &answer {
                Ok(value) if failed(value) => backoffs.as_mut().and_then(Iterator::next),
                Err(Refusal::GaveUp { .. }) => backoffs.as_mut().and_then(Iterator::next),
                _ => None,
            };
            let exhausted = retry.is_some() && !lock(&self.budget).spend(policy);
            if exhausted {
                counter!(RESILIENCE_RETRY_BUDGET_EXHAUSTED, "dependency" => dependency)
                    .increment(1);
                tracing::Span::current().record("resilience.retry_budget", "exhausted");
            }
            let (Some(wait), false) = (retry, exhausted) else {
                if policy.retries > 0 {
                    histogram!(RESILIENCE_CALL_ATTEMPTS, "dependency" => dependency)
                        .record(f64::from(number));
                    tracing::Span::current().record("resilience.attempts", number);
                }
                return answer;
            };
            counter!(RESILIENCE_RETRIES, "dependency" => dependency).increment(1);
            histogram!(RESILIENCE_RETRY_BACKOFF, "dependency" => dependency)
                .record(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
            (number, waited) = (number + 1, wait);
        }
    }

    /// One attempt in its own span, noted in the request's `Server-Timing`.
    async fn observed_attempt<T>(
        &self,
        policy: Policy,
        failed: &impl Fn(&T) -> bool,
        call: impl Future<Output = T>,
        number: u32,
        waited: Duration,
    ) -> Result<T, Refusal> {
        let span = tracing::info_span!(
            "resilience.attempt",
            resilience.dependency = self.dependency.as_str(),
            resilience.attempt = number,
            resilience.backoff_ms = waited.as_millis() as u64,
            resilience.outcome = Empty,
            resilience.timed_out = Empty,
            resilience.breaker = Empty,
        );
        let started = Instant::now();
        let answer = self
            .attempt(policy, failed, call)
            .instrument(span.clone())
            .await;
        let outcome = outcome(&answer, failed);
        span.record("resilience.outcome", outcome);
        let description = if number == 1 {
            format!("attempt 1: {outcome}")
        } else {
            format!(
                "attempt {number} after {} ms: {outcome}",
                waited.as_millis()
            )
        };
        server_timing::note_described(self.attempt_step(), started.elapsed(), description);
        answer
    }

    /// The `Server-Timing` name of an attempt: `payment_gateway.attempt`.
    fn attempt_step(&self) -> &'static str {
        match self.dependency {
            Dependency::PaymentGateway => "payment_gateway.attempt",
            Dependency::MailServer => "mail_server.attempt",
        }
    }

    /// One attempt: through the breaker, under the timeout.
    async fn attempt<T>(
        &self,
        policy: Policy,
        failed: &impl Fn(&T) -> bool,
        call: impl Future<Output = T>,
    ) -> Result<T, Refusal> {
        self.admit(policy, false)?;
        let answer = match policy.timeout() {
            None => Ok(call.await),
            Some(after) => tokio::time::timeout(after, call).await.map_err(|_| {
                counter!(RESILIENCE_TIMEOUTS, "dependency" => self.dependency.as_str())
                    .increment(1);
                tracing::Span::current().record("resilience.timed_out", true);
                Refusal::GaveUp {
                    dependency: self.dependency,
                    after,
                }
            }),
        };
        let failure = answer.as_ref().map_or(true, failed);
        self.change(|breaker| breaker.record(Instant::now(), policy, failure));
        answer
    }

    /// Lets a call through, or refuses it (the breaker open, or its probes all out).
    fn admit(&self, policy: Policy, reserve: bool) -> Result<(), Refusal> {
        let admitted = self.change(|breaker| breaker.admit(Instant::now(), policy, reserve));
        admitted.map_err(|retry_after| self.refused(retry_after))
    }

    /// Asks before a call made later (the checkout, before it charges): refused (and
    /// counted) while the breaker is open; half-open, a probe's place is kept for the
    /// caller, so only as many callers as probes go on to take money.
    pub fn reserve(&self, policy: Policy) -> Result<(), Refusal> {
        self.admit(policy, true)
    }

    fn refused(&self, retry_after: Duration) -> Refusal {
        counter!(RESILIENCE_BREAKER_REFUSALS, "dependency" => self.dependency.as_str())
            .increment(1);
        tracing::Span::current().record("resilience.breaker", "refused");
        let step = match self.dependency {
            Dependency::PaymentGateway => "payment_gateway.breaker",
            Dependency::MailServer => "mail_server.breaker",
        };
        server_timing::note_described(step, Duration::ZERO, "open: refused".into());
        Refusal::Open {
            dependency: self.dependency,
            retry_after,
        }
    }

    /// Applies `change` to the breaker; a new state is logged, counted and shown.
    fn change<R>(&self, change: impl FnOnce(&mut BreakerCore) -> R) -> R {
        let mut breaker = lock(&self.breaker);
        let before = breaker.state();
        let result = change(&mut breaker);
        let after = breaker.state();
        drop(breaker);
        if after != before {
            let dependency = self.dependency.as_str();
            tracing::warn!(
                dependency,
                from = before.as_str(),
                to = after.as_str(),
                "circuit breaker"
            );
            counter!(RESILIENCE_BREAKER_TRANSITIONS, "dependency" => dependency, "to" => after.as_str())
                .increment(1);
            gauge!(RESILIENCE_BREAKER_STATE, "dependency" => dependency).set(after.gauge_value());
        }
        result
    }
}

/// The lock, even if a panic elsewhere poisoned it: the state inside is whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every dependency's counters and gauge at zero from the start, so a rate is defined
/// before the first call is given up or refused.
pub fn start_metrics_at_zero() {
    for &dependency in <Dependency as strum::VariantArray>::VARIANTS {
        let name = dependency.as_str();
        counter!(RESILIENCE_TIMEOUTS, "dependency" => name).absolute(0);
        counter!(RESILIENCE_RETRIES, "dependency" => name).absolute(0);
        counter!(RESILIENCE_RETRY_BUDGET_EXHAUSTED, "dependency" => name).absolute(0);
        counter!(RESILIENCE_FALLBACKS, "dependency" => name).absolute(0);
        counter!(RESILIENCE_BREAKER_REFUSALS, "dependency" => name).absolute(0);
        gauge!(RESILIENCE_BREAKER_STATE, "dependency" => name).set(0.0);
        for &to in <BreakerState as strum::VariantArray>::VARIANTS {
            counter!(RESILIENCE_BREAKER_TRANSITIONS, "dependency" => name, "to" => to.as_str())
                .absolute(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, open_ms: u64, probes: u32) -> Policy {
        Policy {
            breaker_failures: failures,
            breaker_open_ms: open_ms,
            breaker_probes: probes,
            ..Policy::OFF
        }
    }

    const CALL: bool = false;
    const RESERVE: bool = true;

    #[test]
    fn closed_open_half_open_closed() {
        let policy = breaker(3, 1000, 2);
        let start = Instant::now();
        let mut core = BreakerCore::default();
        // Two failures, a success: the count starts again.
        for failed in [true, true, false, true, true] {
            assert_eq!(core.admit(start, policy, CALL), Ok(()));
            core.record(start, policy, failed);
        }
        assert_eq!(core.state(), BreakerState::Closed);
        // The third failure in a row opens it: refused, with the time left.
        core.record(start, policy, true);
        assert_eq!(core.state(), BreakerState::Open);
        let later = start + Duration::from_millis(400);
        assert_eq!(
            core.admit(later, policy, CALL),
            Err(Duration::from_millis(600))
        );
        assert_eq!(
            core.admit(later, policy, RESERVE),
            Err(Duration::from_millis(600))
        );
        // Its time up, two probes go through, a third waits.
        let reopened = start + Duration::from_millis(1000);
        assert_eq!(core.admit(reopened, policy, CALL), Ok(()));
        assert_eq!(core.state(), BreakerState::HalfOpen);
        assert_eq!(core.admit(reopened, policy, CALL), Ok(()));
        assert_eq!(core.admit(reopened, policy, CALL), Err(Duration::ZERO));
        // Both succeed: closed.
        core.record(reopened, policy, false);
        assert_eq!(core.state(), BreakerState::HalfOpen);
        core.record(reopened, policy, false);
        assert_eq!(core.state(), BreakerState::Closed);
        assert_eq!(core.admit(reopened, policy, CALL), Ok(()));
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_the_whole_time() {
        let policy = breaker(1, 1000, 1);
        let start = Instant::now();
        let mut core = BreakerCore::default();
        core.record(start, policy, true);
        let probe_at = start + Duration::from_millis(1000);
        assert_eq!(core.admit(probe_at, policy, CALL), Ok(()));
        core.record(probe_at, policy, true);
        assert_eq!(core.state(), BreakerState::Open);
        assert_eq!(
            core.admit(probe_at + Duration::from_millis(10), policy, CALL),
            Err(Duration::from_millis(990))
        );
    }

    #[test]
    fn a_reserved_probe_keeps_its_place_and_the_others_are_refused_before_they_pay() {
        let policy = breaker(1, 1000, 1);
        let start = Instant::now();
        let mut core = BreakerCore::default();
        core.record(start, policy, true);
        let probe_at = start + Duration::from_millis(1000);
        // The first checkout to ask keeps the probe's place; the next are refused.
        assert_eq!(core.admit(probe_at, policy, RESERVE), Ok(()));
        assert_eq!(core.admit(probe_at, policy, RESERVE), Err(Duration::ZERO));
        // Its e-mail, a second later, is the probe; it succeeds and closes the breaker.
        let mailed_at = probe_at + Duration::from_millis(900);
        assert_eq!(core.admit(mailed_at, policy, CALL), Ok(()));
        core.record(mailed_at, policy, false);
        assert_eq!(core.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_whose_caller_never_called_frees_its_place_after_the_open_time() {
        let policy = breaker(1, 1000, 1);
        let start = Instant::now();
        let mut core = BreakerCore::default();
        core.record(start, policy, true);
        let probe_at = start + Duration::from_millis(1000);
        assert_eq!(core.admit(probe_at, policy, RESERVE), Ok(()));
        // Its checkout was refused for another reason (a declined card): no call comes.
        assert_eq!(
            core.admit(probe_at + Duration::from_millis(500), policy, RESERVE),
            Err(Duration::ZERO)
        );
        let next_round = probe_at + Duration::from_millis(1000);
        assert_eq!(core.admit(next_round, policy, RESERVE), Ok(()));
        assert_eq!(core.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn answers_of_calls_let_through_before_it_opened_change_nothing() {
        let policy = breaker(1, 1000, 1);
        let now = Instant::now();
        let mut core = BreakerCore::default();
        assert_eq!(core.admit(now, policy, CALL), Ok(()));
        assert_eq!(core.admit(now, policy, CALL), Ok(()));
        core.record(now, policy, true);
        core.record(now, policy, false);
        assert_eq!(core.state(), BreakerState::Open);
    }

    #[test]
    fn switched_off_it_closes_and_admits_everything() {
        let now = Instant::now();
        let mut core = BreakerCore::default();
        core.record(now, breaker(1, 1000, 1), true);
        assert_eq!(core.state(), BreakerState::Open);
        assert_eq!(core.admit(now, Policy::OFF, CALL), Ok(()));
        assert_eq!(core.state(), BreakerState::Closed);
        core.record(now, Policy::OFF, true);
        assert_eq!(core.state(), BreakerState::Closed);
    }
}
