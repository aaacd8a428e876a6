//! Orders have one home: the model the API shows ([`model`]), how orders are written
//! and read back ([`store`]), what may happen to them afterwards ([`lifecycle`]), and
//! when their background work happened ([`timeline`]).
//!
//! The checkout creates orders through [`store`]; the HTTP handlers only call in here.

pub mod lifecycle;
mod model;
pub mod store;
pub mod timeline;

pub use model::{OrderStatus, OrderView, PaymentStatus, PaymentView};
