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
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use metrics::{gauge, histogram};
use opentelemetry::trace::Status;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::db::{Database, statement};
use crate::domain::{Dependency, PaymentMethod};
use crate::live_settings::LiveSettings;
use crate::resilience::Rungs;
use crate::telemetry::metrics::{PAYMENT_GATEWAY_DURATION, PAYMENT_GATEWAY_IN_FLIGHT};

/// What to charge, and the key that makes the charge happen at most once.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// One charge per key, whoever asks and however often (see [`ChargeKey`]).
    pub idempotency_key: String,
    pub order_id: i64,
    pub amount: Decimal,
    pub method: PaymentMethod,
    /// The caller knows no call under this key was made before (an order's key, on its
    /// first try): the gateway need not look for an earlier answer first. A hint for the
    /// fast path only — a key seen after all still gets its first answer.
    pub first_call: bool,
}

/// Whose intent a charge carries out: the gateway charges once per key.
#[derive(Debug, Clone, Copy)]
pub enum ChargeKey<'a> {
    /// `order-<id>`: one charge per order (the asynchronous checkout's jobs).
    Order,
    /// `client-<user>-<key>`: one charge per `Idempotency-Key` of a customer, whatever
    /// order it ends up paying for — so a checkout retried after losing its order gets
    /// the first charge back instead of taking the money twice.
    Client { user_id: i64, key: &'a str },
}

impl ChargeKey<'_> {
    /// The gateway's idempotency key for a charge of `order_id`.
    pub fn for_order(self, order_id: i64) -> String {
        match self {
            ChargeKey::Order => format!("order-{order_id}"),
            ChargeKey::Client { user_id, key } => format!("client-{user_id}-{key}"),
        }
    }
}

impl ChargeRequest {
    pub fn new(key: ChargeKey<'_>, order_id: i64, amount: Decimal, method: PaymentMethod) -> Self {
        Self {
            idempotency_key: key.for_order(order_id),
            order_id,
            amount,
            method,
            first_call: false,
        }
    }

    /// No call under this key can have been made before (see `first_call`).
    pub fn first_call(mut self, first: bool) -> Self {
        self.first_call = first;
        self
    }
}

/// A successful charge.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub transaction_id: String,
    pub amount: Decimal,
    /// The order the charge was first made for: another than the one asking when a
    /// retried checkout picks up the charge of the attempt that lost its order.
    pub first_order_id: i64,
}

/// What the gateway did under a key before.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierCharge {
    pub amount: Decimal,
    pub status: ChargeStatus,
    /// Set for approved (and later refunded) charges.
    pub transaction_id: Option<String>,
    /// The order the charge was made for.
    pub first_order_id: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    Approved,
    Declined,
    Refunded,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment was declined by the issuer")]
    Declined,
    /// Nothing was charged: the gateway could not be reached.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
    /// The key's earlier charge was for another amount, or was given back since: the
    /// gateway refuses to charge again under it, like a real provider's idempotent
    /// request with other parameters.
    #[error("{}", describe_reused(.0))]
    KeyReused(EarlierCharge),
}

fn describe_reused(earlier: &EarlierCharge) -> String {
    match earlier.status {
        ChargeStatus::Refunded => format!(
            "the charge of {:.2} under this idempotency key was refunded; it pays for nothing",
            earlier.amount
        ),
        _ => format!(
            "this idempotency key was used for a charge of {:.2}, not this amount",
            earlier.amount
        ),
    }
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
    /// What the gateway did under `idempotency_key` before, if anything; charges nothing.
    fn earlier_charge(
        &self,
        idempotency_key: String,
    ) -> GatewayFuture<'_, Result<Option<EarlierCharge>, PaymentError>>;
    /// Gives an approved charge back; refunding twice is not an error.
    fn refund(&self, transaction_id: &str) -> GatewayFuture<'_, Result<(), RefundError>>;
}

/// A gateway that behaves like a slow, occasionally declining provider: it waits the
/// configured delay, then approves with the configured probability. Both can be
/// changed at run time through [`LiveSettings`].
pub struct SimulatedGateway {
    live: LiveSettings,
    /// The gateway's own connections: an external system does not queue behind the
    /// shop's connection pool. They share the shop's probe, so a database outage fails
    /// a charge at once instead of after an acquire timeout.
    ledger: Database,
    /// The client's rungs: timeout, retries, breaker.
    rungs: Rungs,
    /// Calls the gateway is serving now: what an overload fault counts.
    in_flight: Arc<AtomicU32>,
}

