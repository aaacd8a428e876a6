//! Every cent accounted for: the gateway's ledger compared with the shop's orders.
//!
//! Every approved charge is exactly one of: the payment of a confirmed order, refunded,
//! or without an order — an orphaned payment, the money the all-or-nothing checkout
//! loses (a charge between the gateway's answer and the commit is briefly "without an
//! order" too). Here the ledger is read from its table; against a real provider it
//! would be the provider's settlement report.

use chrono::{DateTime, Utc};
use metrics::gauge;
use rust_decimal::Decimal;
use serde::Serialize;
use std::time::Duration;

use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::db::{Database, statement};
use crate::domain::cents;
use crate::telemetry::metrics::{PAYMENTS_WITHOUT_ORDER, PAYMENTS_WITHOUT_ORDER_AMOUNT};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reconciliation {
    /// Charges the gateway approved, refunded ones included.
    pub approved_charges: i64,
    /// Approved charges that pay for an order the shop has.
    pub with_order: i64,
    /// Approved charges given back.
    pub refunded: i64,
    /// Approved charges with no order and no refund: orphaned payments.
    pub without_order: i64,
    #[schema(value_type = String, example = "59.97")]
    #[serde(with = "rust_decimal::serde::str")]
    pub without_order_amount: Decimal,
    /// Charges the gateway declined (no money moved).
    pub declined_charges: i64,
    /// The charges without an order, newest first (at most 100).
    pub charges_without_order: Vec<ChargeWithoutOrder>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ChargeWithoutOrder {
    pub transaction_id: String,
    /// The order the charge was for; it was rolled back.
    pub order_id: i64,
    #[schema(value_type = String, example = "19.99")]
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub charged_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Totals {
    approved_charges: i64,
    with_order: i64,
    refunded: i64,
    without_order: i64,
    without_order_amount: Decimal,
    declined_charges: i64,
}

pub async fn reconcile(conn: &mut PgConnection) -> sqlx::Result<Reconciliation> {
    let totals: Totals = statement!(
        "SELECT count(*) FILTER (WHERE g.status <> 'declined') AS approved_charges, \
                count(*) FILTER (WHERE g.status = 'approved' AND p.id IS NOT NULL) AS with_order, \
                count(*) FILTER (WHERE g.status = 'refunded') AS refunded, \
                count(*) FILTER (WHERE g.status = 'approved' AND p.id IS NULL) AS without_order, \
                COALESCE(sum(g.amount) FILTER (WHERE g.status = 'approved' AND p.id IS NULL), 0) \
                    AS without_order_amount, \
                count(*) FILTER (WHERE g.status = 'declined') AS declined_charges \
         FROM gateway_charges g LEFT JOIN payments p ON p.transaction_id = g.transaction_id"
    )
    .query_as()
    .fetch_one(&mut *conn)
    .await?;
    let charges_without_order = statement!(
        "SELECT g.transaction_id, g.order_id, g.amount, g.charged_at \
         FROM gateway_charges g LEFT JOIN payments p ON p.transaction_id = g.transaction_id \
         WHERE g.status = 'approved' AND p.id IS NULL \
         ORDER BY g.charged_at DESC, g.id DESC LIMIT 100"
    )
    .query_as()
    .fetch_all(&mut *conn)
    .await?;
    Ok(Reconciliation {
        approved_charges: totals.approved_charges,
        with_order: totals.with_order,
        refunded: totals.refunded,
        without_order: totals.without_order,
        without_order_amount: totals.without_order_amount,
        declined_charges: totals.declined_charges,
        charges_without_order,
    })
}

/// Keeps the `payments_without_order` gauges current, reading every `every` on `ledger`
/// (the gateway's own connections: a scrape or a saturated shop pool never waits on it).
/// The charges without an order found by the first reading are logged once, with their
/// order ids: after a crash, the money a previous process lost is named at start.
pub async fn export_periodically(ledger: Database, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        if !ledger.is_reachable() {
            continue;
        }
        let read = async {
            let mut conn = ledger.acquire().await?;
            reconcile(&mut conn).await
        };
        if let Ok(Ok(reconciliation)) = tokio::time::timeout(every, read).await {
            export_gauges(&reconciliation);
            if std::mem::take(&mut first) && reconciliation.without_order > 0 {
                log_found_at_start(&reconciliation);
            }
        }
    }
}

fn log_found_at_start(reconciliation: &Reconciliation) {
    let order_ids: Vec<i64> = reconciliation
        .charges_without_order
        .iter()
        .map(|charge| charge.order_id)
        .collect();
    tracing::error!(
        charges = reconciliation.without_order,
        amount = %reconciliation.without_order_amount,
        ?order_ids,
        "charges without an order in the gateway's ledger at start: money was taken for \
         orders that do not exist (see GET /api/admin/reconciliation); refund them"
    );
}

/// Sets the `payments_without_order` gauges from the ledger.
pub fn export_gauges(reconciliation: &Reconciliation) {
    gauge!(PAYMENTS_WITHOUT_ORDER).set(reconciliation.without_order as f64);
    gauge!(PAYMENTS_WITHOUT_ORDER_AMOUNT).set(cents(reconciliation.without_order_amount) as f64);
}
