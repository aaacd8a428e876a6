//! Every statement that writes or reads orders, their items and their payments.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::model::{OrderStatus, OrderView, PaymentStatus, PaymentView};
use crate::db::statement;
use crate::domain::{Customer, JobKind, LineItem, PaymentMethod};
use crate::notifications::NotificationKind;
use crate::outbox::{self, Job};

/// Whose orders to list.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Customer(i64),
    Everyone,
}

/// An order row as the checkout created it, before items and payment are attached.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    pub total: Decimal,
    pub shipping_address: String,
    pub processing_time_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    pub fn into_view(self, items: Vec<LineItem>, payment: Option<PaymentView>) -> OrderView {
        OrderView {
            id: self.id,
            user_id: self.user_id,
            status: self.status,
            total: self.total,
            shipping_address: self.shipping_address,
            processing_time_ms: self.processing_time_ms,
            created_at: self.created_at,
            updated_at: self.updated_at,
            items,
            payment,
        }
    }
}

/// The columns of [`OrderRow`].
macro_rules! order_columns {
    () => {
        "id, user_id, status, total, shipping_address, processing_time_ms, created_at, updated_at"
    };
}

/// A new order of `user_id`, in status `pending`.
pub async fn insert_pending(
    conn: &mut PgConnection,
    user_id: i64,
    total: Decimal,
    shipping_address: &str,
) -> sqlx::Result<OrderRow> {
    statement!(concat!(
        "INSERT INTO orders (user_id, status, total, shipping_address) VALUES ($1, $2, $3, $4) \
         RETURNING ",
        order_columns!()
    ))
    .query_as()
    .bind(user_id)
    .bind(OrderStatus::Pending)
    .bind(total)
    .bind(shipping_address)
    .fetch_one(conn)
    .await
}

/// The order's lines, with the product names and prices as they are now.
pub async fn insert_items(
    conn: &mut PgConnection,
    order_id: i64,
    items: &[LineItem],
) -> sqlx::Result<()> {
    let columns = ItemColumns::of(items);
    statement!(
        "INSERT INTO order_items (order_id, product_id, product_name, unit_price, quantity) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::numeric[], $5::int[])"
    )
    .query()
    .bind(order_id)
    .bind(columns.product_ids)
    .bind(columns.names)
    .bind(columns.prices)
    .bind(columns.quantities)
    .execute(conn)
    .await?;
    Ok(())
}

/// Order lines as one array per column, for `UNNEST`.
struct ItemColumns<'a> {
    product_ids: Vec<i64>,
    names: Vec<&'a str>,
    prices: Vec<Decimal>,
    quantities: Vec<i32>,
}

impl<'a> ItemColumns<'a> {
    fn of(items: &'a [LineItem]) -> Self {
        Self {
            product_ids: items.iter().map(|i| i.product_id).collect(),
            names: items.iter().map(|i| i.product_name.as_str()).collect(),
            prices: items.iter().map(|i| i.unit_price).collect(),
            quantities: items.iter().map(|i| i.quantity).collect(),
        }
    }
}

/// The payment of an order, as the gateway approved it; the order becomes `paid` in
/// the same statement.
pub async fn insert_payment(
    conn: &mut PgConnection,
    order_id: i64,
    amount: Decimal,
    method: PaymentMethod,
    transaction_id: &str,
) -> sqlx::Result<PaymentView> {
    statement!(
        "WITH paid AS (UPDATE orders SET status = $6, updated_at = now() WHERE id = $1) \
         INSERT INTO payments (order_id, amount, method, status, transaction_id) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, amount, method, status, transaction_id, created_at"
    )
    .query_as()
    .bind(order_id)
    .bind(amount)
    .bind(method)
    .bind(PaymentStatus::Completed)
    .bind(transaction_id)
    .bind(OrderStatus::Paid)
    .fetch_one(conn)
    .await
}

/// Moves an order to `status`; returns when it happened.
pub async fn set_status(
    conn: &mut PgConnection,
    order_id: i64,
    status: OrderStatus,
) -> sqlx::Result<DateTime<Utc>> {
    statement!(
        "UPDATE orders SET status = $2, updated_at = now() WHERE id = $1 RETURNING updated_at"
    )
    .query_scalar()
    .bind(order_id)
    .bind(status)
    .fetch_one(conn)
    .await
}

/// The end of a checkout: `confirmed`, with how long the checkout took.
pub async fn confirm(
    conn: &mut PgConnection,
    order_id: i64,
    processing_time_ms: i32,
) -> sqlx::Result<DateTime<Utc>> {
    statement!(
        "UPDATE orders SET status = $2, processing_time_ms = $3, updated_at = now() \
         WHERE id = $1 RETURNING updated_at"
    )
    .query_scalar()
    .bind(order_id)
    .bind(OrderStatus::Confirmed)
    .bind(processing_time_ms)
    .fetch_one(conn)
    .await
}

