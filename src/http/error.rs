//! One error type for the whole API, rendered as RFC 9457 problem details
//! (`application/problem+json`) with the request's `trace_id`.
//!
//! Each kind has a stable `type` URI and `title`; `detail` explains this occurrence.
//! The list of types is in `docs/problems.md`. Errors are not logged here: the response
//! carries a `FailureLog` that the request middleware logs inside the request's span.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use std::time::Duration;

use crate::checkout::CheckoutError;
use crate::db;
use crate::domain::{CheckoutOutcome, StockShortage};
use crate::live_settings::SettingsError;
use crate::orders::lifecycle::LifecycleError;
use crate::payment::{PaymentError, RefundError};
use crate::telemetry::http::{FailureLog, Severity, current_trace_id};

/// A request field that failed to parse, for 422 answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// Where the problem is: a JSON path such as `items[0].quantity`, or a query parameter.
    pub field: String,
    pub message: String,
}

/// RFC 9457 problem details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem; stable, so clients can branch on it.
    #[serde(rename = "type")]
    #[schema(example = "/problems/not-found")]
    pub kind: String,
    #[schema(example = "Not Found")]
    pub title: String,
    #[schema(example = 404)]
    pub status: u16,
    #[schema(example = "product 42 not found")]
    pub detail: String,
    /// The trace of the request, to look up in Jaeger (same as the `X-Trace-Id` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// For `validation-error`: each field that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// For `insufficient-stock`: each product that is short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<StockShortage>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("this needs the admin role")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("not enough stock for {}", StockShortage::describe(.0))]
    InsufficientStock(Vec<StockShortage>),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("the request body is larger than this server accepts (HTTP_BODY_LIMIT_BYTES)")]
    PayloadTooLarge,
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{}", describe_fields(.0))]
    Validation(Vec<FieldError>),
    /// What the checkout refused or lost; its statuses are chosen in [`ApiError::kind`].
    #[error(transparent)]
    Checkout(CheckoutError),
    #[error(
        "a request with this Idempotency-Key is still being processed; retry in {} s",
        retry_after_seconds(.0)
    )]
    RequestInProgress(Duration),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("too many attempts; retry in {} s", retry_after_seconds(.0))]
    TooManyRequests(Duration),
    /// Every pooled connection stayed busy (long checkouts hold them); logged.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// The database does not answer; the probe logs that once, not per request.
    #[error("the database is unreachable; retry shortly")]
    DatabaseUnreachable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Whole seconds, rounded up: a client that waits this long is let through.
