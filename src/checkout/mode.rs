//! Which checkout runs: the original blocking one, or the asynchronous one that answers
//! 202 and leaves the payment and the e-mail to workers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CheckoutMode {
    /// Eleven steps in one transaction, the gateway and the mail server inside it.
    Blocking,
    /// One short transaction, then 202; workers charge, confirm and send the e-mail.
    Async,
}

impl CheckoutMode {
    pub const ALL: [Self; 2] = [Self::Blocking, Self::Async];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocking => "blocking",
            Self::Async => "async",
        }
    }
}

impl std::str::FromStr for CheckoutMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("expected blocking or async, got {s:?}"))
    }
}