/// What the asynchronous checkout writes for an accepted order, in one statement (one
/// round trip instead of five): the units reserved, the order `pending` with its items,
/// the customer's cart emptied, and its `charge_order` job queued with `payload` — the
/// workers are woken when the transaction commits. The caller holds the cart's and the
/// inventory rows' locks already (`cart::store::lock`, `inventory::lock`).
pub async fn place_pending(
    conn: &mut PgConnection,
    order: NewOrder<'_>,
    payload: &serde_json::Value,
    traceparent: Option<&str>,
) -> sqlx::Result<OrderRow> {
    let columns = ItemColumns::of(order.items);
    statement!(concat!(
        "WITH reserved AS ( \
             UPDATE inventory SET reserved = inventory.reserved + n.quantity, updated_at = now() \
             FROM UNNEST($5::bigint[], $8::int[]) AS n (product_id, quantity) \
             WHERE inventory.product_id = n.product_id), \
         placed AS ( \
             INSERT INTO orders (user_id, status, total, shipping_address) \
             VALUES ($1, $2, $3, $4) RETURNING ",
        order_columns!(),
        "), \
         items AS ( \
             INSERT INTO order_items (order_id, product_id, product_name, unit_price, quantity) \
             SELECT placed.id, line.* FROM placed, \
                    UNNEST($5::bigint[], $6::text[], $7::numeric[], $8::int[]) AS line), \
         cleared AS ( \
             DELETE FROM cart_items ci USING carts c WHERE ci.cart_id = c.id AND c.user_id = $1), \
         job AS ( \
             INSERT INTO outbox_jobs (kind, order_id, payload, traceparent) \
             SELECT $9, placed.id, $10, $11 FROM placed RETURNING kind) \
         SELECT placed.*, (SELECT count(pg_notify($12, kind)) FROM job) AS woken FROM placed"
    ))
    .query_as()
    .bind(order.user_id)
    .bind(OrderStatus::Pending)
    .bind(order.total)
    .bind(order.shipping_address)
    .bind(columns.product_ids)
    .bind(columns.names)
    .bind(columns.prices)
    .bind(columns.quantities)
    .bind(JobKind::ChargeOrder)
    .bind(payload)
    .bind(traceparent)
    .bind(outbox::CHANNEL)
    .fetch_one(conn)
    .await
}

/// An order about to be written.
pub struct NewOrder<'a> {
    pub user_id: i64,
    pub total: Decimal,
    pub shipping_address: &'a str,
    pub items: &'a [LineItem],
}

/// The payment an asynchronous order's charge job took.
pub struct PaidCharge<'a> {
    pub amount: Decimal,
    pub method: PaymentMethod,
    pub transaction_id: &'a str,
}

/// Everything a paid asynchronous order still needs, in one statement (one round trip
/// instead of ten), and only while `job` is still this worker's (its lease token): the
/// job done, the payment recorded, the units taken out of stock (their rows locked in
/// product-id order, as everywhere), the order confirmed with its processing time, the
/// customer notified, and the e-mail's job queued with `email` (workers woken at the
/// commit). Returns the seconds since the order was accepted; `None` when another
/// worker holds the job now: nothing was written.
pub async fn settle_paid(
    conn: &mut PgConnection,
    job: &Job,
    charge: PaidCharge<'_>,
    notice: &str,
    email: &serde_json::Value,
    traceparent: Option<&str>,
) -> sqlx::Result<Option<f64>> {
    statement!(
        "WITH finished AS ( \
             UPDATE outbox_jobs SET status = 'done', finished_at = now(), locked_until = NULL \
             WHERE id = $1 AND lease_token = $2 AND status = 'pending' RETURNING order_id), \
         units AS MATERIALIZED ( \
             SELECT product_id, SUM(quantity)::int AS quantity FROM order_items \
             WHERE order_id = $3 AND EXISTS (SELECT FROM finished) GROUP BY product_id), \
         locked AS MATERIALIZED ( \
             SELECT inventory.product_id FROM inventory JOIN units USING (product_id) \
             ORDER BY inventory.product_id FOR UPDATE OF inventory), \
         reduced AS ( \
             UPDATE inventory SET quantity = inventory.quantity - units.quantity, \
                    reserved = inventory.reserved - units.quantity, updated_at = now() \
             FROM units JOIN locked USING (product_id) \
             WHERE inventory.product_id = units.product_id), \
         payment AS ( \
             INSERT INTO payments (order_id, amount, method, status, transaction_id) \
             SELECT order_id, $4, $5, $6, $7 FROM finished), \
         noticed AS ( \
             INSERT INTO notifications (user_id, kind, message) \
             SELECT o.user_id, $8, $9 FROM orders o, finished WHERE o.id = finished.order_id), \
         email AS ( \
             INSERT INTO outbox_jobs (kind, order_id, payload, traceparent) \
             SELECT $10, order_id, $11, $12 FROM finished RETURNING kind), \
         confirmed AS ( \
             UPDATE orders SET status = $13, updated_at = now(), \
                    processing_time_ms = \
                        LEAST(EXTRACT(EPOCH FROM now() - created_at) * 1000, 2147483647)::int \
             FROM finished WHERE orders.id = finished.order_id \
             RETURNING EXTRACT(EPOCH FROM now() - created_at)::float8 AS waited) \
         SELECT waited FROM confirmed, (SELECT count(pg_notify($14, kind)) FROM email) AS woken"
    )
    .query_scalar()
    .bind(job.id)
    .bind(job.lease_token)
    .bind(job.order_id)
    .bind(charge.amount)
    .bind(charge.method)
    .bind(PaymentStatus::Completed)
    .bind(charge.transaction_id)
    .bind(NotificationKind::OrderConfirmed)
    .bind(notice)
    .bind(JobKind::SendConfirmation)
    .bind(email)
    .bind(traceparent)
    .bind(OrderStatus::Confirmed)
    .bind(outbox::CHANNEL)
    .fetch_optional(conn)
    .await
}

