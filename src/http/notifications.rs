//! The in-app inbox: one notification per confirmed order.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::extract::{AuthUser, Json, Path, Query};
use crate::notifications::NotificationKind;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct NotificationView {
    pub id: i64,
    /// What happened.
    pub kind: NotificationKind,
    pub message: String,
    pub is_read: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationFilter {
    /// Only notifications not yet marked read.
    #[serde(default)]
    pub unread_only: bool,
}

/// The caller's notifications, newest first.
#[utoipa::path(
    get, path = "/api/notifications", tag = "notifications",
    security(("bearer" = [])),
    params(NotificationFilter),
    responses((status = 200, description = "Notifications, newest first", body = Vec<NotificationView>,
            links(
                ("MarkRead" = (operation_id = "mark_read", parameters(("id" = "$response.body#/0/id"))))
            )
        ))
)]
async fn list_notifications(
    State(state): State<AppState>,
    user: AuthUser,
    Query(filter): Query<NotificationFilter>,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let notifications = sqlx::query_as(
        "SELECT id, kind, message, is_read, created_at FROM notifications \
         WHERE user_id = $1 AND (NOT $2 OR NOT is_read) \
         ORDER BY created_at DESC, id DESC LIMIT 100",
    )
    .bind(user.id)
    .bind(filter.unread_only)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(notifications))
}

/// Mark one of your notifications as read.
#[utoipa::path(
    post, path = "/api/notifications/{id}/read", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Notification id")),
    responses((status = 200, description = "The notification, now read", body = NotificationView))
)]
async fn mark_read(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<NotificationView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let notification: Option<NotificationView> = sqlx::query_as(
        "UPDATE notifications SET is_read = TRUE WHERE id = $1 AND user_id = $2 \
         RETURNING id, kind, message, is_read, created_at",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(&mut *conn)
    .await?;
    notification
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("notification {id}")))
}
