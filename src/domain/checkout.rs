//! The closed sets of values a checkout is described by: which checkout runs, how it
//! ended, why an order was lost after its payment, how a paid order was settled. They
//! are the label values of the checkout's metrics and the categories of the load
//! generator's report, so each name is spelled once, here (`as_str`, from strum).

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};
use utoipa::ToSchema;

/// Which checkout runs: the original blocking one, or the asynchronous one that answers
/// 202 and leaves the payment and the e-mail to workers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    IntoStaticStr,
    VariantArray,
    EnumString,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum CheckoutMode {
    /// Eleven steps in one transaction, the gateway and the mail server inside it.
    Blocking,
    /// One short transaction, then 202; workers charge, confirm and send the e-mail.
    Async,
}

/// How a checkout ended: the `outcome` label of `checkouts_total` and
/// `checkout_duration_seconds`. Every checkout that starts ends in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum CheckoutOutcome {
    Success,
    EmptyCart,
    InsufficientStock,
    PaymentDeclined,
    EmailFailed,
    /// The cart's total is more than an order can hold.
    TotalTooLarge,
    /// A retry under an `Idempotency-Key` whose earlier attempt took a payment and lost
    /// its order, for a cart that has changed since: that payment was refunded, nothing
    /// was charged, and the customer checks out anew.
    CartChanged,
    /// Anything else: the database or the gateway could not be reached.
    Error,
    /// Still running at the shutdown deadline: rolled back.
    Shutdown,
}

impl CheckoutOutcome {
    /// The HTTP status a refusal of this kind answers with, part of the API's contract;
    /// `None` for the outcomes without one of their own (`success` is 201, or 202 in
    /// the asynchronous mode; `error` and `shutdown` answer like any failing request).
    pub fn refusal_status(self) -> Option<u16> {
        Some(match self {
            Self::EmptyCart => 400,
            Self::PaymentDeclined => 402,
            Self::InsufficientStock | Self::CartChanged => 409,
            Self::TotalTooLarge => 422,
            Self::EmailFailed => 502,
            Self::Success | Self::Error | Self::Shutdown => return None,
        })
    }

    /// A checkout's outcome told from the status of its answer, for a client that counts
    /// them (the load generator): 201 is a success; a 202 is settled later; a refusal's
    /// status is the first outcome answering with it; every other answer is an error.
    pub fn of_answer(status: u16) -> Self {
        if status == 201 {
            return Self::Success;
        }
        Self::VARIANTS
            .iter()
            .copied()
            .find(|outcome| outcome.refusal_status() == Some(status))
            .unwrap_or(Self::Error)
    }
}

/// The `outcome` of `checkout_duration_seconds` for an asynchronous checkout's 202: its
/// final outcome is counted later, when the payment is settled.
pub const ACCEPTED: &str = "accepted";

/// Why an order was lost after its payment: `payments_orphaned_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum OrphanReason {
    EmailFailed,
    DatabaseError,
    Shutdown,
}

/// The end an order reaches after its payment: `orders_settled_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum SettledOutcome {
    Confirmed,
    PaymentFailed,
}

macro_rules! label_names {
    ($($kind:ty),*) => {$(
        impl $kind {
            /// The name used in metric labels, reports and the API.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    )*};
}

label_names!(CheckoutMode, CheckoutOutcome, OrphanReason, SettledOutcome);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_label_values_the_dashboards_use() {
        assert_eq!(CheckoutMode::Async.as_str(), "async");
        assert_eq!(
            CheckoutOutcome::InsufficientStock.as_str(),
            "insufficient_stock"
        );
        assert_eq!(OrphanReason::DatabaseError.as_str(), "database_error");
        assert_eq!(SettledOutcome::PaymentFailed.as_str(), "payment_failed");
        assert_eq!(" Blocking".trim().parse(), Ok(CheckoutMode::Blocking));
        assert!("sync".parse::<CheckoutMode>().is_err());
        assert_eq!(CheckoutOutcome::VARIANTS.len(), 9);
    }
}
