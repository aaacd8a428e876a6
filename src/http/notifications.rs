//! The in-app inbox: one notification per confirmed order.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{AuthUser, Json, Path, Query};
use super::state::AppState;
use crate::notifications::{self, NotificationView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
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
    let listed = notifications::of_user(&mut conn, user.id, filter.unread_only).await?;
    Ok(Json(listed))
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
    notifications::mark_read(&mut conn, user.id, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("notification {id}")))
}
