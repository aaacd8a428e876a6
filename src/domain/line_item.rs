use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One product line of a cart or an order: the product, its unit price, how many, and
/// what they cost together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct LineItem {
    pub product_id: i64,
    #[schema(example = "Electric Kettle 1.7 l")]
    pub product_name: String,
    #[schema(value_type = String, example = "19.99")]
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    pub quantity: i32,
    #[schema(value_type = String, example = "39.98")]
    #[serde(with = "rust_decimal::serde::str")]
    pub subtotal: Decimal,
}

impl LineItem {
    pub fn new(product_id: i64, product_name: String, unit_price: Decimal, quantity: i32) -> Self {
        Self {
            product_id,
            product_name,
            unit_price,
            quantity,
            subtotal: unit_price * Decimal::from(quantity),
        }
    }
}