fn retry_after_seconds(wait: &Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// What a 503 asks the client to wait before retrying.
const RETRY_UNAVAILABLE_AFTER: &str = "2";

fn describe_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    /// Status code, the `type` slug and the title of each kind.
    fn kind(&self) -> Kind {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad Request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not Found"),
            Self::AlreadyExists(_) => (StatusCode::CONFLICT, "already-exists", "Already Exists"),
            Self::InsufficientStock(_) => (
                StatusCode::CONFLICT,
                "insufficient-stock",
                "Insufficient Stock",
            ),
            Self::InvalidTransition(_) => (
                StatusCode::CONFLICT,
                "invalid-transition",
                "Invalid Status Transition",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload Too Large",
            ),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method Not Allowed",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-error",
                "Validation Failed",
            ),
            Self::Checkout(error) => checkout_kind(error),
            Self::RequestInProgress(_) => (
                StatusCode::CONFLICT,
                "request-in-progress",
                "Request In Progress",
            ),
            Self::IdempotencyKeyReused => IDEMPOTENCY_KEY_REUSED,
            Self::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too Many Requests",
            ),
            Self::ServiceUnavailable(_) | Self::DatabaseUnreachable => SERVICE_UNAVAILABLE,
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                "Internal Server Error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().0
    }

    pub fn to_problem(&self) -> Problem {
        let (status, slug, title) = self.kind();
        let detail = match self {
            // Never leak internals (SQL, hostnames) to the client; the log has them.
            Self::Internal(_) | Self::Checkout(CheckoutError::Database(_)) => {
                "something went wrong on our side; quote the trace_id when reporting it".to_string()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            trace_id: current_trace_id(),
            errors: match self {
                Self::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
            products: match self {
                Self::InsufficientStock(items)
                | Self::Checkout(CheckoutError::InsufficientStock(items)) => Some(items.clone()),
                _ => None,
            },
        }
    }

    /// What the request middleware should log about this error, if anything.
    fn failure_log(&self) -> Option<FailureLog> {
        let (severity, cause) = match self {
            Self::Internal(error) => (Severity::Error, format!("{error:#}")),
            Self::Checkout(error @ CheckoutError::Database(_)) => {
                (Severity::Error, error.to_string())
            }
            Self::ServiceUnavailable(detail) => (Severity::Warning, detail.clone()),
            Self::Checkout(
                error @ (CheckoutError::EmailFailed(_)
                | CheckoutError::Payment(PaymentError::Unavailable(_))),
            ) => (Severity::Warning, error.to_string()),
            // The orphaned payment itself is logged (an error) where it happens.
            Self::Checkout(CheckoutError::Charged { cause, .. }) => {
                (Severity::Warning, cause.to_string())
            }
            _ => return None,
        };
        Some(FailureLog { severity, cause })
    }
}

type Kind = (StatusCode, &'static str, &'static str);

const SERVICE_UNAVAILABLE: Kind = (
    StatusCode::SERVICE_UNAVAILABLE,
    "service-unavailable",
    "Service Unavailable",
);

/// The checkout's refusals and failures as HTTP sees them. An order lost after its
/// charge answers as its cause would (an e-mail failure 502, the rest 503: retry), with
/// what happened to the money in the detail.
fn checkout_kind(error: &CheckoutError) -> Kind {
    match error {
        // `From<CheckoutError>` classifies database errors like any other request's.
        CheckoutError::Database(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal Server Error",
        ),
        CheckoutError::Payment(PaymentError::KeyReused(_)) => IDEMPOTENCY_KEY_REUSED,
        other => refusal_kind(other.outcome()).unwrap_or(SERVICE_UNAVAILABLE),
    }
}

const IDEMPOTENCY_KEY_REUSED: Kind = (
    StatusCode::UNPROCESSABLE_ENTITY,
    "idempotency-key-reused",
    "Idempotency Key Reused",
);

/// The answer of each checkout outcome that has one of its own (its status is part of
/// the domain's contract, `CheckoutOutcome::refusal_status`); the others (`error`,
/// `shutdown`) are a 503 or a 500 like any other request's failure.
fn refusal_kind(outcome: CheckoutOutcome) -> Option<Kind> {
    let status = StatusCode::from_u16(outcome.refusal_status()?).ok()?;
    let (slug, title) = match outcome {
        CheckoutOutcome::EmptyCart => ("empty-cart", "Cart Is Empty"),
        CheckoutOutcome::InsufficientStock => ("insufficient-stock", "Insufficient Stock"),
        CheckoutOutcome::PaymentDeclined => ("payment-declined", "Payment Declined"),
        CheckoutOutcome::EmailFailed => ("email-failed", "E-mail Failed"),
        CheckoutOutcome::TotalTooLarge => ("total-too-large", "Total Too Large"),
        CheckoutOutcome::CartChanged => ("cart-changed", "Cart Changed Since The Earlier Payment"),
        CheckoutOutcome::Success | CheckoutOutcome::Error | CheckoutOutcome::Shutdown => {
            return None;
        }
    };
    Some((status, slug, title))
}

impl From<CheckoutError> for ApiError {
    fn from(error: CheckoutError) -> Self {
        match error {
            CheckoutError::Database(error) => Self::from(error),
            other => Self::Checkout(other),
        }
    }
}

impl From<SettingsError> for ApiError {
    fn from(error: SettingsError) -> Self {
        match error {
            SettingsError::Invalid(problems) => Self::Validation(
                problems
                    .into_iter()
                    .map(|problem| FieldError {
                        field: problem.field.to_string(),
                        message: problem.message,
                    })
                    .collect(),
            ),
            SettingsError::Database(error) => Self::from(error),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(error: LifecycleError) -> Self {
        match error {
            LifecycleError::NotFound(id) => Self::not_found(format!("order {id}")),
            e @ LifecycleError::InvalidTransition { .. } => Self::InvalidTransition(e.to_string()),
            LifecycleError::Refund(RefundError::Unavailable(detail)) => {
                Self::ServiceUnavailable(format!("the payment gateway is unavailable: {detail}"))
            }
            e @ LifecycleError::Refund(RefundError::UnknownCharge(_)) => {
                Self::Internal(anyhow::Error::new(e))
            }
            LifecycleError::Database(error) => Self::from(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        let status = self.status();
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests(wait) | Self::RequestInProgress(wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(wait)),
                );
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_UNAVAILABLE_AFTER),
                );
            }
            _ => {}
        }
        if let Some(log) = self.failure_log() {
            response.extensions_mut().insert(log);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // Every connection is busy (long checkouts hold them): tell the client to retry.
            sqlx::Error::PoolTimedOut => Self::ServiceUnavailable(
                "no database connection became free in time; retry shortly".to_string(),
            ),
            other if db::is_unavailable(&other) => Self::DatabaseUnreachable,
            other => Self::Internal(anyhow::Error::new(other).context("database error")),
        }
    }
}

