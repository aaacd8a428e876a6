//! Every statement on the `carts` and `cart_items` tables.

use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::{Cart, CartLine};
use crate::db::statement;
use crate::domain::Customer;

/// The columns of [`CartLine`]: cart items joined with their products.
macro_rules! line_select {
    () => {
        "SELECT ci.id, ci.product_id, p.name AS product_name, p.price AS unit_price, \
                ci.quantity, p.is_active \
         FROM cart_items ci JOIN products p ON p.id = ci.product_id "
    };
}

/// The customer's cart (empty if they never used one).
pub async fn find(conn: &mut PgConnection, user_id: i64) -> sqlx::Result<Cart> {
    let id: Option<i64> = statement!("SELECT id FROM carts WHERE user_id = $1")
        .query_scalar()
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    match id {
        Some(id) => Ok(Cart {
            lines: lines(conn, id).await?,
        }),
        None => Ok(Cart::default()),
    }
}

/// The customer's cart with its row locked until the transaction ends (so a
/// double-clicked checkout cannot order it twice), and who the customer is; `None` if
/// they have no cart. Two statements on purpose: the lines are read after the lock is
/// held, in a statement of their own, so a checkout that waited for another sees what
/// that one left (one statement would read the lines as they were when it began).
pub async fn lock(conn: &mut PgConnection, user_id: i64) -> sqlx::Result<Option<(Cart, Customer)>> {
    let owner: Option<(i64, String, String)> = statement!(
        "SELECT c.id, u.email, u.full_name \
         FROM carts c JOIN users u ON u.id = c.user_id \
         WHERE c.user_id = $1 FOR UPDATE OF c"
    )
    .query_as()
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, email, name)) = owner else {
        return Ok(None);
    };
    let cart = Cart {
        lines: lines(conn, id).await?,
    };
    Ok(Some((cart, Customer { email, name })))
}

/// What the customer's cart costs now, to the cent (0 with no cart): one statement, for
/// the check that a change keeps the cart within what an order can hold.
pub async fn total(conn: &mut PgConnection, user_id: i64) -> sqlx::Result<Decimal> {
    let mut total: Decimal = statement!(
        "SELECT COALESCE(SUM(p.price * ci.quantity), 0) \
         FROM carts c JOIN cart_items ci ON ci.cart_id = c.id \
         JOIN products p ON p.id = ci.product_id \
         WHERE c.user_id = $1"
    )
    .query_scalar()
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    total.rescale(2);
    Ok(total)
}

async fn lines(conn: &mut PgConnection, cart_id: i64) -> sqlx::Result<Vec<CartLine>> {
    statement!(concat!(
        line_select!(),
        "WHERE ci.cart_id = $1 ORDER BY ci.product_id"
    ))
    .query_as()
    .bind(cart_id)
    .fetch_all(conn)
    .await
}

