//! Why a checkout did not end in an order, and what a customer is told about the money
//! when the order was lost after the charge.

use rust_decimal::Decimal;

use crate::domain::{CheckoutOutcome, ORDER_TOTAL_MAX, OrphanReason, StockShortage};
use crate::mailer::EmailError;
use crate::payment::{Charge, EarlierCharge, PaymentError};

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the cart is empty")]
    EmptyCart,
    #[error("not enough stock for {}", StockShortage::describe(.0))]
    InsufficientStock(Vec<StockShortage>),
    #[error("the cart's total {0} is more than an order can hold ({ORDER_TOTAL_MAX})")]
    TotalTooLarge(Decimal),
    /// An earlier attempt under the customer's `Idempotency-Key` took a payment and
    /// lost its order, and the cart's total is no longer that payment's (or the payment
    /// was given back since): the payment is refunded, nothing is charged now.
    #[error("{}", describe_cart_changed(.earlier, *.total, *.refunded))]
    CartChanged {
        earlier: EarlierCharge,
        total: Decimal,
        /// Whether the earlier payment has been given back yet ([`Checkout::place_order`]
        /// does it once the checkout's transaction is over).
        refunded: bool,
    },
    #[error("{0}")]
    Payment(#[from] PaymentError),
    /// Only after the charge (see [`CheckoutError::Charged`]).
    #[error("the confirmation e-mail could not be sent ({0})")]
    EmailFailed(#[from] EmailError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The shutdown deadline came first; everything was rolled back.
    #[error("the service is shutting down; the checkout was rolled back, retry shortly")]
    Interrupted,
    /// The gateway charged the customer, then the order was lost to `cause`: what
    /// happens to the money is part of the answer.
    #[error("{}", describe_charged(.cause, .charge, *.retry_recovers))]
    Charged {
        cause: Box<CheckoutError>,
        charge: Charge,
        /// A retry with the same `Idempotency-Key` places the order with this charge.
        retry_recovers: bool,
    },
}

impl CheckoutError {
    pub fn outcome(&self) -> CheckoutOutcome {
        match self {
            Self::EmptyCart => CheckoutOutcome::EmptyCart,
            Self::InsufficientStock(_) => CheckoutOutcome::InsufficientStock,
            Self::TotalTooLarge(_) => CheckoutOutcome::TotalTooLarge,
            Self::CartChanged { .. } => CheckoutOutcome::CartChanged,
            Self::Payment(PaymentError::Declined) => CheckoutOutcome::PaymentDeclined,
            Self::Payment(PaymentError::Unavailable(_) | PaymentError::KeyReused(_))
            | Self::Database(_) => CheckoutOutcome::Error,
            Self::EmailFailed(_) => CheckoutOutcome::EmailFailed,
            Self::Interrupted => CheckoutOutcome::Shutdown,
            Self::Charged { cause, .. } => cause.outcome(),
        }
    }

    /// The failure itself, whether or not money was taken before it.
    pub fn cause(&self) -> &CheckoutError {
        match self {
            Self::Charged { cause, .. } => cause,
            other => other,
        }
    }

    /// Why an order was lost after its payment, as `payments_orphaned_total{reason}`.
    pub(super) fn orphan_reason(&self) -> OrphanReason {
        match self.cause() {
            Self::EmailFailed(_) => OrphanReason::EmailFailed,
            Self::Interrupted => OrphanReason::Shutdown,
            _ => OrphanReason::DatabaseError,
        }
    }
}

/// What a customer is told when the order was lost after the charge: never "rolled
/// back" alone, always what happened to the money.
fn describe_charged(cause: &CheckoutError, charge: &Charge, retry_recovers: bool) -> String {
    let lost = match cause {
        CheckoutError::EmailFailed(error) => format!(
            "the confirmation e-mail could not be sent ({error}), so the order was not saved"
        ),
        CheckoutError::Interrupted => {
            "the service is shutting down, so the order was not saved".to_string()
        }
        _ => "the order could not be saved".to_string(),
    };
    let money = if retry_recovers {
        "retry with the same Idempotency-Key: the order is placed with this payment, \
         which is not charged again (if your cart changes before you retry, the payment \
         is refunded instead)"
    } else {
        "it is recorded as a payment without an order and will be refunded"
    };
    format!(
        "{lost}, but your payment of {:.2} was taken ({}); {money}",
        charge.amount, charge.transaction_id
    )
}

fn describe_cart_changed(earlier: &EarlierCharge, total: Decimal, refunded: bool) -> String {
    let what = if refunded {
        "was refunded"
    } else {
        "is being refunded"
    };
    format!(
        "your cart's total is {total:.2} now, but an earlier checkout with this \
         Idempotency-Key took a payment of {:.2} and lost its order; that payment {what} \
         ({}) and nothing was charged now: check the cart and check out again with a new \
         Idempotency-Key",
        earlier.amount,
        earlier
            .transaction_id
            .as_deref()
            .unwrap_or("no transaction"),
    )
}
