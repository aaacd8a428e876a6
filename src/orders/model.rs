//! Orders and payments as the API shows them, and the closed sets of values they take.
//!
//! Status, payment status and payment method are enums stored as text: an unknown
//! value in the database is a decoding error, never a silent default.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{LineItem, PaymentMethod};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted by the asynchronous checkout, waiting for its payment (the blocking
    /// checkout's orders pass through it inside their transaction, unseen).
    Pending,
    /// Inside a blocking checkout's transaction only: charged, not yet confirmed.
    Paid,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
    /// The asynchronous checkout's payment was declined; the stock went back.
    PaymentFailed,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PaymentStatus {
    Completed,
    /// After a cancellation.
    Refunded,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct PaymentView {
    pub id: i64,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub method: PaymentMethod,
    pub status: PaymentStatus,
    #[schema(example = "txn_3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b")]
    pub transaction_id: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    pub shipping_address: String,
    /// How long the checkout took, in milliseconds (the original system's
    /// `processing_duration_ms`). Blocking mode: the whole checkout request, the eleven
    /// steps and the commit — what the customer waited for. Asynchronous mode: from the
    /// order's acceptance (the 202) to its confirmation by the workers; absent while it
    /// is `pending` and for a declined payment.
    pub processing_time_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// With the product names and prices as they were when the order was placed.
    pub items: Vec<LineItem>,
    pub payment: Option<PaymentView>,
}
