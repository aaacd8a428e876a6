//! A real OTLP/HTTP receiver: accepts `POST /v1/traces` with an
//! `ExportTraceServiceRequest` as protobuf (the service) or JSON (the storefront, from a
//! browser on another origin: CORS allowed), as a collector would, and keeps the spans.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

use crate::helpers::poll_until;

/// One received span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client (OTLP `SpanKind`).
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    /// 0 unset, 1 ok, 2 error (OTLP `StatusCode`).
    pub status: i32,
    pub attributes: HashMap<String, String>,
    pub resource: HashMap<String, String>,
    /// (trace id, span id) of each span link.
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What an export request came with, besides its spans.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub headers: HeaderMap,
    /// What the receiver answered.
    pub status: StatusCode,
}

#[derive(Clone, Default)]
pub struct OtlpReceiver {
    state: Receiving,
    pub port: u16,
}

#[derive(Clone, Default)]
struct Receiving {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    /// The next exports refused, and how.
    refusals: Arc<Mutex<Vec<Refusal>>>,
}

/// How an export is refused: a status, and a `Retry-After` in seconds, if any.
type Refusal = (StatusCode, Option<u64>);

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = OtlpReceiver {
            state: Receiving::default(),
            port: listener.local_addr().expect("addr").port(),
        };
        let app = Router::new()
            .route("/v1/traces", post(export).options(preflight))
            .with_state(receiver.state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().expect("lock").clone()
    }

    /// Every export request so far, in order, with its headers and the answer it got.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Answers the next `count` exports with `status` (and `Retry-After: seconds`, if
    /// given), keeping nothing of them, as an overloaded collector would.
    pub fn refuse_next(&self, count: usize, status: StatusCode, retry_after: Option<u64>) {
        let mut refusals = self.state.refusals.lock().expect("lock");
        refusals.extend(std::iter::repeat_n((status, retry_after), count));
    }

    /// The spans of one trace, once a span named `name` has arrived in it and the trace
    /// is whole: every span's parent has arrived too, but for one root (whose parent, if
    /// any, is the caller's). A parent ends after its children, so it lands in the same
    /// batch or a later one.
    pub async fn wait_for_trace(&self, trace_id: &str, name: &str) -> Vec<ReceivedSpan> {
        let whole = poll_until(Duration::from_secs(20), || {
            let spans: Vec<ReceivedSpan> = self
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            let roots = spans
                .iter()
                .filter(|s| !ids.contains(s.parent_span_id.as_str()))
                .count();
            let arrived = spans.iter().any(|span| span.name == name) && roots == 1;
            std::future::ready(arrived.then_some(spans))
        })
        .await;
        whole.unwrap_or_else(|| {
            panic!(
                "no whole trace {trace_id} with a span {name} arrived; got: {:?}",
                self.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    }
}

async fn export(
    State(receiving): State<Receiving>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let refusal = {
        let mut refusals = receiving.refusals.lock().expect("lock");
        (!refusals.is_empty()).then(|| refusals.remove(0))
    };
    let response = match refusal {
        Some((status, retry_after)) => {
            let mut refused = status.into_response();
            if let Some(seconds) = retry_after {
                refused
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            refused
        }
        None => keep(&receiving.spans, &headers, body),
    };
    receiving
        .requests
        .lock()
        .expect("lock")
        .push(ReceivedRequest {
            headers,
            status: response.status(),
        });
    response
}

/// Decodes an export (gzip-compressed or not) and keeps its spans.
fn keep(
    store: &Mutex<Vec<ReceivedSpan>>,
    headers: &HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = if gzipped {
        let mut plain = Vec::new();
        let read =
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain);
        if read.is_err() {
            return (StatusCode::BAD_REQUEST, "not gzip").into_response();
        }
        Bytes::from(plain)
    } else {
        body
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let decoded = if is_json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).ok()
    } else {
        ExportTraceServiceRequest::decode(body).ok()
    };
    let Some(request) = decoded else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| flatten(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    status: span.status.map_or(0, |s| s.code),
                    attributes: flatten(&span.attributes),
                    resource: resource.clone(),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                });
            }
        }
    }
    store.lock().expect("lock").extend(received);
    if is_json {
        return (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            "{}",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// A browser's preflight before it posts JSON from another origin.
async fn preflight() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
        ],
    )
}

fn flatten(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
