//! The "after" picture: the same checkout, asynchronous. The request does only what
//! must be synchronous, in one short transaction — validate the cart, lock and reserve
//! the inventory (so K units still give exactly K orders), create the order `pending`
//! with its items, clear the cart, and enqueue the payment in the outbox — and answers
//! 202 in milliseconds. The workers (`super::workers`) charge, confirm and e-mail.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::SemaphorePermit;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    Basket, Checkout, CheckoutError, CheckoutRequest, check_inventory, clear_cart, create_order,
    create_order_items, observe_step, reserve_inventory, rollback, validate_cart,
};
use crate::orders::OrderView;
use crate::orders::store::OrderRow;
use crate::outbox::{self, ChargeOrder, Task};

impl Checkout {
    /// The request path of the asynchronous checkout: the order `pending`, its payment
    /// enqueued, all or nothing.
    pub(super) async fn accept(
        &self,
        user_id: i64,
        request: &CheckoutRequest,
    ) -> Result<OrderView, CheckoutError> {
        let _admitted = self.unless_stopped(self.admit()).await?;
        let mut tx = self
            .unless_stopped(async { Ok(self.db.begin().await?) })
            .await?;
        let accepted = self
            .unless_stopped(async {
                let tx = &mut *tx;
                let basket = step!(validate_cart(tx, user_id))?;
                step!(check_inventory(tx, &basket.cart))?;
                step!(reserve_inventory(tx, &basket.cart))?;
                let order = step!(create_order(tx, &basket, request))?;
                let items = step!(create_order_items(tx, &order, &basket.cart))?;
                step!(clear_cart(tx, basket.user_id))?;
                step!(enqueue_payment(tx, &order, basket, request))?;
                Ok(order.into_view(items, None))
            })
            .await;
        match accepted {
            Ok(order) => step!(commit(tx, order)),
            Err(error) => {
                rollback(tx).await;
                Err(error)
            }
        }
    }

    /// A place among the checkouts in the database now; a `checkout.admission` span
    /// when this one had to queue for it.
    async fn admit(&self) -> Result<SemaphorePermit<'_>, CheckoutError> {
        self.db
            .enter_async_share(|| tracing::info_span!("checkout.admission"))
            .await
            // Never closed; if it were, this checkout could not start: as at shutdown.
            .map_err(|_closed| CheckoutError::Interrupted)
    }
}

/// The payment job, in the same transaction as the order, carrying the request's trace
/// context so that the job's spans continue this trace.
async fn enqueue_payment(
    tx: &mut PgConnection,
    order: &OrderRow,
    basket: Basket,
    request: &CheckoutRequest,
) -> Result<(), CheckoutError> {
    let task = Task::ChargeOrder(ChargeOrder {
        payment_method: request.payment_method,
        customer: basket.customer,
    });
    let traceparent = current_traceparent();
    outbox::enqueue(tx, order.id, &task, traceparent.as_deref()).await?;
    Ok(())
}

/// Then commit: the order is accepted, `pending` until the workers settle it.
async fn commit(
    tx: Transaction<'static, Postgres>,
    order: OrderView,
) -> Result<OrderView, CheckoutError> {
    tx.commit().await?;
    Ok(order)
}

/// The W3C `traceparent` of the current span, if it is being traced.
pub(super) fn current_traceparent() -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}
