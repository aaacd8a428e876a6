//! The in-app inbox: what the service tells a customer about their orders. The model and
//! every statement on the `notifications` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::db::statement;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct NotificationView {
    pub id: i64,
    /// What happened.
    pub kind: NotificationKind,
    pub message: String,
    pub is_read: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum NotificationKind {
    OrderConfirmed,
    /// The asynchronous checkout's payment was declined.
    PaymentFailed,
    /// The order was cancelled (and its payment refunded).
    OrderCancelled,
}

/// A new, unread notification for `user_id`.
pub async fn notify(
    conn: &mut PgConnection,
    user_id: i64,
    kind: NotificationKind,
    message: &str,
) -> sqlx::Result<()> {
    statement!("INSERT INTO notifications (user_id, kind, message) VALUES ($1, $2, $3)")
        .query()
        .bind(user_id)
        .bind(kind)
        .bind(message)
        .execute(conn)
        .await?;
    Ok(())
}

/// A customer's latest notifications (at most 100), newest first.
pub async fn of_user(
    conn: &mut PgConnection,
    user_id: i64,
    unread_only: bool,
) -> sqlx::Result<Vec<NotificationView>> {
    statement!(
        "SELECT id, kind, message, is_read, created_at FROM notifications \
         WHERE user_id = $1 AND (NOT $2 OR NOT is_read) \
         ORDER BY created_at DESC, id DESC LIMIT 100"
    )
    .query_as()
    .bind(user_id)
    .bind(unread_only)
    .fetch_all(conn)
    .await
}

/// Marks one of the customer's notifications read; `None` if they have no such one.
pub async fn mark_read(
    conn: &mut PgConnection,
    user_id: i64,
    id: i64,
) -> sqlx::Result<Option<NotificationView>> {
    statement!(
        "UPDATE notifications SET is_read = TRUE WHERE id = $1 AND user_id = $2 \
         RETURNING id, kind, message, is_read, created_at"
    )
    .query_as()
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}
