//! What a customer asks of the checkout, and what the checkout achieved.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{PaymentMethod, ShippingAddress};
use crate::orders::OrderView;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub shipping_address: ShippingAddress,
    pub payment_method: PaymentMethod,
}

/// What a checkout request achieved.
#[derive(Debug)]
pub enum Placement {
    /// The blocking checkout: the order is confirmed (201).
    Confirmed(OrderView),
    /// The asynchronous checkout: the order is accepted and `pending`; workers charge
    /// and confirm it (202).
    Accepted(OrderView),
}
