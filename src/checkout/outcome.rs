//! How a checkout ended: the `outcome` label of `checkouts_total` and
//! `checkout_duration_seconds`, and the categories of the load generator's report.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckoutOutcome {
    Success,
    EmptyCart,
    InsufficientStock,
    PaymentDeclined,
    EmailFailed,
    /// Anything else: the database or the gateway could not be reached.
    Error,
    /// Still running at the shutdown deadline: rolled back.
    Shutdown,
}

impl CheckoutOutcome {
    pub const ALL: [Self; 7] = [
        Self::Success,
        Self::EmptyCart,
        Self::InsufficientStock,
        Self::PaymentDeclined,
        Self::EmailFailed,
        Self::Error,
        Self::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::EmptyCart => "empty_cart",
            Self::InsufficientStock => "insufficient_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::EmailFailed => "email_failed",
            Self::Error => "error",
            Self::Shutdown => "shutdown",
        }
    }
}
