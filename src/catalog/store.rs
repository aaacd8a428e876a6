//! Every statement on the `categories` and `products` tables.

use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::{CategoryView, ProductQuery, ProductView};
use crate::db::statement;

/// The columns of [`ProductView`], shared by the single and the list query.
macro_rules! product_select {
    () => {
        "SELECT p.id, p.name, p.description, p.price, p.category_id, c.name AS category_name, \
                i.quantity - i.reserved AS stock, r.average_rating, \
                COALESCE(r.review_count, 0) AS review_count, p.created_at, p.updated_at \
         FROM products p \
         JOIN categories c ON c.id = p.category_id \
         JOIN inventory i ON i.product_id = p.id \
         LEFT JOIN LATERAL ( \
             SELECT round(avg(rating), 2)::float8 AS average_rating, count(*) AS review_count \
             FROM reviews WHERE product_id = p.id \
         ) r ON TRUE "
    };
}

/// Filters of the list and its count; `$1`–`$4` are category, pattern, min and max price.
macro_rules! product_filter {
    () => {
        "WHERE p.is_active \
           AND ($1::bigint IS NULL OR p.category_id = $1) \
           AND ($2::text IS NULL OR p.name ILIKE $2 OR p.description ILIKE $2) \
           AND ($3::numeric IS NULL OR p.price >= $3) \
           AND ($4::numeric IS NULL OR p.price <= $4) "
    };
}

/// An active product with its available stock and rating.
pub async fn product(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<ProductView>> {
    statement!(concat!(
        product_select!(),
        "WHERE p.id = $1 AND p.is_active"
    ))
    .query_as()
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Whether an active product of this id exists.
pub async fn is_active(conn: &mut PgConnection, id: i64) -> sqlx::Result<bool> {
    statement!("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1 AND is_active)")
        .query_scalar()
        .bind(id)
        .fetch_one(conn)
        .await
}

/// A page of the products `query` selects, by id, and how many it selects in all.
pub async fn products(
    conn: &mut PgConnection,
    query: &ProductQuery<'_>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<ProductView>, i64)> {
    let pattern = query
        .search
        .filter(|q| !q.is_empty())
        .map(|q| format!("%{}%", escape_like(q)));
    let items: Vec<ProductView> = statement!(concat!(
        product_select!(),
        product_filter!(),
        "ORDER BY p.id LIMIT $5 OFFSET $6"
    ))
    .query_as()
    .bind(query.category_id)
    .bind(&pattern)
    .bind(query.min_price)
    .bind(query.max_price)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total: i64 = statement!(concat!(
        "SELECT count(*) FROM products p ",
        product_filter!()
    ))
    .query_scalar()
    .bind(query.category_id)
    .bind(&pattern)
    .bind(query.min_price)
    .bind(query.max_price)
    .fetch_one(&mut *conn)
    .await?;
    Ok((items, total))
}

/// `%` and `_` in a search are literal characters, not wildcards.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A new product; returns its id. (Its stock is opened by `inventory::open`.)
pub async fn insert_product(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
    price: Decimal,
    category_id: i64,
) -> sqlx::Result<i64> {
    statement!(
        "INSERT INTO products (name, description, price, category_id) VALUES ($1, $2, $3, $4) \
         RETURNING id"
    )
    .query_scalar()
    .bind(name)
    .bind(description)
    .bind(price)
    .bind(category_id)
    .fetch_one(conn)
    .await
}

/// What an update may change; `None` keeps a field as it is.
#[derive(Debug, Default)]
pub struct ProductChanges<'a> {
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub price: Option<Decimal>,
    pub category_id: Option<i64>,
}

/// Changes an active product; false if there is none of this id.
pub async fn update_product(
    conn: &mut PgConnection,
    id: i64,
    changes: &ProductChanges<'_>,
) -> sqlx::Result<bool> {
    let updated = statement!(
        "UPDATE products SET name = COALESCE($2, name), description = COALESCE($3, description), \
                price = COALESCE($4, price), category_id = COALESCE($5, category_id), \
                updated_at = now() \
         WHERE id = $1 AND is_active"
    )
    .query()
    .bind(id)
    .bind(changes.name)
    .bind(changes.description)
    .bind(changes.price)
    .bind(changes.category_id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Takes a product off the catalog (orders keep it); false if there is no active one.
pub async fn deactivate(conn: &mut PgConnection, id: i64) -> sqlx::Result<bool> {
    let deleted = statement!(
        "UPDATE products SET is_active = FALSE, updated_at = now() WHERE id = $1 AND is_active"
    )
    .query()
    .bind(id)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// All categories, by name.
pub async fn categories(conn: &mut PgConnection) -> sqlx::Result<Vec<CategoryView>> {
    statement!("SELECT id, name, description, created_at FROM categories ORDER BY lower(name)")
        .query_as()
        .fetch_all(conn)
        .await
}

pub async fn insert_category(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
) -> sqlx::Result<CategoryView> {
    statement!(
        "INSERT INTO categories (name, description) VALUES ($1, $2) \
         RETURNING id, name, description, created_at"
    )
    .query_as()
    .bind(name)
    .bind(description)
    .fetch_one(conn)
    .await
}

/// A category unless one of the same name (in any case) exists; returns how many were
/// created (for the seed).
pub async fn insert_category_if_missing(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
) -> sqlx::Result<u64> {
    let created = statement!(
        "INSERT INTO categories (name, description) VALUES ($1, $2) \
         ON CONFLICT (lower(name)) DO NOTHING"
    )
    .query()
    .bind(name)
    .bind(description)
    .execute(conn)
    .await?;
    Ok(created.rows_affected())
}

/// A product in the named category unless an active one of the same name exists;
/// returns the new product's id (for the seed).
pub async fn insert_product_if_missing(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
    price: Decimal,
    category_name: &str,
) -> sqlx::Result<Option<i64>> {
    statement!(
        "INSERT INTO products (name, description, price, category_id) \
         SELECT $1, $2, $3, c.id FROM categories c WHERE lower(c.name) = lower($4) \
           AND NOT EXISTS (SELECT 1 FROM products WHERE name = $1 AND is_active) \
         RETURNING id"
    )
    .query_scalar()
    .bind(name)
    .bind(description)
    .bind(price)
    .bind(category_name)
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }
}
