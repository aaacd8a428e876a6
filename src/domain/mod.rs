//! Types that parse instead of validate: once a value of one of these types exists,
//! it is known to be valid, so handlers and the checkout never re-check it.
//!
//! Each type deserializes through its parser, so a bad field in a request body
//! becomes a 422 naming that field (see `http::extract`).

mod email;
mod line_item;
mod money;
mod password;
mod quantity;
mod rating;
mod stock;
mod text;
mod whole_number;

pub use email::Email;
pub use line_item::LineItem;
pub use money::{AMOUNT_PATTERN, Amount, MONEY_PATTERN, Money};
pub use password::Password;
pub use quantity::Quantity;
pub use rating::Rating;
pub use stock::{StockLevel, StockShortage};
pub use text::{
    BoundedText, CategoryName, Description, FullName, ProductName, ReviewComment, SearchText,
    ShippingAddress,
};
pub use whole_number::{WholeNumber, optional_whole, whole};
