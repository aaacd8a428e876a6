//! The payment an earlier attempt under a customer's `Idempotency-Key` took, when the
//! cart no longer matches it: given back, so that no money stays without an order.

use rust_decimal::Decimal;

use super::error::CheckoutError;
use crate::db::Database;
use crate::orders::store;
use crate::payment::{ChargeStatus, EarlierCharge, PaymentError, PaymentGateway};

/// Gives back `earlier` and tells the customer to check out anew
/// ([`CheckoutError::CartChanged`], refunded) — unless an order holds that payment:
/// then the order is the key's answer, and the idempotency layer answers with it.
#[tracing::instrument(name = "checkout.refund_earlier_payment", skip_all, fields(
    payment.transaction_id = earlier.transaction_id.as_deref(),
    payment.amount = %earlier.amount,
))]
pub(super) async fn give_back(
    db: &Database,
    gateway: &dyn PaymentGateway,
    earlier: EarlierCharge,
    total: Decimal,
) -> CheckoutError {
    let transaction_id = match (&earlier.status, &earlier.transaction_id) {
        (ChargeStatus::Approved, Some(transaction_id)) => transaction_id.clone(),
        // Given back already (or nothing was taken).
        _ => {
            return CheckoutError::CartChanged {
                earlier,
                total,
                refunded: true,
            };
        }
    };
    let paying = async {
        let mut conn = db.acquire().await?;
        store::order_paid_by(&mut conn, &transaction_id).await
    };
    match paying.await {
        Ok(None) => {}
        Ok(Some(_order)) => return CheckoutError::Payment(PaymentError::KeyReused(earlier)),
        Err(error) => return CheckoutError::Database(error),
    }
    if let Err(error) = gateway.refund(&transaction_id).await {
        return CheckoutError::Payment(PaymentError::Unavailable(error.to_string()));
    }
    tracing::warn!(
        payment.transaction_id = %transaction_id,
        payment.amount = %earlier.amount,
        order.total = %total,
        "refunded the payment of an earlier attempt under the same Idempotency-Key: \
         the cart changed since"
    );
    CheckoutError::CartChanged {
        earlier,
        total,
        refunded: true,
    }
}
