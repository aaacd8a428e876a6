//! Product reviews: one per customer and product.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, OnConstraint};
use super::extract::{AuthUser, Json, Path};
use super::openapi::Conflict;
use super::state::AppState;
use crate::catalog;
use crate::domain::{Rating, ReviewComment};
use crate::reviews::{self, ReviewView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_reviews, create_review))
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
    if !catalog::store::is_active(&mut conn, product_id).await? {
        return Err(ApiError::not_found(format!("product {product_id}")));
    }
    Ok(Json(reviews::of_product(&mut conn, product_id).await?))
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
    let comment = review.comment.as_ref().map_or("", |c| c.as_str());
    let created = reviews::insert(&mut conn, product_id, user.id, review.rating.get(), comment)
        .await
        .on_constraint("reviews_product_user_key", || {
            ApiError::AlreadyExists(format!("you have already reviewed product {product_id}"))
        })?;
    created
        .map(|review| (StatusCode::CREATED, Json(review)))
        .ok_or_else(|| ApiError::not_found(format!("product {product_id}")))
}
