use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

/// The kinds of outbox job: the `kind` column, the label of the outbox's metrics, and
/// what an admin names to replay dead letters.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    sqlx::Type,
    IntoStaticStr,
    VariantArray,
    EnumString,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    /// Charge an accepted order, then confirm it (or fail it).
    ChargeOrder,
    /// Send a confirmed order's e-mail.
    SendConfirmation,
    /// Tell the customer their order was cancelled and what was refunded.
    SendCancellation,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
