//! Stock: units on hand (`quantity`) and units held by checkouts in flight (`reserved`).
//!
//! Every statement that locks inventory rows takes the locks in product-id order, so two
//! transactions that touch the same products can never deadlock.

use sqlx::PgConnection;

use crate::db::{Statement, statement};

/// `UPDATE inventory SET <assignment>` for each product of some [`Units`] (`n`).
macro_rules! adjusted {
    ($assignment:literal) => {
        statement!(concat!(
            "UPDATE inventory SET ",
            $assignment,
            ", updated_at = now() \
             FROM UNNEST($1::bigint[], $2::int[]) AS n(product_id, quantity) \
             WHERE inventory.product_id = n.product_id"
        ))
    };
}

/// Units of some products, one entry per product, sorted by product id.
#[derive(Debug, Clone, Default)]
pub struct Units {
    pub product_ids: Vec<i64>,
    pub quantities: Vec<i32>,
}

impl FromIterator<(i64, i32)> for Units {
    fn from_iter<I: IntoIterator<Item = (i64, i32)>>(iter: I) -> Self {
        let mut pairs: Vec<(i64, i32)> = iter.into_iter().collect();
        pairs.sort_by_key(|(product_id, _)| *product_id);
        let (product_ids, quantities) = pairs.into_iter().unzip();
        Self {
            product_ids,
            quantities,
        }
    }
}

/// The stock of one product as it is under the lock.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Stock {
    pub product_id: i64,
    pub quantity: i32,
    pub reserved: i32,
}

impl Stock {
    pub fn available(&self) -> i32 {
        self.quantity - self.reserved
    }
}

/// Locks the products' inventory rows (`SELECT … FOR UPDATE`, in product-id order)
/// and returns their stock. A second buyer of the same product waits here.
pub async fn lock(conn: &mut PgConnection, product_ids: &[i64]) -> sqlx::Result<Vec<Stock>> {
    statement!(
        "SELECT product_id, quantity, reserved FROM inventory \
         WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE"
    )
    .query_as()
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// Holds units for a checkout: reserved += n.
pub async fn reserve(conn: &mut PgConnection, units: &Units) -> sqlx::Result<()> {
    adjust(
        conn,
        units,
        adjusted!("reserved = inventory.reserved + n.quantity"),
    )
    .await
}

/// The units leave the warehouse: quantity −= n and the reservation is released.
pub async fn reduce(conn: &mut PgConnection, units: &Units) -> sqlx::Result<()> {
    adjust(
        conn,
        units,
        adjusted!(
            "quantity = inventory.quantity - n.quantity, reserved = inventory.reserved - n.quantity"
        ),
    )
    .await
}

async fn adjust(
    conn: &mut PgConnection,
    units: &Units,
    update: &'static Statement,
) -> sqlx::Result<()> {
    update
        .query()
        .bind(&units.product_ids)
        .bind(&units.quantities)
        .execute(conn)
        .await?;
    Ok(())
}

/// An order's units, from its items.
pub async fn units_of_order(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<Units> {
    let units: Vec<(i64, i32)> = statement!(
        "SELECT product_id, SUM(quantity)::int FROM order_items WHERE order_id = $1 \
         GROUP BY product_id"
    )
    .query_as()
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    Ok(units.into_iter().collect())
}

/// A reservation given up (the payment was declined): reserved −= n.
pub async fn release(conn: &mut PgConnection, units: &Units) -> sqlx::Result<()> {
    lock(conn, &units.product_ids).await?;
    adjust(
        conn,
        units,
        adjusted!("reserved = inventory.reserved - n.quantity"),
    )
    .await
}

/// A cancelled order's units go back on the shelf.
pub async fn put_back_order(conn: &mut PgConnection, order_id: i64) -> sqlx::Result<()> {
    let units = units_of_order(conn, order_id).await?;
    lock(conn, &units.product_ids).await?;
    adjust(
        conn,
        &units,
        adjusted!("quantity = inventory.quantity + n.quantity"),
    )
    .await
}

/// An active product's name and the units available to buy now; `None` if there is no
/// such product.
pub async fn available(
    conn: &mut PgConnection,
    product_id: i64,
) -> sqlx::Result<Option<(String, i32)>> {
    statement!(
        "SELECT p.name, i.quantity - i.reserved FROM products p \
         JOIN inventory i ON i.product_id = p.id WHERE p.id = $1 AND p.is_active"
    )
    .query_as()
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

/// A new product's stock.
pub async fn open(conn: &mut PgConnection, product_id: i64, quantity: i32) -> sqlx::Result<()> {
    statement!("INSERT INTO inventory (product_id, quantity) VALUES ($1, $2)")
        .query()
        .bind(product_id)
        .bind(quantity)
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts a seeded product's stock back to `quantity` (never below what is reserved);
/// returns how many products it touched.
pub async fn reset_by_name(
    conn: &mut PgConnection,
    product_name: &str,
    quantity: i32,
) -> sqlx::Result<u64> {
    let reset = statement!(
        "UPDATE inventory SET quantity = GREATEST($2, inventory.reserved), updated_at = now() \
         FROM products p \
         WHERE p.id = inventory.product_id AND p.name = $1 AND p.is_active"
    )
    .query()
    .bind(product_name)
    .bind(quantity)
    .execute(conn)
    .await?;
    Ok(reset.rows_affected())
}

/// Adds units to one active product's stock; false if there is no such product.
pub async fn restock(
    conn: &mut PgConnection,
    product_id: i64,
    quantity: i32,
) -> sqlx::Result<bool> {
    let restocked = statement!(
        "UPDATE inventory SET quantity = quantity + $2, updated_at = now() \
         FROM products p WHERE p.id = inventory.product_id AND p.is_active \
           AND inventory.product_id = $1"
    )
    .query()
    .bind(product_id)
    .bind(quantity)
    .execute(conn)
    .await?;
    Ok(restocked.rows_affected() > 0)
}
