//! What may happen to an order after the checkout: shipped, delivered, or cancelled
//! while nothing has shipped (the stock goes back and the payment is refunded).

use sqlx::PgConnection;

use super::model::{OrderStatus, OrderView, PaymentStatus};
use super::store;
use crate::db::{self, Database};
use crate::inventory;
use crate::notifications::{NotificationKind, notify};
use crate::outbox::{self, Refund, SendCancellation, Task};
use crate::payment::{PaymentGateway, RefundError};
use crate::telemetry::current_traceparent;

impl OrderStatus {
    /// The transitions an admin may make: confirmed → shipped → delivered, and
    /// cancellation as long as nothing has shipped.
    pub fn can_become(self, next: OrderStatus) -> bool {
        matches!(
            (self, next),
            (Self::Confirmed, Self::Shipped)
                | (Self::Shipped, Self::Delivered)
                | (Self::Confirmed, Self::Cancelled)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("order {0} not found")]
    NotFound(i64),
    #[error("order {id} is {} and cannot become {}", .from.as_str(), .to.as_str())]
    InvalidTransition {
        id: i64,
        from: OrderStatus,
        to: OrderStatus,
    },
    #[error("the refund failed: {0}")]
    Refund(#[from] RefundError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Moves an order to `next`, with the effects that belong to it, in one transaction.
/// A cancellation refunds through the gateway before it commits: if the commit then
/// fails, the cancellation can be repeated, and the gateway refunds only once. It tells
/// the customer — a notification, and an e-mail through the outbox, in the same
/// transaction — and a confirmation e-mail not yet sent is then skipped.
pub async fn change_status(
    db: &Database,
    gateway: &dyn PaymentGateway,
    order_id: i64,
    next: OrderStatus,
) -> Result<OrderView, LifecycleError> {
    let mut tx = db.begin().await?;
    let current = store::lock_status(&mut tx, order_id)
        .await?
        .ok_or(LifecycleError::NotFound(order_id))?;
    if !current.can_become(next) {
        return Err(LifecycleError::InvalidTransition {
            id: order_id,
            from: current,
            to: next,
        });
    }
    store::set_status(&mut tx, order_id, next).await?;
    let refund = if next == OrderStatus::Cancelled {
        inventory::put_back_order(&mut tx, order_id).await?;
        match store::payment_of(&mut tx, order_id).await? {
            Some((transaction_id, amount)) => {
                gateway.refund(&transaction_id).await?;
                store::mark_payment(&mut tx, order_id, PaymentStatus::Refunded).await?;
                Some(Refund {
                    amount,
                    transaction_id,
                })
            }
            None => None,
        }
    } else {
        None
    };
    let order = store::fetch(&mut tx, order_id)
        .await?
        .ok_or(LifecycleError::NotFound(order_id))?;
    if next == OrderStatus::Cancelled {
        tell_cancelled(&mut tx, &order, refund).await?;
    }
    db::commit(tx).await?;
    tracing::info!(
        order.id = order_id,
        from = current.as_str(),
        to = next.as_str(),
        "order status changed"
    );
    Ok(order)
}

/// The customer hears of a cancellation twice: in the app, and by e-mail (a job of the
/// outbox, committed with the cancellation, carrying the trace it happened in).
async fn tell_cancelled(
    tx: &mut PgConnection,
    order: &OrderView,
    refund: Option<Refund>,
) -> Result<(), LifecycleError> {
    let money = match &refund {
        Some(refund) => format!("your payment of {:.2} was refunded", refund.amount),
        None => "nothing was charged".to_string(),
    };
    let message = format!("Your order #{} was cancelled; {money}.", order.id);
    notify(
        tx,
        order.user_id,
        NotificationKind::OrderCancelled,
        &message,
    )
    .await?;
    let customer = store::customer_of(tx, order.id)
        .await?
        .ok_or(LifecycleError::NotFound(order.id))?;
    let task = Task::SendCancellation(SendCancellation { customer, refund });
    outbox::enqueue(tx, order.id, &task, current_traceparent().as_deref()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;

    #[test]
    fn lifecycle_moves_forward_only() {
        assert!(Confirmed.can_become(Shipped));
        assert!(Shipped.can_become(Delivered));
        assert!(Confirmed.can_become(Cancelled));
        assert!(!Shipped.can_become(Cancelled));
        assert!(!Delivered.can_become(Shipped));
        assert!(!Cancelled.can_become(Confirmed));
        assert!(!Confirmed.can_become(Delivered));
        assert!(!Confirmed.can_become(Confirmed));
    }
}
