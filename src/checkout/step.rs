//! How a step runs: in its own span `checkout.<step>`, timed into
//! `checkout_step_duration_seconds{step}` and the request's `Server-Timing`, marked as
//! an error when it fails — and, where the shutdown deadline may stop it, under
//! [`unless_stopped`].

use std::fmt::Display;
use std::future::Future;
use std::time::Instant;

use metrics::histogram;
use opentelemetry::trace::Status;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::CheckoutError;
use crate::telemetry::metrics::CHECKOUT_STEP_DURATION;
use crate::telemetry::server_timing;

/// Runs one step — `step!(validate_cart(tx, user_id))`, or
/// `step!(asynchronous::commit(tx, order, key))` — in its own span
/// `checkout.validate_cart` (`checkout.commit`), and records its duration.
macro_rules! step {
    ($step:ident ( $($arg:expr),* $(,)? )) => {
        $crate::checkout::step::observe_step(
            stringify!($step),
            tracing::info_span!(concat!("checkout.", stringify!($step))),
            $step($($arg),*),
        )
        .await
    };
    ($module:ident :: $step:ident ( $($arg:expr),* $(,)? )) => {
        $crate::checkout::step::observe_step(
            stringify!($step),
            tracing::info_span!(concat!("checkout.", stringify!($step))),
            $module::$step($($arg),*),
        )
        .await
    };
}
pub(super) use step;

pub(super) fn observe_step<T, E: Display>(
    name: &'static str,
    span: Span,
    work: impl Future<Output = Result<T, E>>,
) -> impl Future<Output = Result<T, E>> {
    // Boxed before anything holds it, so a checkout (or a job) in flight holds only the
    // step that runs rather than room for the largest of its steps, for its whole life
    // (a burst has 100 of them waiting on the gateway at once).
    let work = Box::pin(work.instrument(span.clone()));
    async move {
        let started = Instant::now();
        let result = work.await;
        let took = started.elapsed();
        histogram!(CHECKOUT_STEP_DURATION, "step" => name).record(took.as_secs_f64());
        server_timing::note(name, took);
        if let Err(error) = &result {
            span.set_status(Status::error(error.to_string()));
        }
        result
    }
}

/// Runs `work` unless the shutdown deadline (`stopping`) passes first: then the
/// checkout is [`CheckoutError::Interrupted`], and rolls back.
pub(super) async fn unless_stopped<T>(
    stopping: &CancellationToken,
    work: impl Future<Output = Result<T, CheckoutError>>,
) -> Result<T, CheckoutError> {
    tokio::select! {
        biased;
        result = work => result,
        () = stopping.cancelled() => Err(CheckoutError::Interrupted),
    }
}
