//! Product reviews: one per customer and product.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, OnConstraint};
use super::extract::{AuthUser, Json, Path};
use super::openapi::Conflict;
use crate::domain::{Rating, ReviewComment};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_reviews, create_review))
}

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReview {
    pub rating: Rating,
    pub comment: Option<ReviewComment>,
}

/// A product's reviews, newest first.
#[utoipa::path(
    get, path = "/api/products/{id}/reviews", tag = "reviews",
    params(("id" = i64, Path, description = "Product id")),
    responses((status = 200, description = "Reviews, newest first", body = Vec<ReviewView>))
)]
async fn list_reviews(
    State(state): State<AppState>,
    Path(product_id): Path<i64>,
) -> Result<Json<Vec<ReviewView>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1 AND is_active)")
            .bind(product_id)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(ApiError::not_found(format!("product {product_id}")));
    }
    let reviews = sqlx::query_as(
        "SELECT r.id, r.product_id, r.user_id, u.full_name AS author_name, r.rating, r.comment, \
                r.created_at \
         FROM reviews r JOIN users u ON u.id = r.user_id \
         WHERE r.product_id = $1 ORDER BY r.created_at DESC, r.id DESC",
    )
    .bind(product_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(reviews))
}

/// Review a product (one review per customer and product).
#[utoipa::path(
    post, path = "/api/products/{id}/reviews", tag = "reviews",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Product id")),
    request_body = NewReview,
    responses(
        (status = 201, description = "Review created", body = ReviewView),
        (status = 409, response = Conflict),
    )
)]
async fn create_review(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<i64>,
    Json(review): Json<NewReview>,
) -> Result<(StatusCode, Json<ReviewView>), ApiError> {
    let mut conn = state.db.acquire().await?;
    let created: Option<ReviewView> = sqlx::query_as(
        "WITH inserted AS ( \
             INSERT INTO reviews (product_id, user_id, rating, comment) \
             SELECT p.id, $2, $3, $4 FROM products p WHERE p.id = $1 AND p.is_active \
             RETURNING id, product_id, user_id, rating, comment, created_at) \
         SELECT i.id, i.product_id, i.user_id, u.full_name AS author_name, i.rating, i.comment, \
                i.created_at \
         FROM inserted i JOIN users u ON u.id = i.user_id",
    )
    .bind(product_id)
    .bind(user.id)
    .bind(review.rating.get())
    .bind(review.comment.as_ref().map_or("", |c| c.as_str()))
    .fetch_optional(&mut *conn)
    .await
    .on_constraint("reviews_product_user_key", || {
        ApiError::AlreadyExists(format!("you have already reviewed product {product_id}"))
    })?;
    created
        .map(|review| (StatusCode::CREATED, Json(review)))
        .ok_or_else(|| ApiError::not_found(format!("product {product_id}")))
}
