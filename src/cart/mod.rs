//! The shopping cart: one per customer, created on first use. The model is here; every
//! statement on the `carts` and `cart_items` tables is in [`store`]. The HTTP handlers
//! and the checkout both read the cart through it, as one [`Cart`].

pub mod store;

use rust_decimal::Decimal;

use crate::domain::LineItem;

/// A customer's cart with the products' names and prices as they are now.
#[derive(Debug, Clone, Default)]
pub struct Cart {
    /// Sorted by product id: the order in which a checkout takes its row locks.
    pub lines: Vec<CartLine>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CartLine {
    /// The cart item's id, for changing or removing it.
    pub id: i64,
    pub product_id: i64,
    pub product_name: String,
    pub unit_price: Decimal,
    pub quantity: i32,
    /// False once the product was taken off the catalog.
    pub is_active: bool,
}

impl CartLine {
    pub fn item(&self) -> LineItem {
        LineItem::new(
            self.product_id,
            self.product_name.clone(),
            self.unit_price,
            self.quantity,
        )
    }
}

impl Cart {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// One line item per product, at today's prices.
    pub fn items(&self) -> Vec<LineItem> {
        self.lines.iter().map(CartLine::item).collect()
    }

    /// What the cart costs now, to the cent.
    pub fn total(&self) -> Decimal {
        let mut total: Decimal = self
            .lines
            .iter()
            .map(|line| line.unit_price * Decimal::from(line.quantity))
            .sum();
        total.rescale(2);
        total
    }

    /// `(product id, quantity)` pairs, for the inventory.
    pub fn units(&self) -> impl Iterator<Item = (i64, i32)> + '_ {
        self.lines
            .iter()
            .map(|line| (line.product_id, line.quantity))
    }
}