/// Locks the customer's cart row until the transaction ends, as the checkout does: a
/// change made while a checkout of the cart runs waits for it, then applies to what
/// the checkout left (never acknowledged and then lost). `None` if they have no cart.
pub async fn lock_row(conn: &mut PgConnection, user_id: i64) -> sqlx::Result<Option<i64>> {
    statement!("SELECT id FROM carts WHERE user_id = $1 FOR UPDATE")
        .query_scalar()
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The customer's cart id, creating the cart on first use (and locking its row, like
/// [`lock_row`]).
pub async fn open(conn: &mut PgConnection, user_id: i64) -> sqlx::Result<i64> {
    statement!(
        "INSERT INTO carts (user_id) VALUES ($1) \
         ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING id"
    )
    .query_scalar()
    .bind(user_id)
    .fetch_one(conn)
    .await
}

/// Puts the units of an order whose payment was declined back in its customer's cart
/// (added to what the cart holds now), so that they can try again: one statement, which
/// opens the cart if need be and, like every cart write, takes the cart's row lock.
pub async fn restore(
    conn: &mut PgConnection,
    user_id: i64,
    product_ids: &[i64],
    quantities: &[i32],
) -> sqlx::Result<()> {
    statement!(
        "WITH cart AS ( \
             INSERT INTO carts (user_id) VALUES ($1) \
             ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING id) \
         INSERT INTO cart_items (cart_id, product_id, quantity) \
         SELECT cart.id, line.product_id, line.quantity \
         FROM cart, UNNEST($2::bigint[], $3::int[]) AS line (product_id, quantity) \
         ON CONFLICT (cart_id, product_id) \
         DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity"
    )
    .query()
    .bind(user_id)
    .bind(product_ids)
    .bind(quantities)
    .execute(conn)
    .await?;
    Ok(())
}

/// What adding to a cart found, read in the same statement that adds when it may.
#[derive(Debug, sqlx::FromRow)]
pub struct Addition {
    pub product_name: String,
    pub unit_price: Decimal,
    /// Units of the product not reserved by an order.
    pub available: i32,
    /// Units the cart would hold: what it held plus the addition.
    pub wanted: i64,
    /// What the cart would cost with the addition.
    pub total: Decimal,
    /// The item after the addition; `None` when a check refused it and nothing changed.
    pub item_id: Option<i64>,
    pub quantity: Option<i32>,
}

/// Adds `quantity` of an active product to the cart (to what is there) if the cart
/// would then hold no more than is available and cost no more than `total_max`, and
/// returns what it found either way; `None` for an unknown or withdrawn product. One
/// statement, run under the cart's row lock ([`open`]): it reads the cart as the lock
/// left it.
pub async fn add_if_it_fits(
    conn: &mut PgConnection,
    cart_id: i64,
    product_id: i64,
    quantity: i32,
    total_max: Decimal,
) -> sqlx::Result<Option<Addition>> {
    statement!(
        "WITH product AS ( \
             SELECT p.name, p.price, i.quantity - i.reserved AS available \
             FROM products p JOIN inventory i ON i.product_id = p.id \
             WHERE p.id = $2 AND p.is_active), \
         held AS ( \
             SELECT COALESCE(SUM(quantity), 0)::bigint AS quantity FROM cart_items \
             WHERE cart_id = $1 AND product_id = $2), \
         cart_total AS ( \
             SELECT COALESCE(SUM(p.price * ci.quantity), 0) AS total \
             FROM cart_items ci JOIN products p ON p.id = ci.product_id WHERE ci.cart_id = $1), \
         wanted AS ( \
             SELECT product.name, product.price, product.available, \
                    held.quantity + $3 AS quantity, cart_total.total + product.price * $3 AS total \
             FROM product, held, cart_total), \
         added AS ( \
             INSERT INTO cart_items (cart_id, product_id, quantity) \
             SELECT $1, $2, $3 FROM wanted \
             WHERE wanted.quantity <= wanted.available AND wanted.total <= $4 \
             ON CONFLICT (cart_id, product_id) \
             DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity \
             RETURNING id, quantity) \
         SELECT wanted.name AS product_name, wanted.price AS unit_price, wanted.available, \
                wanted.quantity AS wanted, wanted.total, added.id AS item_id, added.quantity \
         FROM wanted LEFT JOIN added ON true"
    )
    .query_as()
    .bind(cart_id)
    .bind(product_id)
    .bind(quantity)
    .bind(total_max)
    .fetch_optional(conn)
    .await
}

/// One line of the customer's cart; another customer's item is `None`, like a
/// missing one.
pub async fn line(
    conn: &mut PgConnection,
    user_id: i64,
    item_id: i64,
) -> sqlx::Result<Option<CartLine>> {
    statement!(concat!(
        line_select!(),
        "JOIN carts c ON c.id = ci.cart_id WHERE c.user_id = $1 AND ci.id = $2"
    ))
    .query_as()
    .bind(user_id)
    .bind(item_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_quantity(
    conn: &mut PgConnection,
    item_id: i64,
    quantity: i32,
) -> sqlx::Result<()> {
    statement!("UPDATE cart_items SET quantity = $2 WHERE id = $1")
        .query()
        .bind(item_id)
        .bind(quantity)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes one of the customer's items; false if they have no such item.
pub async fn remove(conn: &mut PgConnection, user_id: i64, item_id: i64) -> sqlx::Result<bool> {
    let removed = statement!(
        "DELETE FROM cart_items ci USING carts c \
         WHERE ci.id = $2 AND ci.cart_id = c.id AND c.user_id = $1"
    )
    .query()
    .bind(user_id)
    .bind(item_id)
    .execute(conn)
    .await?;
    Ok(removed.rows_affected() > 0)
}

/// Empties the customer's cart (after a checkout ordered it, or on request).
pub async fn clear(conn: &mut PgConnection, user_id: i64) -> sqlx::Result<()> {
    statement!(
        "DELETE FROM cart_items ci USING carts c WHERE ci.cart_id = c.id AND c.user_id = $1"
    )
    .query()
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes a product out of every cart (it left the catalog).
pub async fn remove_product(conn: &mut PgConnection, product_id: i64) -> sqlx::Result<()> {
    statement!("DELETE FROM cart_items WHERE product_id = $1")
        .query()
        .bind(product_id)
        .execute(conn)
        .await?;
    Ok(())
}
