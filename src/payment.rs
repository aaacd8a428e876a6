//! The payment gateway, an external system's client beside the database's: behind a
//! small trait, so that the checkout does not care whether it talks to a simulator or
//! to a real provider.
//!
//! The simulator behaves like an external provider in the one way that matters for the
//! lesson: what it charged stays charged. It keeps its own ledger (`gateway_charges`),
//! written on its own connections outside any checkout transaction, keyed by an
//! idempotency key — a retried call gets the first answer back and is never charged
//! twice. Reconciliation (`crate::reconciliation`) compares that ledger with the orders.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use metrics::histogram;
use opentelemetry::trace::Status;
use rust_decimal::Decimal;
use sqlx::PgPool;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::PaymentMethod;
use crate::live_settings::LiveSettings;
use crate::telemetry::metrics::PAYMENT_GATEWAY_DURATION;

/// What to charge, and the key that makes the charge happen at most once.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// `order-<id>`: one charge per order, whoever asks and however often.
    pub idempotency_key: String,
    pub order_id: i64,
    pub amount: Decimal,
    pub method: PaymentMethod,
}

impl ChargeRequest {
    pub fn for_order(order_id: i64, amount: Decimal, method: PaymentMethod) -> Self {
        Self {
            idempotency_key: format!("order-{order_id}"),
            order_id,
            amount,
            method,
        }
    }
}

/// A successful charge.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub transaction_id: String,
    pub amount: Decimal,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment was declined by the issuer")]
    Declined,
    /// Nothing was charged: the gateway could not be reached.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("the gateway knows no approved charge {0}")]
    UnknownCharge(String),
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
}

pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait PaymentGateway: Send + Sync {
    /// Charges once per idempotency key; a repeated key returns the first answer.
    fn charge(&self, request: ChargeRequest) -> GatewayFuture<'_, Result<Charge, PaymentError>>;
    /// Gives an approved charge back; refunding twice is not an error.
    fn refund(&self, transaction_id: &str) -> GatewayFuture<'_, Result<(), RefundError>>;
}

/// A gateway that behaves like a slow, occasionally declining provider: it waits the
/// configured delay, then approves with the configured probability. Both can be
/// changed at run time through [`LiveSettings`].
pub struct SimulatedGateway {
    live: LiveSettings,
    /// The gateway's own connections: an external system does not queue behind the
    /// shop's connection pool.
    ledger: PgPool,
}

/// How many connections the simulated gateway keeps for its ledger.
pub const LEDGER_CONNECTIONS: u32 = 4;

impl SimulatedGateway {
    pub fn new(live: LiveSettings, ledger: PgPool) -> Self {
        Self { live, ledger }
    }

    async fn charge_once(&self, request: &ChargeRequest) -> Result<Charge, PaymentError> {
        // A known key is answered at once, like a real provider's idempotent replay.
        if let Some(earlier) = self.recorded(&request.idempotency_key).await? {
            return earlier;
        }
        let settings = self.live.faults();
        tokio::time::sleep(settings.payment_delay).await;
        let approved = rand::random::<f64>() < settings.payment_success_rate;
        let transaction_id = approved.then(|| format!("txn_{}", uuid::Uuid::new_v4().simple()));
        // Two calls racing with one key: the first row wins, both get its answer.
        sqlx::query(
            "INSERT INTO gateway_charges \
               (idempotency_key, order_id, amount, method, status, transaction_id) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&request.idempotency_key)
        .bind(request.order_id)
        .bind(request.amount)
        .bind(request.method)
        .bind(if approved { "approved" } else { "declined" })
        .bind(&transaction_id)
        .execute(&self.ledger)
        .await
        .map_err(unavailable)?;
        self.recorded(&request.idempotency_key)
            .await?
            .unwrap_or_else(|| {
                Err(PaymentError::Unavailable(
                    "the charge was not recorded".into(),
                ))
            })
    }

    /// The answer recorded for `key`, if the gateway has seen it.
    async fn recorded(
        &self,
        key: &str,
    ) -> Result<Option<Result<Charge, PaymentError>>, PaymentError> {
        let row: Option<(String, Option<String>, Decimal)> = sqlx::query_as(
            "SELECT status, transaction_id, amount FROM gateway_charges WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.ledger)
        .await
        .map_err(unavailable)?;
        Ok(
            row.map(|(status, transaction_id, amount)| match transaction_id {
                Some(transaction_id) if status != "declined" => Ok(Charge {
                    transaction_id,
                    amount,
                }),
                _ => Err(PaymentError::Declined),
            }),
        )
    }
}

fn unavailable(error: sqlx::Error) -> PaymentError {
    PaymentError::Unavailable(error.to_string())
}

impl PaymentGateway for SimulatedGateway {
    fn charge(&self, request: ChargeRequest) -> GatewayFuture<'_, Result<Charge, PaymentError>> {
        let span = tracing::info_span!(
            "payment_gateway.charge",
            otel.kind = "client",
            peer.service = "payment-gateway",
            order.id = request.order_id,
            payment.amount = %request.amount,
            payment.method = request.method.as_str(),
            payment.idempotency_key = %request.idempotency_key,
            payment.approved = tracing::field::Empty,
        );
        let call = async move {
            let started = Instant::now();
            let result = self.charge_once(&request).await;
            let outcome = match &result {
                Ok(_) => "approved",
                Err(PaymentError::Declined) => "declined",
                Err(PaymentError::Unavailable(_)) => "unavailable",
            };
            histogram!(PAYMENT_GATEWAY_DURATION, "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            let span = tracing::Span::current();
            span.record("payment.approved", result.is_ok());
            if let Err(error) = &result {
                span.set_status(Status::error(error.to_string()));
            }
            result
        };
        Box::pin(call.instrument(span))
    }

    fn refund(&self, transaction_id: &str) -> GatewayFuture<'_, Result<(), RefundError>> {
        let transaction_id = transaction_id.to_string();
        let span = tracing::info_span!(
            "payment_gateway.refund",
            otel.kind = "client",
            peer.service = "payment-gateway",
            payment.transaction_id = %transaction_id,
        );
        let call = async move {
            let refunded = sqlx::query(
                "UPDATE gateway_charges \
                 SET status = 'refunded', refunded_at = COALESCE(refunded_at, now()) \
                 WHERE transaction_id = $1 AND status IN ('approved', 'refunded')",
            )
            .bind(&transaction_id)
            .execute(&self.ledger)
            .await
            .map_err(|e| RefundError::Unavailable(e.to_string()))?;
            if refunded.rows_affected() == 0 {
                return Err(RefundError::UnknownCharge(transaction_id));
            }
            Ok(())
        };
        Box::pin(call.instrument(span))
    }
}
