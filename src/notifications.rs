//! The in-app inbox: what the service tells a customer about their orders.

use sqlx::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum NotificationKind {
    OrderConfirmed,
    /// The asynchronous checkout's payment was declined.
    PaymentFailed,
}

/// A new, unread notification for `user_id`.
pub async fn notify(
    conn: &mut PgConnection,
    user_id: i64,
    kind: NotificationKind,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO notifications (user_id, kind, message) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(kind)
        .bind(message)
        .execute(conn)
        .await?;
    Ok(())
}
