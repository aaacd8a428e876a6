//! The HTTP server span, the `X-Trace-Id` header and the request metrics, as one
//! middleware around every route.

use std::future::Future;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Gauge, gauge};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceContextExt, TraceId};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::exemplars;
use super::metrics::HTTP_REQUESTS_IN_FLIGHT;

pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");
/// W3C Trace Context level 2: the server's span, so a client (the storefront) can name
/// the very span that served it.
pub const TRACE_RESPONSE_HEADER: HeaderName = HeaderName::from_static("traceresponse");
/// How loudly a failed request is logged by the request middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something the service should not have done: a 500.
    Error,
    /// The service could not do its job for a reason outside it (database, mail server).
    Warning,
}

/// Attached to an error response (as a response extension), so that this middleware
/// logs the cause inside the request's span, with its trace id, while the client sees
/// only the problem.
#[derive(Debug, Clone)]
pub struct FailureLog {
    pub severity: Severity,
    pub cause: String,
}

tokio::task_local! {
    /// Kept as the 16 bytes it is, and written out only when a problem or a log line
    /// quotes it: most requests never need its text.
    static TRACE_ID: TraceId;
}

/// The trace id of the request being served by this task, for problem bodies and logs.
pub fn current_trace_id() -> Option<String> {
    TRACE_ID
        .try_with(|id| *id)
        .ok()
        .filter(|id| *id != TraceId::INVALID)
        .map(|id| id.to_string())
}

/// `work` with the request's span and trace id, for a task spawned on the request's
/// behalf: its spans stay in the request's trace, its problems carry the trace id.
pub fn in_request_context<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let trace_id = TRACE_ID.try_with(|id| *id).unwrap_or(TraceId::INVALID);
    TRACE_ID.scope(trace_id, work.instrument(tracing::Span::current()))
}

/// The metric handles the middleware updates on every request, looked up once when the
/// router is built rather than by name per request.
#[derive(Clone)]
pub struct RequestInstruments {
    in_flight: Gauge,
}

impl RequestInstruments {
    /// Call after the metrics recorder is installed (without one, updates go nowhere).
    pub fn new() -> Self {
        Self {
            in_flight: gauge!(HTTP_REQUESTS_IN_FLIGHT),
        }
    }
}

impl Default for RequestInstruments {
    fn default() -> Self {
        Self::new()
    }
}

/// Wraps a request in a server span named `{METHOD} {route}` that continues an incoming
/// W3C `traceparent`, records the HTTP semantic-convention attributes and the request
/// duration histogram, and answers with the trace id in `X-Trace-Id`.
pub async fn instrument_request(
    State(instruments): State<RequestInstruments>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let span_name = match &route {
        Some(route) => format!("{method} {}", route.as_str()),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http.request",
        otel.name = span_name,
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route.as_ref().map(MatchedPath::as_str).unwrap_or_default(),
        url.path = request.uri().path(),
        url.scheme = "http",
        network.protocol.version = protocol_version(request.version()),
        user_agent.original = request
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        http.response.status_code = Empty,
        enduser.id = Empty,
    );

    // W3C trace context is part of the API contract, so it is honoured even when
    // trace export is switched off.
    let remote = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let remote_trace_id = remote.span().span_context().trace_id();
    // Fails only when export is off (no OpenTelemetry layer); the id is still honoured below.
    let _ = span.set_parent(remote);
    let span_context = span.context().span().span_context().clone();
    let trace_id = trace_id_of(&span_context, remote_trace_id);

    instruments.in_flight.increment(1.0);
    let mut response = TRACE_ID
        .scope(trace_id, next.run(request).instrument(span.clone()))
        .await;
    instruments.in_flight.decrement(1.0);

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if let Some(failure) = response.extensions().get::<FailureLog>() {
        span.in_scope(|| log_failure(failure));
    }
    // Per the HTTP conventions a server span fails on 5xx only; a 4xx is the client's.
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    exemplars::record_http_request(
        &span_context,
        method,
        route,
        status,
        started.elapsed().as_secs_f64(),
    );

    let trace_response = trace_response_of(&span_context, trace_id);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_bytes(trace_response.trace_id()) {
        headers.insert(TRACE_ID_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(&trace_response.0) {
        headers.insert(TRACE_RESPONSE_HEADER, value);
    }
    response
}

/// `network.protocol.version` as the HTTP conventions spell it ("1.1", "2").
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "",
    }
}

/// `traceresponse`: `00-<trace id>-<the server span's id>-<flags>`, written out once
/// per request; `X-Trace-Id` is its trace id part.
struct TraceResponse([u8; 55]);

impl TraceResponse {
    fn trace_id(&self) -> &[u8] {
        &self.0[3..35]
    }
}

/// With export switched off the span has no id of its own, and a random one stands in
/// (flags 00: not sampled).
fn trace_response_of(span_context: &SpanContext, trace_id: TraceId) -> TraceResponse {
    let (span_id, sampled) = if span_context.is_valid() {
        (span_context.span_id(), span_context.is_sampled())
    } else {
        (SpanId::from_bytes(rand::random::<[u8; 8]>()), false)
    };
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The lengths are fixed (16 bytes into 32 digits, 8 into 16): these cannot fail.
    let _ = hex::encode_to_slice(trace_id.to_bytes(), &mut text[3..35]);
    let _ = hex::encode_to_slice(span_id.to_bytes(), &mut text[36..52]);
    if sampled {
        text[54] = b'1';
    }
    TraceResponse(text)
}

/// The cause of a failed request, logged inside its span so the line carries the trace
/// id; an ERROR event also marks the span failed.
fn log_failure(failure: &FailureLog) {
    match failure.severity {
        Severity::Error => tracing::error!(error = %failure.cause, "request failed"),
        Severity::Warning => tracing::warn!(detail = %failure.cause, "request failed"),
    }
}

/// The span's own trace id when spans are exported; otherwise the caller's, or a fresh
/// random one, so that `X-Trace-Id` is always there to quote in a bug report.
fn trace_id_of(span_context: &SpanContext, remote: TraceId) -> TraceId {
    [span_context.trace_id(), remote]
        .into_iter()
        .find(|id| *id != TraceId::INVALID)
        .unwrap_or_else(|| TraceId::from_bytes(rand::random::<[u8; 16]>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceFlags, TraceState};

    #[test]
    fn traceresponse_names_the_server_span_and_carries_x_trace_id() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        let sampled = SpanContext::new(
            trace_id,
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let written = trace_response_of(&sampled, trace_id);
        assert_eq!(
            std::str::from_utf8(&written.0),
            Ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(written.trace_id(), b"4bf92f3577b34da6a3ce929d0e0e4736");

        // Export off: no span of our own, a random span id, not sampled.
        let unexported = trace_response_of(&SpanContext::empty_context(), trace_id);
        let text = std::str::from_utf8(&unexported.0).expect("ascii");
        assert!(
            text.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{text}"
        );
        assert!(text.ends_with("-00"), "{text}");
        assert_ne!(&text[36..52], "0000000000000000");
    }
}
