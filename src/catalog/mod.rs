//! The catalog: categories and products as the API shows them. Every statement on the
//! `categories` and `products` tables is in [`store`]; stock is in `crate::inventory`.

pub mod store;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CategoryView {
    pub id: i64,
    #[schema(example = "Kitchen")]
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProductView {
    pub id: i64,
    #[schema(example = "Espresso machine")]
    pub name: String,
    pub description: String,
    #[schema(value_type = String, example = "249.00")]
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub category_id: i64,
    #[schema(example = "Kitchen")]
    pub category_name: String,
    /// Units available to buy now (on hand minus those held by running checkouts).
    #[schema(example = 12)]
    pub stock: i32,
    /// Mean review rating, 1 to 5; absent without reviews.
    #[schema(example = 4.5)]
    pub average_rating: Option<f64>,
    pub review_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which products a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ProductQuery<'a> {
    pub category_id: Option<i64>,
    /// Words to look for in the name or description (case-insensitive, literal).
    pub search: Option<&'a str>,
    pub min_price: Option<Decimal>,
    pub max_price: Option<Decimal>,
}