/// Turns a violation of a named database constraint into a chosen API error
/// (a unique key into 409, a foreign key into 404/422), leaving other errors as they are.
pub trait OnConstraint<T> {
    fn on_constraint(self, name: &str, to_error: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, to_error: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        self.map_err(|error| {
            let violated = error.as_database_error().and_then(|e| e.constraint());
            if violated == Some(name) {
                to_error()
            } else {
                error.into()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::Internal(anyhow::anyhow!("password=hunter2 in connection string"));
        let problem = error.to_problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
        assert!(
            error
                .failure_log()
                .is_some_and(|log| log.cause.contains("hunter2"))
        );
    }

    #[test]
    fn validation_problems_list_fields() {
        let problem = ApiError::validation("quantity", "a quantity is at least 1").to_problem();
        assert_eq!(problem.kind, "/problems/validation-error");
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors.unwrap()[0].field, "quantity");
    }

    #[test]
    fn stock_shortages_name_the_products() {
        let error = ApiError::from(CheckoutError::InsufficientStock(vec![StockShortage {
            product_id: 7,
            product_name: "Kettle".into(),
            requested: 3,
            available: 1,
        }]));
        assert!(error.to_string().contains("Kettle"));
        assert_eq!(error.to_problem().products.unwrap()[0].available, 1);
    }

    #[test]
    fn a_client_tells_each_checkout_outcome_from_its_status() {
        use crate::mailer::EmailError;
        let answers = [
            CheckoutError::EmptyCart,
            CheckoutError::InsufficientStock(Vec::new()),
            CheckoutError::TotalTooLarge(crate::domain::ORDER_TOTAL_MAX),
            CheckoutError::Payment(PaymentError::Declined),
            CheckoutError::Payment(PaymentError::Unavailable("down".into())),
            CheckoutError::EmailFailed(EmailError::InjectedOutage),
            CheckoutError::Database(sqlx::Error::RowNotFound),
        ];
        for error in answers {
            let outcome = error.outcome();
            let status = ApiError::from(error).status();
            assert_eq!(
                CheckoutOutcome::of_answer(status.as_u16()),
                outcome,
                "{status}"
            );
        }
        // Rolled back at the shutdown deadline: a 503, like any unavailable service.
        assert_eq!(
            CheckoutOutcome::of_answer(
                ApiError::from(CheckoutError::Interrupted).status().as_u16()
            ),
            CheckoutOutcome::Error
        );
        assert_eq!(CheckoutOutcome::of_answer(201), CheckoutOutcome::Success);
    }

    #[test]
    fn checkout_refusals_keep_their_problem_types() {
        let empty = ApiError::from(CheckoutError::EmptyCart).to_problem();
        assert_eq!(
            (empty.status, empty.kind.as_str()),
            (400, "/problems/empty-cart")
        );
        let lost = ApiError::from(CheckoutError::EmailFailed(
            crate::mailer::EmailError::InjectedOutage,
        ));
        assert_eq!(lost.status(), StatusCode::BAD_GATEWAY);
        assert!(lost.failure_log().is_some());
    }
}
