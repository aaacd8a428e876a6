//! How checkouts end, counted once each: every checkout that starts ends in exactly one
//! `checkouts_total{mode,outcome}` ([`count_checkout`], the only place it is
//! incremented); a paid order's end in `orders_settled_total` with its revenue and its
//! time to confirmed ([`settled`]); an order lost after its payment in
//! `payments_orphaned_total{reason}` ([`orphaned_payment`]).

use metrics::{counter, gauge};
use opentelemetry::trace::Status;
use rust_decimal::Decimal;
use strum::VariantArray;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::CheckoutError;
use super::request::Placement;
use crate::domain::{ACCEPTED, CheckoutMode, CheckoutOutcome, OrphanReason, SettledOutcome, cents};
use crate::payment::{Charge, ChargeKey};
use crate::telemetry::exemplars;
use crate::telemetry::metrics::{
    CHECKOUTS, CHECKOUTS_IN_FLIGHT, ORDERS_REVENUE, ORDERS_SETTLED, PAYMENTS_ORPHANED,
    PAYMENTS_ORPHANED_AMOUNT, PAYMENTS_REATTACHED,
};

/// The checkout's counters exist from the start, at zero (see
/// `checkout::start_metrics_at_zero`).
pub(super) fn start_metrics_at_zero() {
    for mode in CheckoutMode::VARIANTS {
        for outcome in CheckoutOutcome::VARIANTS {
            counter!(CHECKOUTS, "mode" => mode.as_str(), "outcome" => outcome.as_str()).absolute(0);
        }
        for outcome in SettledOutcome::VARIANTS {
            counter!(ORDERS_SETTLED, "mode" => mode.as_str(), "outcome" => outcome.as_str())
                .absolute(0);
        }
    }
    for reason in OrphanReason::VARIANTS {
        counter!(PAYMENTS_ORPHANED, "reason" => reason.as_str()).absolute(0);
        counter!(PAYMENTS_ORPHANED_AMOUNT, "reason" => reason.as_str()).absolute(0);
    }
    counter!(ORDERS_REVENUE).absolute(0);
    counter!(PAYMENTS_REATTACHED).absolute(0);
    gauge!(CHECKOUTS_IN_FLIGHT).set(0.0);
}

/// A checkout running: `checkouts_in_flight` counts it until this is dropped.
pub(super) fn in_flight() -> InFlight {
    gauge!(CHECKOUTS_IN_FLIGHT).increment(1.0);
    InFlight
}

pub(super) struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(CHECKOUTS_IN_FLIGHT).decrement(1.0);
    }
}

/// Counts a checkout request's end once, marks its span (order, outcome, error status),
/// logs a rollback at the shutdown deadline, and gives the latency its exemplar. An
/// accepted order's outcome is counted when its payment is settled (see `jobs`).
pub(super) fn answered(
    span: &Span,
    mode: CheckoutMode,
    result: &Result<Placement, CheckoutError>,
    seconds: f64,
) {
    let outcome = match result {
        Ok(Placement::Confirmed(order)) => {
            span.record("order.id", order.id);
            settled(span, mode, order.total, seconds);
            count_checkout(mode, CheckoutOutcome::Success);
            CheckoutOutcome::Success.as_str()
        }
        Ok(Placement::Accepted(order)) => {
            span.record("order.id", order.id);
            ACCEPTED
        }
        Err(error) => {
            span.set_status(Status::error(error.to_string()));
            let outcome = error.outcome();
            if outcome == CheckoutOutcome::Shutdown {
                span.in_scope(|| {
                    tracing::warn!(%error, "checkout rolled back at the shutdown deadline");
                });
            }
            count_checkout(mode, outcome);
            outcome.as_str()
        }
    };
    span.record("checkout.outcome", outcome);
    exemplars::record_checkout(span, mode, outcome, seconds);
}

/// A checkout has ended.
pub(super) fn count_checkout(mode: CheckoutMode, outcome: CheckoutOutcome) {
    counter!(CHECKOUTS, "mode" => mode.as_str(), "outcome" => outcome.as_str()).increment(1);
}

/// An order paid and confirmed: its revenue, and how long from request to confirmed
/// (with `span`, of the checkout's trace, as the exemplar).
pub(super) fn settled(span: &Span, mode: CheckoutMode, total: Decimal, seconds: f64) {
    counter!(ORDERS_REVENUE).increment(cents(total));
    count_settled(mode, SettledOutcome::Confirmed);
    exemplars::record_time_to_confirmed(span, mode, seconds);
}

pub(super) fn count_settled(mode: CheckoutMode, outcome: SettledOutcome) {
    counter!(ORDERS_SETTLED, "mode" => mode.as_str(), "outcome" => outcome.as_str()).increment(1);
}

/// The gateway charged the customer, but the order is rolled back (the e-mail failed,
/// the database failed, or the shutdown deadline came): the money is taken for an
/// order that does not exist. The original system's all-or-nothing design causes
/// this; the counters and the reconciliation make the damage visible. When the charge
/// is bound to the client's `Idempotency-Key` and the answer lets the client retry (a
/// 503), the retry picks the charge up again ([`reattached`]).
pub(super) fn orphaned_payment(
    error: CheckoutError,
    order_id: i64,
    charge: Charge,
    key: ChargeKey<'_>,
) -> CheckoutError {
    let reason = error.orphan_reason().as_str();
    counter!(PAYMENTS_ORPHANED, "reason" => reason).increment(1);
    counter!(PAYMENTS_ORPHANED_AMOUNT, "reason" => reason).increment(cents(charge.amount));
    let retry_recovers = matches!(key, ChargeKey::Client { .. })
        && !matches!(error.cause(), CheckoutError::EmailFailed(_));
    tracing::error!(
        order.id = order_id,
        transaction_id = %charge.transaction_id,
        amount = %charge.amount,
        reason,
        retry_recovers,
        %error,
        "orphaned payment: the customer was charged but the order is rolled back"
    );
    CheckoutError::Charged {
        cause: Box::new(error),
        charge,
        retry_recovers,
    }
}

/// A retried checkout paid with the charge its earlier attempt took and lost: that
/// orphaned payment now has an order.
pub(super) fn reattached(order_id: i64, charge: &Charge) {
    counter!(PAYMENTS_REATTACHED).increment(1);
    tracing::info!(
        order.id = order_id,
        earlier_order.id = charge.first_order_id,
        transaction_id = %charge.transaction_id,
        "a retried checkout was paid with the charge its earlier attempt took"
    );
}