/// One call being served; counted while it lives.
struct Serving(Arc<AtomicU32>);

impl Serving {
    /// Counts a call in; returns it with the calls in flight, this one included.
    fn enter(counter: &Arc<AtomicU32>) -> (Self, u32) {
        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
        gauge!(PAYMENT_GATEWAY_IN_FLIGHT).set(f64::from(now));
        (Self(Arc::clone(counter)), now)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        gauge!(PAYMENT_GATEWAY_IN_FLIGHT).set(f64::from(now));
    }
}

/// How many connections the simulated gateway keeps for its ledger.
pub const LEDGER_CONNECTIONS: u32 = 4;

impl SimulatedGateway {
    pub fn new(live: LiveSettings, ledger: Database) -> Self {
        Self {
            live,
            ledger,
            rungs: Rungs::new(Dependency::PaymentGateway),
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// One call; `retry`: an earlier call of this charge may have been recorded.
    async fn charge_once(
        &self,
        request: &ChargeRequest,
        retry: bool,
    ) -> Result<Charge, PaymentError> {
        // A known key is answered at once, like a real provider's idempotent replay
        // (looked up unless the caller knows the key is new).
        if retry || !request.first_call {
            let mut conn = self.ledger.acquire().await.map_err(unavailable)?;
            if let Some(earlier) = recorded(&mut conn, request).await? {
                return earlier;
            }
        }
        let settings = self.live.faults();
        let (_serving, in_flight) = Serving::enter(&self.in_flight);
        let (slower, turn_away) = settings.gateway_load(in_flight);
        // Flapping or overloaded, it fails before it charges: a 503 after its delay.
        let flapped = rand::random::<f64>() < settings.payment_flap_rate;
        let turned_away = rand::random::<f64>() < turn_away;
        if flapped || turned_away {
            tokio::time::sleep(settings.payment_delay).await;
            let why = if flapped {
                "flapping".to_string()
            } else {
                format!("overloaded: calls in flight {in_flight}")
            };
            return Err(PaymentError::Unavailable(format!(
                "the payment gateway answered 503 ({why})"
            )));
        }
        tokio::time::sleep(settings.payment_delay.mul_f64(slower)).await;
        let approved = rand::random::<f64>() < settings.payment_success_rate;
        let transaction_id = approved.then(|| format!("txn_{}", uuid::Uuid::new_v4().simple()));
        let mut conn = self.ledger.acquire().await.map_err(unavailable)?;
        // One statement records the charge and reads back the key's row: the new one,
        // or, when the key was used before, the earlier one. Two calls racing with one
        // key: the first row wins, both get its answer — the second reads it in a
        // statement of its own when the first committed after this one began.
        let row: Option<LedgerRow> = statement!(
            "WITH new AS ( \
                 INSERT INTO gateway_charges \
                   (idempotency_key, order_id, amount, method, status, transaction_id) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING \
                 RETURNING status, transaction_id, amount, order_id) \
             SELECT * FROM new \
             UNION ALL \
             SELECT status, transaction_id, amount, order_id FROM gateway_charges \
             WHERE idempotency_key = $1 AND NOT EXISTS (SELECT FROM new)"
        )
        .query_as()
        .bind(&request.idempotency_key)
        .bind(request.order_id)
        .bind(request.amount)
        .bind(request.method)
        .bind(if approved { "approved" } else { "declined" })
        .bind(&transaction_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
        let answer = match row {
            Some(row) => Some(answer_for(request, row.into())),
            None => recorded(&mut conn, request).await?,
        };
        answer.unwrap_or_else(|| {
            Err(PaymentError::Unavailable(
                "the charge was not recorded".into(),
            ))
        })
    }
}

/// The answer recorded for the request's key, if the gateway has seen it.
async fn recorded(
    conn: &mut PgConnection,
    request: &ChargeRequest,
) -> Result<Option<Result<Charge, PaymentError>>, PaymentError> {
    let earlier = ledger_entry(conn, &request.idempotency_key).await?;
    Ok(earlier.map(|earlier| answer_for(request, earlier)))
}

/// What the gateway answers a request whose key has the ledger row `earlier`: that
/// charge again (the same amount), or the key reused for another.
fn answer_for(request: &ChargeRequest, earlier: EarlierCharge) -> Result<Charge, PaymentError> {
    match (earlier.status, &earlier.transaction_id) {
        (ChargeStatus::Declined, _) if earlier.amount == request.amount => {
            Err(PaymentError::Declined)
        }
        (ChargeStatus::Approved, Some(transaction_id)) if earlier.amount == request.amount => {
            Ok(Charge {
                transaction_id: transaction_id.clone(),
                amount: earlier.amount,
                first_order_id: earlier.first_order_id,
            })
        }
        _ => Err(PaymentError::KeyReused(earlier)),
    }
}

/// A row of the gateway's ledger.
#[derive(sqlx::FromRow)]
struct LedgerRow {
    status: String,
    transaction_id: Option<String>,
    amount: Decimal,
    order_id: i64,
}

impl From<LedgerRow> for EarlierCharge {
    fn from(row: LedgerRow) -> Self {
        let status = match row.status.as_str() {
            "approved" => ChargeStatus::Approved,
            "refunded" => ChargeStatus::Refunded,
            _ => ChargeStatus::Declined,
        };
        EarlierCharge {
            amount: row.amount,
            status,
            transaction_id: row.transaction_id,
            first_order_id: row.order_id,
        }
    }
}

/// The ledger's row for an idempotency key.
async fn ledger_entry(
    conn: &mut PgConnection,
    idempotency_key: &str,
) -> Result<Option<EarlierCharge>, PaymentError> {
    let row: Option<LedgerRow> = statement!(
        "SELECT status, transaction_id, amount, order_id FROM gateway_charges \
         WHERE idempotency_key = $1"
    )
    .query_as()
    .bind(idempotency_key)
    .fetch_optional(conn)
    .await
    .map_err(unavailable)?;
    Ok(row.map(EarlierCharge::from))
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
            resilience.timed_out = tracing::field::Empty,
            resilience.breaker = tracing::field::Empty,
            resilience.attempts = tracing::field::Empty,
            resilience.retry_budget = tracing::field::Empty,
        );
        let call = async move {
            // A call given up during the gateway's wait charged nothing; one given up in
            // the instant of its write may have charged: the key hands that charge to a
            // retry, and reconciliation counts it if none comes.
            let policy = self.live.resilience().payment;
            // A declined card is the gateway working: only "unavailable" counts against it.
            let failed = |answer: &Result<Charge, PaymentError>| {
                matches!(answer, Err(PaymentError::Unavailable(_)))
            };
            // Timed per attempt, as the gateway sees its calls (a retried charge is
            // several); an attempt given up by the timeout is counted there instead.
            let attempts = AtomicU32::new(0);
            let attempt = || async {
                let started = Instant::now();
                let retry = attempts.fetch_add(1, Ordering::Relaxed) > 0;
                let answer = self.charge_once(&request, retry).await;
                let outcome = match &answer {
                    Ok(_) => "approved",
                    Err(PaymentError::Declined) => "declined",
                    Err(PaymentError::Unavailable(_) | PaymentError::KeyReused(_)) => "unavailable",
                };
                histogram!(PAYMENT_GATEWAY_DURATION, "outcome" => outcome)
                    .record(started.elapsed().as_secs_f64());
                answer
            };
            let result = self
                .rungs
                .call(policy, failed, attempt)
                .await
                .unwrap_or_else(|refusal| Err(PaymentError::Unavailable(refusal.to_string())));
            let span = tracing::Span::current();
            span.record("payment.approved", result.is_ok());
            if let Err(error) = &result {
                span.set_status(Status::error(error.to_string()));
            }
            result
        };
        Box::pin(call.instrument(span))
    }

    fn earlier_charge(
        &self,
        idempotency_key: String,
    ) -> GatewayFuture<'_, Result<Option<EarlierCharge>, PaymentError>> {
        Box::pin(async move {
            let mut conn = self.ledger.acquire().await.map_err(unavailable)?;
            ledger_entry(&mut conn, &idempotency_key).await
        })
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
            let mut conn = self
                .ledger
                .acquire()
                .await
                .map_err(|e| RefundError::Unavailable(e.to_string()))?;
            let refunded = statement!(
                "UPDATE gateway_charges \
                 SET status = 'refunded', refunded_at = COALESCE(refunded_at, now()) \
                 WHERE transaction_id = $1 AND status IN ('approved', 'refunded')"
            )
            .query()
            .bind(&transaction_id)
            .execute(&mut *conn)
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
