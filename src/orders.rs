//! Orders as the API shows them, how they are read back, and the status lifecycle.
//! Orders are written by the checkout (`crate::checkout`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Inside a checkout's transaction only: never visible after commit.
    Pending,
    /// Inside a checkout's transaction only: charged, not yet confirmed.
    Paid,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Paid,
            Self::Confirmed,
            Self::Shipped,
            Self::Delivered,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }

    /// The transitions an admin may make: confirmed → shipped → delivered, and
    /// cancellation as long as nothing has shipped.
    pub fn can_become(self, next: OrderStatus) -> bool {
        matches!(
            (self, next),
            (Self::Confirmed, Self::Shipped)
                | (Self::Shipped, Self::Delivered)
                | (Self::Confirmed, Self::Cancelled)
        )
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderItemView {
    pub product_id: i64,
    /// The product's name when it was ordered.
    pub product_name: String,
    /// The price when it was ordered.
    #[schema(value_type = String, example = "19.99")]
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    pub quantity: i32,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub subtotal: Decimal,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: i64,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[schema(example = "credit_card")]
    pub method: String,
    /// `completed`, or `refunded` after a cancellation.
    #[schema(example = "completed")]
    pub status: String,
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
    /// How long the checkout that created this order took, in milliseconds.
    pub processing_time_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub items: Vec<OrderItemView>,
    pub payment: Option<PaymentView>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    user_id: i64,
    status: String,
    total: Decimal,
    shipping_address: String,
    processing_time_ms: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: i64,
    product_id: i64,
    product_name: String,
    unit_price: Decimal,
    quantity: i32,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    order_id: i64,
    id: i64,
    amount: Decimal,
    method: String,
    status: String,
    transaction_id: String,
    created_at: DateTime<Utc>,
}

/// Whose orders to list.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Customer(i64),
    Everyone,
}

pub async fn fetch(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Option<OrderView>> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, user_id, status, total, shipping_address, processing_time_ms, \
                created_at, updated_at \
         FROM orders WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(attach_details(conn, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// Newest first. Items and payments are loaded with one query each for the whole page.
pub async fn list(
    conn: &mut PgConnection,
    scope: Scope,
    status: Option<OrderStatus>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<OrderView>, i64)> {
    let user_id = match scope {
        Scope::Customer(id) => Some(id),
        Scope::Everyone => None,
    };
    let status = status.map(OrderStatus::as_str);
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, user_id, status, total, shipping_address, processing_time_ms, \
                created_at, updated_at \
         FROM orders \
         WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(user_id)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders \
         WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2)",
    )
    .bind(user_id)
    .bind(status)
    .fetch_one(&mut *conn)
    .await?;
    Ok((attach_details(conn, rows).await?, total))
}

async fn attach_details(
    conn: &mut PgConnection,
    rows: Vec<OrderRow>,
) -> sqlx::Result<Vec<OrderView>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let items: Vec<ItemRow> = sqlx::query_as(
        "SELECT order_id, product_id, product_name, unit_price, quantity \
         FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT order_id, id, amount, method, status, transaction_id, created_at \
         FROM payments WHERE order_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;

    Ok(rows
        .into_iter()
        .map(|row| OrderView {
            items: items
                .iter()
                .filter(|item| item.order_id == row.id)
                .map(|item| OrderItemView {
                    product_id: item.product_id,
                    product_name: item.product_name.clone(),
                    unit_price: item.unit_price,
                    quantity: item.quantity,
                    subtotal: item.unit_price * Decimal::from(item.quantity),
                })
                .collect(),
            payment: payments
                .iter()
                .find(|payment| payment.order_id == row.id)
                .map(|p| PaymentView {
                    id: p.id,
                    amount: p.amount,
                    method: p.method.clone(),
                    status: p.status.clone(),
                    transaction_id: p.transaction_id.clone(),
                    created_at: p.created_at,
                }),
            id: row.id,
            user_id: row.user_id,
            status: OrderStatus::parse(&row.status).unwrap_or(OrderStatus::Pending),
            total: row.total,
            shipping_address: row.shipping_address,
            processing_time_ms: row.processing_time_ms,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;

    #[test]
    fn lifecycle_moves_forward_only() {
        assert!(Confirmed.can_become(Shipped));
        assert!(Shipped.can_become(Delivered));
        assert!(Confirmed.can_become(Cancelled));
        assert!(!Shipped.can_become(Cancelled));
        assert!(!Delivered.can_become(Shipped));
        assert!(!Cancelled.can_become(Confirmed));
        assert!(!Confirmed.can_become(Delivered));
        assert!(!Confirmed.can_become(Confirmed));
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in [Pending, Paid, Confirmed, Shipped, Delivered, Cancelled] {
            assert_eq!(super::OrderStatus::parse(status.as_str()), Some(status));
        }
    }
}
