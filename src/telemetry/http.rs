//! The HTTP server span, the `X-Trace-Id` header and the request metrics, as one
//! middleware around every route.

use std::cell::Cell;
use std::future::Future;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Gauge, gauge};
use opentelemetry::Context as OtelContext;
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceId};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rustc_hash::FxHashMap;
use tracing::Instrument;

use super::exemplars;
use super::finished_span::{Attributes, FinishedSpan, FixedAttributes, SpanEvent, SpanName};
use super::metrics::HTTP_REQUESTS_IN_FLIGHT;
use super::own_spans;

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

/// What the task serving a request knows of its trace.
struct RequestTrace {
    /// Kept as the 16 bytes it is, and written out only when a problem or a log line
    /// quotes it: most requests never need its text.
    trace_id: TraceId,
    /// The authenticated caller, for the server span (see [`record_end_user`]).
    end_user: Cell<Option<i64>>,
}

impl RequestTrace {
    fn new(trace_id: TraceId) -> Self {
        Self {
            trace_id,
            end_user: Cell::new(None),
        }
    }
}

tokio::task_local! {
    static REQUEST: RequestTrace;
}

/// The trace id of the request being served by this task, for problem bodies and logs.
pub fn current_trace_id() -> Option<String> {
    REQUEST
        .try_with(|request| request.trace_id)
        .ok()
        .filter(|id| *id != TraceId::INVALID)
        .map(|id| id.to_string())
}

/// `work` with the request's span and trace id, for a task spawned on the request's
/// behalf: its spans stay in the request's trace, its problems carry the trace id.
pub fn in_request_context<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let trace_id = REQUEST
        .try_with(|request| request.trace_id)
        .unwrap_or(TraceId::INVALID);
    REQUEST.scope(
        RequestTrace::new(trace_id),
        work.instrument(tracing::Span::current())
            .with_context(OtelContext::current()),
    )
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
///
/// The server span is one of our own (`super::own_spans`): its `SpanContext` is made
/// *current* as an OpenTelemetry context while the request runs, and the `tracing` spans
/// below it (the checkout, its steps) and the statements' spans take it as their parent
/// from there; the span itself is written when the response is ready. Made as a
/// `tracing` span it cost a third of all the telemetry of the cheapest request: a
/// registry slot, its attributes copied through a field visitor, and an entry and exit
/// through every layer at each poll — sqlx re-enters the current span at every poll of
/// a query (BENCHMARKS.md).
pub async fn instrument_request(
    State(instruments): State<RequestInstruments>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let start = SystemTime::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();

    // W3C trace context is part of the API contract, so it is honoured even when
    // trace export is switched off.
    let remote = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let caller = remote.span().span_context().clone();
    let name = SpanName(method.as_str(), route.as_ref().map(MatchedPath::as_str));
    let (cx, span_context) = match own_spans::server_span(&remote, name) {
        Some(span_context) => (
            remote.with_remote_span_context(span_context.clone()),
            span_context,
        ),
        // Export off: nothing is made current; the trace id is still honoured below.
        None => (OtelContext::new(), SpanContext::empty_context()),
    };
    let trace_id = trace_id_of(&span_context, caller.trace_id());
    // Kept only when the span is exported; written when the response is ready, or if
    // this future is dropped first (the client gone).
    let server_span = span_context.is_sampled().then(|| ServerSpan {
        context: span_context.clone(),
        parent_span_id: caller.span_id(),
        parent_is_remote: caller.is_remote(),
        method: method.clone(),
        route: route.clone(),
        start,
        started,
        uri: request.uri().clone(),
        version: request.version(),
        user_agent: request
            .headers()
            .get(axum::http::header::USER_AGENT)
            .cloned(),
        written: false,
    });

    instruments.in_flight.increment(1.0);
    let run = next.run(request).with_context(cx.clone());
    let (mut response, end_user) = REQUEST
        .scope(RequestTrace::new(trace_id), async {
            let response = run.await;
            (response, REQUEST.with(|request| request.end_user.get()))
        })
        .await;
    instruments.in_flight.decrement(1.0);

    let status = response.status();
    let failure = response.extensions().get::<FailureLog>();
    if let Some(failure) = failure {
        // The log line carries the request's trace and span ids; the span, the cause.
        let _current = cx.clone().attach();
        log_failure(failure);
    }
    if let Some(span) = server_span {
        span.finish(Answer {
            status,
            failure,
            end_user,
        });
    }
    let elapsed = started.elapsed();
    exemplars::record_http_request(&span_context, method, route, status, elapsed.as_secs_f64());

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

/// A request's server span while the request runs (when it is exported). Written by
/// [`ServerSpan::finish`] once the response is ready — or, if the request's future is
/// dropped before that (the client went away), by its drop, with
/// `error.type=cancelled`: a checkout that goes on without its client
/// (`in_request_context`) still has its parent in the trace.
struct ServerSpan {
    context: SpanContext,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    method: Method,
    route: Option<MatchedPath>,
    start: SystemTime,
    started: Instant,
    /// Shares the request's bytes: kept without copying the path.
    uri: Uri,
    version: Version,
    user_agent: Option<HeaderValue>,
    written: bool,
}

/// How the request was answered, for its server span.
struct Answer<'a> {
    status: StatusCode,
    failure: Option<&'a FailureLog>,
    end_user: Option<i64>,
}

impl ServerSpan {
    fn finish(mut self, answer: Answer<'_>) {
        self.write(Some(answer));
    }

