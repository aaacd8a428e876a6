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

/// How many of a product the cart holds already.
pub async fn quantity_of(
    conn: &mut PgConnection,
    cart_id: i64,
    product_id: i64,
) -> sqlx::Result<i32> {
    statement!(
        "SELECT COALESCE(SUM(quantity), 0)::int FROM cart_items \
         WHERE cart_id = $1 AND product_id = $2"
    )
    .query_scalar()
    .bind(cart_id)
    .bind(product_id)
    .fetch_one(conn)
    .await
}

/// Puts `quantity` of a product in the cart (added to what is there); returns the
/// item's id.
pub async fn add(
    conn: &mut PgConnection,
    cart_id: i64,
    product_id: i64,
    quantity: i32,
) -> sqlx::Result<i64> {
    statement!(
        "INSERT INTO cart_items (cart_id, product_id, quantity) VALUES ($1, $2, $3) \
         ON CONFLICT (cart_id, product_id) \
         DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity RETURNING id"
    )
    .query_scalar()
    .bind(cart_id)
    .bind(product_id)
    .bind(quantity)
    .fetch_one(conn)
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
