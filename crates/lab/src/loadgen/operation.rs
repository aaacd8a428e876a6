//! What a shopper (or the load generator itself) asks the service: the operations the
//! report counts, the SLOs judge and the charts colour.

use strum::{IntoStaticStr, VariantArray};

/// What a shopper (or the load generator itself) asked the service: the rows of the
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Operation {
    Register,
    Login,
    Browse,
    ViewProduct,
    AddToCart,
    Checkout,
    AbandonCart,
    FollowOrder,
    /// The load generator reading the catalog (before the run, and to restock).
    Catalog,
    /// The load generator putting stock back.
    Restock,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