/// The order's status now; `None` if there is no such order.
pub async fn status_of(
    conn: &mut PgConnection,
    order_id: i64,
) -> sqlx::Result<Option<OrderStatus>> {
    statement!("SELECT status FROM orders WHERE id = $1")
        .query_scalar()
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// An order without its items and payment.
pub async fn fetch_row(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Option<OrderRow>> {
    statement!(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1"
    ))
    .query_as()
    .bind(order_id)
    .fetch_optional(conn)
    .await
}

/// Whose order it is; `None` if there is no such order.
pub async fn owner_of(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Option<i64>> {
    statement!("SELECT user_id FROM orders WHERE id = $1")
        .query_scalar()
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// The order's status, with the row locked until the transaction ends.
pub async fn lock_status(
    conn: &mut PgConnection,
    order_id: i64,
) -> sqlx::Result<Option<OrderStatus>> {
    statement!("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
        .query_scalar()
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// The gateway's transaction id and the amount of the order's payment, if it has one.
pub async fn payment_of(
    conn: &mut PgConnection,
    order_id: i64,
) -> sqlx::Result<Option<(String, Decimal)>> {
    statement!("SELECT transaction_id, amount FROM payments WHERE order_id = $1")
        .query_as()
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// Who placed the order, as their account says now: whom to write to about it.
pub async fn customer_of(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Option<Customer>> {
    let row: Option<(String, String)> = statement!(
        "SELECT u.email, u.full_name FROM orders o JOIN users u ON u.id = o.user_id \
         WHERE o.id = $1"
    )
    .query_as()
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(email, name)| Customer { email, name }))
}

/// The order a gateway transaction pays for, if one does.
pub async fn order_paid_by(
    conn: &mut PgConnection,
    transaction_id: &str,
) -> sqlx::Result<Option<i64>> {
    statement!("SELECT order_id FROM payments WHERE transaction_id = $1")
        .query_scalar()
        .bind(transaction_id)
        .fetch_optional(conn)
        .await
}

pub async fn mark_payment(
    conn: &mut PgConnection,
    order_id: i64,
    status: PaymentStatus,
) -> sqlx::Result<()> {
    statement!("UPDATE payments SET status = $2 WHERE order_id = $1")
        .query()
        .bind(order_id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn fetch(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Option<OrderView>> {
    match fetch_row(conn, order_id).await? {
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
    macro_rules! order_filter {
        () => {
            "WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2)"
        };
    }
    let rows: Vec<OrderRow> = statement!(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders ",
        order_filter!(),
        " \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .query_as()
    .bind(user_id)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = statement!(concat!("SELECT count(*) FROM orders ", order_filter!()))
        .query_scalar()
        .bind(user_id)
        .bind(status)
        .fetch_one(&mut *conn)
        .await?;
    Ok((attach_details(conn, rows).await?, total))
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: i64,
    #[sqlx(flatten)]
    item: LineItem,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    order_id: i64,
    #[sqlx(flatten)]
    payment: PaymentView,
}

async fn attach_details(
    conn: &mut PgConnection,
    rows: Vec<OrderRow>,
) -> sqlx::Result<Vec<OrderView>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let items: Vec<ItemRow> = statement!(
        "SELECT order_id, product_id, product_name, unit_price, quantity, \
                unit_price * quantity AS subtotal \
         FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, id"
    )
    .query_as()
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let payments: Vec<PaymentRow> = statement!(
        "SELECT order_id, id, amount, method, status, transaction_id, created_at \
         FROM payments WHERE order_id = ANY($1)"
    )
    .query_as()
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;

    Ok(rows
        .into_iter()
        .map(|row| {
            let order_items = items
                .iter()
                .filter(|i| i.order_id == row.id)
                .map(|i| i.item.clone())
                .collect();
            let payment = payments
                .iter()
                .find(|p| p.order_id == row.id)
                .map(|p| p.payment.clone());
            row.into_view(order_items, payment)
        })
        .collect())
}