    fn write(&mut self, answer: Option<Answer<'_>>) {
        self.written = true;
        let span = &*self;
        let end = span.start + span.started.elapsed();
        let status = answer.as_ref().map(|answer| answer.status);
        // Per the HTTP conventions a server span fails on 5xx only; a 4xx is the client's.
        let error = status
            .filter(StatusCode::is_server_error)
            .map(|status| status.to_string());
        let failure = answer.as_ref().and_then(|answer| answer.failure);
        let finished = FinishedSpan {
            context: &span.context,
            parent_span_id: span.parent_span_id,
            parent_is_remote: span.parent_is_remote,
            kind: SpanKind::Server,
            name: SpanName(
                span.method.as_str(),
                span.route.as_ref().map(MatchedPath::as_str),
            ),
            start: span.start,
            end,
            error: error.as_deref(),
            event: failure.map(|failure| SpanEvent {
                time: end,
                name: "request failed",
                message: &failure.cause,
            }),
        };
        own_spans::finish(&finished, |attributes| {
            span.request_attributes(attributes);
            match &answer {
                Some(answer) => {
                    attributes.int(
                        "http.response.status_code",
                        i64::from(answer.status.as_u16()),
                    );
                    if let Some(id) = answer.end_user {
                        attributes.int("enduser.id", id);
                    }
                }
                None => attributes.text("error.type", "cancelled"),
            }
        });
    }

    /// The HTTP semantic conventions' attributes known when the request arrived.
    fn request_attributes(&self, attributes: &mut dyn Attributes) {
        let (method, route, version) = (&self.method, self.route.as_ref(), self.version);
        match route_attributes(method, route, version) {
            Some(fixed) => attributes.fixed(fixed),
            None => {
                for (key, value) in route_key_values(method, route, version) {
                    attributes.text(key, value);
                }
            }
        }
        attributes.text("url.path", self.uri.path());
        if let Some(agent) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.text("user_agent.original", agent);
        }
    }
}

/// The attributes that are the same for every request to one route, with one method
/// and one HTTP version.
fn route_key_values<'a>(
    method: &'a Method,
    route: Option<&'a MatchedPath>,
    version: Version,
) -> impl Iterator<Item = (&'static str, &'a str)> {
    [
        Some(("http.request.method", method.as_str())),
        route.map(|route| ("http.route", route.as_str())),
        Some(("url.scheme", "http")),
        Some(("network.protocol.version", protocol_version(version))),
    ]
    .into_iter()
    .flatten()
}

/// The methods whose attributes are written once per route. A client may send any
/// token as a method, of any length: those are written per request, never kept, so
/// what is kept is bounded by the router's templates, these methods and the HTTP
/// versions.
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// [`route_key_values`] as fixed attributes, written once per method, route and
/// version and copied into each server span from then on (four attributes fewer to
/// encode per request); `None` for a method not in [`STANDARD_METHODS`]. Kept for the
/// life of the process, as a statement's are.
fn route_attributes(
    method: &Method,
    route: Option<&MatchedPath>,
    version: Version,
) -> Option<&'static FixedAttributes> {
    /// By route template ("" for a request that matched none), then by method and
    /// version: found by hashing the template alone, with nothing cloned.
    type Known = FxHashMap<Box<str>, Vec<(Method, Version, &'static FixedAttributes)>>;
    static KNOWN: LazyLock<RwLock<Known>> = LazyLock::new(RwLock::default);
    if !STANDARD_METHODS.contains(method) {
        return None;
    }
    let template = route.map_or("", MatchedPath::as_str);
    let find = |known: &Known| {
        known.get(template).and_then(|sets| {
            sets.iter()
                .find(|(m, v, _)| m == method && *v == version)
                .map(|&(_, _, fixed)| fixed)
        })
    };
    if let Some(fixed) = find(&KNOWN.read().unwrap_or_else(PoisonError::into_inner)) {
        return Some(fixed);
    }
    let mut known = KNOWN.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(fixed) = find(&known) {
        return Some(fixed);
    }
    let key_values = route_key_values(method, route, version)
        .map(|(key, value)| KeyValue::new(key, value.to_string()))
        .collect();
    let fixed: &'static FixedAttributes = Box::leak(Box::new(FixedAttributes::new(key_values)));
    known
        .entry(template.into())
        .or_default()
        .push((method.clone(), version, fixed));
    Some(fixed)
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        if !self.written {
            self.write(None);
        }
    }
}

/// Records the authenticated caller on the request's server span.
pub fn record_end_user(id: i64) {
    let _ = REQUEST.try_with(|request| request.end_user.set(Some(id)));
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

/// The cause of a failed request, logged while the server span is the current context
/// so the line carries its trace and span ids.
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
    fn a_routes_attributes_are_written_once_for_standard_methods_only() {
        let once = route_attributes(&Method::GET, None, Version::HTTP_11).expect("kept");
        let again = route_attributes(&Method::GET, None, Version::HTTP_11).expect("kept");
        assert!(std::ptr::eq(once, again), "the same set, not another");
        let written: Vec<(String, String)> = once
            .key_values()
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let expected: Vec<(String, String)> =
            route_key_values(&Method::GET, None, Version::HTTP_11)
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect();
        assert_eq!(written, expected);
        let http2 = route_attributes(&Method::GET, None, Version::HTTP_2).expect("kept");
        assert!(!std::ptr::eq(once, http2));

        // Any token is a method to HTTP: one of a client's own is never kept.
        let brew = Method::from_bytes(b"BREW").expect("a token");
        assert!(route_attributes(&brew, None, Version::HTTP_11).is_none());
    }

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
