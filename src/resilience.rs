//! The rungs between the blocking checkout and the asynchronous one, as the clients of
//! the payment gateway and the mail server apply them (`crate::domain::Policy`, live):
//! so far a timeout — a call that takes longer is given up, so a dependency that hangs
//! holds a checkout, its row locks and its pooled connection no longer than that.
//! Every call given up is counted per dependency (`resilience_timeouts_total`) and
//! marked on its span.

use std::future::Future;
use std::time::Duration;

use metrics::counter;

use crate::domain::{Dependency, Policy};
use crate::telemetry::metrics::RESILIENCE_TIMEOUTS;

/// The call was given up after its timeout.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no answer within the {}'s timeout of {} ms", .dependency.as_str(), .after.as_millis())]
pub struct GaveUp {
    pub dependency: Dependency,
    pub after: Duration,
}

/// Runs `call` under `policy`: given up (and counted) after its timeout, if it has one.
pub async fn call<T>(
    dependency: Dependency,
    policy: Policy,
    call: impl Future<Output = T>,
) -> Result<T, GaveUp> {
    let Some(after) = policy.timeout() else {
        return Ok(call.await);
    };
    match tokio::time::timeout(after, call).await {
        Ok(answer) => Ok(answer),
        Err(_) => {
            counter!(RESILIENCE_TIMEOUTS, "dependency" => dependency.as_str()).increment(1);
            tracing::Span::current().record("resilience.timed_out", true);
            Err(GaveUp { dependency, after })
        }
    }
}

/// Every dependency's counter at zero from the start, so a rate is defined before the
/// first call is given up.
pub fn start_metrics_at_zero() {
    for &dependency in <Dependency as strum::VariantArray>::VARIANTS {
        counter!(RESILIENCE_TIMEOUTS, "dependency" => dependency.as_str()).absolute(0);
    }
}
