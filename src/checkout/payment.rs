//! The payment gateway, behind a small trait so that the checkout does not care whether
//! it talks to a simulator or to a real provider.

use std::future::Future;
use std::pin::Pin;

use opentelemetry::trace::Status;
use std::time::Instant;

use metrics::histogram;
use rust_decimal::Decimal;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::faults::Faults;
use crate::orders::PaymentMethod;
use crate::telemetry::metrics::PAYMENT_GATEWAY_DURATION;

/// A successful charge.
#[derive(Debug, Clone)]
pub struct Charge {
    pub transaction_id: String,
    pub amount: Decimal,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment was declined by the issuer")]
    Declined,
}

pub type ChargeFuture<'a> = Pin<Box<dyn Future<Output = Result<Charge, PaymentError>> + Send + 'a>>;

pub trait PaymentGateway: Send + Sync {
    fn charge(&self, order_id: i64, amount: Decimal, method: PaymentMethod) -> ChargeFuture<'_>;
}

/// A gateway that behaves like a slow, occasionally declining provider: it waits the
/// configured delay, then approves with the configured probability. Both can be
/// changed at run time through [`Faults`].
pub struct SimulatedGateway {
    faults: Faults,
}

impl SimulatedGateway {
    pub fn new(faults: Faults) -> Self {
        Self { faults }
    }
}

impl PaymentGateway for SimulatedGateway {
    fn charge(&self, order_id: i64, amount: Decimal, method: PaymentMethod) -> ChargeFuture<'_> {
        let settings = self.faults.current();
        let span = tracing::info_span!(
            "payment_gateway.charge",
            otel.kind = "client",
            peer.service = "payment-gateway",
            order.id = order_id,
            payment.amount = %amount,
            payment.method = method.as_str(),
            payment.approved = tracing::field::Empty,
        );
        let call = async move {
            let started = Instant::now();
            tokio::time::sleep(settings.payment_delay).await;
            let approved = rand::random::<f64>() < settings.payment_success_rate;
            tracing::Span::current().record("payment.approved", approved);
            let outcome = if approved { "approved" } else { "declined" };
            histogram!(PAYMENT_GATEWAY_DURATION, "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            if approved {
                Ok(Charge {
                    transaction_id: format!("txn_{}", uuid::Uuid::new_v4().simple()),
                    amount,
                })
            } else {
                tracing::Span::current().set_status(Status::error("declined"));
                Err(PaymentError::Declined)
            }
        };
        Box::pin(call.instrument(span))
    }
}
