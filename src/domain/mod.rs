//! Types that parse instead of validate: once a value of one of these types exists,
//! it is known to be valid, so handlers and the checkout never re-check it.
//!
//! Each type deserializes through its parser, so a bad field in a request body
//! becomes a 422 naming that field (see `http::extract`).
//!
//! Beside them live the closed sets of values that several parts of the service name —
//! the checkout mode and outcomes, the payment method, the fault settings — so that each
//! is defined once, at the bottom. This module imports nothing else of the crate.

mod checkout;
mod customer;
mod email;
mod faults;
mod idempotency_key;
mod job_kind;
mod lab;
mod line_item;
mod map_only;
mod money;
mod password;
mod payment_method;
mod quantity;
mod rating;
mod resilience;
mod stock;
mod text;
mod whole_number;

pub use checkout::{ACCEPTED, CheckoutMode, CheckoutOutcome, OrphanReason, SettledOutcome};
pub use customer::Customer;
pub use email::Email;
pub use faults::{FaultProblem, FaultSettings, FaultsUpdate, FaultsView, MAX_DELAY};
pub use idempotency_key::IdempotencyKey;
pub use job_kind::JobKind;
pub use lab::{LabAnnouncement, LabPhase, PHASE_GRACE};
pub use line_item::LineItem;
pub use map_only::{MapOnly, optional_map};
pub use money::{AMOUNT_PATTERN, Amount, MONEY_PATTERN, Money, ORDER_TOTAL_MAX, cents};
pub use password::Password;
pub use payment_method::PaymentMethod;
pub use quantity::Quantity;
pub use rating::Rating;
pub use resilience::{Dependency, Policy, PolicyUpdate, ResilienceSettings, ResilienceUpdate};
pub use stock::{StockLevel, StockShortage};
pub use text::{
    BoundedText, CategoryName, Description, FullName, LabName, LabTitle, ProductName,
    ReviewComment, SearchText, ShippingAddress,
};
pub use whole_number::{WholeNumber, optional_whole, whole};
