//! Product reviews, one per customer and product: the model and every statement on the
//! `reviews` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::db::statement;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ReviewView {
    pub id: i64,
    pub product_id: i64,
    pub user_id: i64,
    #[schema(example = "Ada Lovelace")]
    pub author_name: String,
    #[schema(minimum = 1, maximum = 5, example = 5)]
    pub rating: i16,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

/// A product's reviews, newest first.
pub async fn of_product(conn: &mut PgConnection, product_id: i64) -> sqlx::Result<Vec<ReviewView>> {
    statement!(
        "SELECT r.id, r.product_id, r.user_id, u.full_name AS author_name, r.rating, r.comment, \
                r.created_at \
         FROM reviews r JOIN users u ON u.id = r.user_id \
         WHERE r.product_id = $1 ORDER BY r.created_at DESC, r.id DESC"
    )
    .query_as()
    .bind(product_id)
    .fetch_all(conn)
    .await
}

/// A new review of an active product; `None` if there is no such product. A second
/// review by the same customer violates `reviews_product_user_key`.
pub async fn insert(
    conn: &mut PgConnection,
    product_id: i64,
    user_id: i64,
    rating: i16,
    comment: &str,
) -> sqlx::Result<Option<ReviewView>> {
    statement!(
        "WITH inserted AS ( \
             INSERT INTO reviews (product_id, user_id, rating, comment) \
             SELECT p.id, $2, $3, $4 FROM products p WHERE p.id = $1 AND p.is_active \
             RETURNING id, product_id, user_id, rating, comment, created_at) \
         SELECT i.id, i.product_id, i.user_id, u.full_name AS author_name, i.rating, i.comment, \
                i.created_at \
         FROM inserted i JOIN users u ON u.id = i.user_id"
    )
    .query_as()
    .bind(product_id)
    .bind(user_id)
    .bind(rating)
    .bind(comment)
    .fetch_optional(conn)
    .await
}
