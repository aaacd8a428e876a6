//! The OTLP/HTTP trace exporter: the SDK's finished spans written straight into OTLP's
//! protobuf `ExportTraceServiceRequest` and POSTed to `{endpoint}/v1/traces` — with the
//! headers, compression and timeout of the standard variables, and the retries the
//! OTLP specification asks for (429, 502, 503 and 504, with exponential backoff and
//! jitter, `Retry-After` honoured, all within the timeout).
//!
//! Why not opentelemetry-otlp's HTTP exporter (still used for gRPC): it first copies
//! every span into the generated protobuf structs — a `String` per attribute key and
//! value, a `Vec` per id — and prost then measures each nested message again at every
//! level before writing it. On the service's cheapest request that came to ~20,000
//! instructions per span on the exporter thread, the largest single cost of tracing
//! (BENCHMARKS.md). Written directly, a span costs little more than a copy of its
//! bytes. The numbers it writes with are not kept here: they are read from
//! opentelemetry-proto's descriptors of the schema (`super::otlp_schema`), and a test
//! decodes what this module writes with opentelemetry-proto's generated types and
//! compares it with that crate's own conversion of the same spans.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use backon::{BackoffBuilder, ExponentialBuilder};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_varint, encoded_len_varint};
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use secrecy::ExposeSecret;

use super::finished_span::{Attributes, FinishedSpan, FixedAttributes, SpanName};
use super::otlp_schema::Schema;
use crate::config::{OtlpCompression, TelemetrySettings};

/// POSTs batches of spans as `application/x-protobuf` to one OTLP/HTTP traces URL.
#[derive(Debug)]
pub struct OtlpHttpExporter {
    url: String,
    /// For the whole export, retries included.
    timeout: Duration,
    headers: HeaderMap,
    gzip: bool,
    schema: Schema,
    /// Built on the exporter's own thread at the first export: reqwest's blocking
    /// client runs a runtime of its own and must not be built inside tokio's.
    client: OnceLock<reqwest::blocking::Client>,
    /// The `Resource` message and its schema URL, written once: they are the same in
    /// every batch. Behind a lock because the resource arrives after the exporter is
    /// shared with the thread that exports (see `span_queue`).
    resource: Mutex<EncodedResource>,
    /// Batch buffers the HTTP client is done with (see [`LentBuffer`]).
    returned: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[derive(Debug, Default)]
struct EncodedResource {
    message: Vec<u8>,
    schema_url: String,
}

impl OtlpHttpExporter {
    /// `traces_url` is the full URL, e.g. `http://collector:4318/v1/traces`; the rest
    /// comes from the standard variables, read into `settings`.
    pub fn new(traces_url: String, settings: &TelemetrySettings) -> anyhow::Result<Self> {
        let schema = Schema::load().map_err(|e| anyhow::anyhow!(e))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("ecommerce-monolith/", env!("CARGO_PKG_VERSION"))),
        );
        let gzip = settings.otlp_compression == OtlpCompression::Gzip;
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (key, value) in &settings.otlp_headers {
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                anyhow::anyhow!("OTEL_EXPORTER_OTLP_HEADERS: {key:?} is not a header name")
            })?;
            let mut value = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                anyhow::anyhow!(
                    "OTEL_EXPORTER_OTLP_HEADERS: the value of {key:?} is not a header value"
                )
            })?;
            // Kept out of every debug print: it is usually a credential.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            url: traces_url,
            timeout: settings.otlp_timeout,
            headers,
            gzip,
            schema,
            client: OnceLock::new(),
            resource: Mutex::default(),
            returned: Arc::default(),
        })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, OTelSdkError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::blocking::Client::builder()
            .default_headers(self.headers.clone())
            .build()
            .map_err(|e| OTelSdkError::InternalFailure(format!("building the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| client))
    }

    /// POSTs `body`, retrying what the OTLP specification calls retryable — 429, 502,
    /// 503, 504, and a collector that cannot be reached — with exponential backoff and
    /// jitter (at least what `Retry-After` asks), until the export's timeout.
    fn send(&self, body: Bytes) -> OTelSdkResult {
        let deadline = Instant::now() + self.timeout;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = self
                .client()?
                .post(&self.url)
                .timeout(left)
                .body(body.clone())
                .send();
            let (failure, asked_to_wait) = match sent {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) if retryable(response.status()) => (
                    format!("the collector answered {}", response.status()),
                    retry_after(&response),
                ),
                Ok(response) => {
                    return Err(
                        self.failed(format!("the collector answered {}", response.status()))
                    );
                }
                Err(error) if error.is_connect() || error.is_timeout() => (error.to_string(), None),
                Err(error) => return Err(self.failed(error.to_string())),
            };
            let backoff = delays.next().unwrap_or(Duration::from_secs(5));
            let wait = asked_to_wait.map_or(backoff, |asked| asked.max(backoff));
            if Instant::now() + wait >= deadline {
                return Err(self.failed(failure));
            }
            // The batch processor runs exports on a thread of its own, outside tokio:
            // waiting here holds up nothing but the next batch.
            std::thread::sleep(wait);
        }
    }

    fn failed(&self, why: String) -> OTelSdkError {
        OTelSdkError::InternalFailure(format!("{}: {why}", self.url))
    }
}

/// An unreachable collector, reported once (and its recovery once), instead of one
/// warning per batch. Exports run on a thread of their own, so a dead collector never
/// slows a request down.
#[derive(Debug)]
pub(super) struct ExportFailures {
    endpoint: String,
    failing: AtomicBool,
}

impl ExportFailures {
    pub(super) fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            failing: AtomicBool::new(false),
        }
    }

    /// Says so if `result` is the first failure, or the first success after failures.
    pub(super) fn after_export(&self, result: &OTelSdkResult, spans: usize) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export works again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        %error,
                        dropped_spans = spans,
                        "cannot export traces; requests are served as usual and spans are \
                         dropped until the collector is reachable (reported once)"
                    );
                }
            }
        }
    }
}

/// What the OTLP specification says a client may send again.
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A throttling collector's `Retry-After`, in seconds (the form collectors send).
fn retry_after(response: &reqwest::blocking::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

impl OtlpHttpExporter {
    /// How long one export may take, its retries included.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Writes `span` into `spans`, to be sent by [`OtlpHttpExporter::export_encoded`].
    pub(super) fn encode(&self, spans: &mut EncodedSpans, span: &SpanData) {
        spans.push(&self.schema, span);
    }

    /// Writes a span of our own (`super::own_spans`) into `spans`, under
    /// `scope`.
    pub(super) fn encode_own(
        &self,
        spans: &mut EncodedSpans,
        scope: &InstrumentationScope,
        span: &FinishedSpan<'_>,
        attributes: impl FnOnce(&mut dyn Attributes),
    ) {
        let s = &self.schema;
        spans.push_with(s, scope, |buf| own_span_message(s, buf, span, attributes));
    }

    /// Sends spans already written by [`OtlpHttpExporter::encode`], as one request.
    pub(super) fn export_encoded(&self, spans: &mut EncodedSpans) -> OTelSdkResult {
        let body = self.body(spans)?;
        self.send(body)
    }

    /// The request body for `spans`. A batch under one scope — nearly every batch — is
    /// sent from where its spans were written, not copied: the request's opening fields
    /// go into the room kept before the spans, and the buffer is lent to the HTTP client
    /// (and `spans` given another), to be used again once the client is done with it.
    fn body(&self, spans: &mut EncodedSpans) -> Result<Bytes, OTelSdkError> {
        let resource = self.resource.lock().unwrap_or_else(PoisonError::into_inner);
        let (s, message, url) = (&self.schema, &resource.message, &resource.schema_url);
        if self.gzip {
            return gzip(&export_request(s, spans, message, url)).map(Bytes::from);
        }
        Ok(match self.lend(spans, message, url) {
            Some(lent) => lent,
            None => Bytes::from(export_request(s, spans, message, url)),
        })
    }

    /// The lone scope's buffer as the whole body, if `spans` are under one scope and the
    /// request's opening fields fit in the room before them.
    fn lend(&self, spans: &mut EncodedSpans, resource: &[u8], url: &str) -> Option<Bytes> {
        let (scope, lone) = spans.lone_scope_mut()?;
        let (around, split) = write_request(
            &self.schema,
            &[(scope, &lone[HEADROOM..])],
            resource,
            url,
            false,
        );
        let start = HEADROOM.checked_sub(split)?;
        let mut buf = std::mem::replace(lone, self.reusable_buffer());
        buf[start..HEADROOM].copy_from_slice(&around[..split]);
        buf.extend_from_slice(&around[split..]);
        Some(Bytes::from_owner(LentBuffer {
            buf,
            start,
            back: Arc::clone(&self.returned),
        }))
    }

    /// A buffer the HTTP client gave back, or a new one.
    fn reusable_buffer(&self) -> Vec<u8> {
        let mut returned = self.returned.lock().unwrap_or_else(PoisonError::into_inner);
        returned.pop().unwrap_or_else(span_buffer)
    }

    /// The resource every export is sent under.
    pub(super) fn use_resource(&self, resource: &Resource) {
        let s = &self.schema;
        let mut message = Vec::new();
        for (key, value) in resource.iter() {
            attribute(s, &mut message, s.resource.attributes, key.as_str(), value);
        }
        *self.resource.lock().unwrap_or_else(PoisonError::into_inner) = EncodedResource {
            message,
            schema_url: resource.schema_url().unwrap_or_default().to_string(),
        };
    }
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, OTelSdkError> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map_err(|e| OTelSdkError::InternalFailure(format!("gzip: {e}")))
}

/// Finished spans written as OTLP `Span` messages — each with its field key and length,
/// as `ScopeSpans.spans` holds them — grouped by instrumentation scope in the order the
/// scopes first appear: what one export sends.
#[derive(Debug, Default)]
pub(super) struct EncodedSpans {
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    count: usize,
}

impl EncodedSpans {
    fn push(&mut self, s: &Schema, span: &SpanData) {
        self.push_with(s, &span.instrumentation_scope, |buf| {
            span_message(s, buf, span)
        });
    }

    /// One `Span` message under `scope`, its fields written by `write`.
    fn push_with(
        &mut self,
        s: &Schema,
        scope: &InstrumentationScope,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        // Nearly every span has the one scope of the service's tracer: compared once.
        let index = match self.scopes.iter().position(|(seen, _)| seen == scope) {
            Some(index) => index,
            None => {
                self.scopes.push((scope.clone(), span_buffer()));
                self.scopes.len() - 1
            }
        };
        let written = &mut self.scopes[index].1;
        message(written, s.scope_spans.spans, write);
        self.count += 1;
    }

    /// Empty again, its memory kept for the next batch: a batch's buffer grows to a few
    /// hundred kilobytes, and growing a new one for every batch copies it over and
    /// over.
    pub(super) fn clear(&mut self) {
        for (_, written) in &mut self.scopes {
            written.truncate(HEADROOM);
        }
        self.count = 0;
    }

    /// The one scope with spans written and its buffer, if there is only one.
    fn lone_scope_mut(&mut self) -> Option<(&InstrumentationScope, &mut Vec<u8>)> {
        let mut written = self.written_mut();
        match (written.next(), written.next()) {
            (Some(lone), None) => Some(lone),
            _ => None,
        }
    }

    /// The scopes with spans written, and their buffers (the spans after [`HEADROOM`]).
    /// A scope kept from an earlier batch (see `clear`) may have none.
    fn written_mut(&mut self) -> impl Iterator<Item = (&InstrumentationScope, &mut Vec<u8>)> {
        self.scopes
            .iter_mut()
            .filter(|(_, buf)| buf.len() > HEADROOM)
            .map(|(scope, buf)| (&*scope, buf))
    }

    /// How many spans are written.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Room kept before the spans in a scope's buffer, for what opens an export request
/// (see [`OtlpHttpExporter::body`]): the resource, the scope and three lengths, a few
/// hundred bytes. A resource too large for it (many `OTEL_RESOURCE_ATTRIBUTES`) is
/// sent as before, the batch copied into the body.
const HEADROOM: usize = 512;

/// A new buffer for one scope's spans: [`HEADROOM`], then room for a batch.
fn span_buffer() -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 * 1024);
    buf.resize(HEADROOM, 0);
    buf
}

/// A batch's buffer as a request body; given back to the exporter when the HTTP client
/// drops the body.
struct LentBuffer {
    buf: Vec<u8>,
    /// Where the request begins: its opening fields end at [`HEADROOM`].
    start: usize,
    back: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for LentBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for LentBuffer {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.truncate(HEADROOM);
        let mut back = self.back.lock().unwrap_or_else(PoisonError::into_inner);
        // One or two in use at a time; more would only be memory kept for nothing.
        if back.len() < 2 {
            back.push(buf);
        }
    }
}

/// The body of one export: the spans under the one resource, copied.
fn export_request(
    s: &Schema,
    spans: &mut EncodedSpans,
    resource: &[u8],
    resource_schema_url: &str,
) -> Vec<u8> {
    let scopes: Vec<_> = spans
        .written_mut()
        .map(|(scope, buf)| (scope, &buf[HEADROOM..]))
        .collect();
    write_request(s, &scopes, resource, resource_schema_url, true).0
}

/// Writes an export request for `scopes`, each a scope and its spans' bytes. With
/// `copy_spans` false those bytes are left out (the lengths still count them), and the
/// second value says where the last scope's spans belong: the caller sends them from
/// where they are.
///
/// Every length is worked out before anything is written: a nested message's length
/// written after its body (as [`message`] does) would move the whole batch — often a
/// hundred kilobytes — up to make room for it, once per level.
fn write_request(
    s: &Schema,
    scopes: &[(&InstrumentationScope, &[u8])],
    resource: &[u8],
    resource_schema_url: &str,
    copy_spans: bool,
) -> (Vec<u8>, usize) {
    let scopes: Vec<(Vec<u8>, &[u8], &str)> = scopes
        .iter()
        .map(|(scope, members)| {
            let mut written = Vec::new();
            instrumentation_scope(s, &mut written, scope);
            (written, *members, scope.schema_url().unwrap_or_default())
        })
        .collect();
    let scope_spans_len = |(scope, members, schema_url): &(Vec<u8>, &[u8], &str)| {
        nested_len(s.scope_spans.scope, scope.len())
            + members.len()
            + string_len(s.scope_spans.schema_url, schema_url)
    };
    let resource_spans_len = nested_len(s.resource_spans.resource, resource.len())
        + scopes
            .iter()
            .map(|scope| nested_len(s.resource_spans.scope_spans, scope_spans_len(scope)))
            .sum::<usize>()
        + string_len(s.resource_spans.schema_url, resource_schema_url);

    let whole = nested_len(s.request.resource_spans, resource_spans_len);
    let left_out: usize = scopes.iter().map(|(_, members, _)| members.len()).sum();
    let mut buf = Vec::with_capacity(if copy_spans { whole } else { whole - left_out });
    nested_head(&mut buf, s.request.resource_spans, resource_spans_len);
    bytes(&mut buf, s.resource_spans.resource, resource);
    let mut spans_at = buf.len();
    for scope in &scopes {
        nested_head(
            &mut buf,
            s.resource_spans.scope_spans,
            scope_spans_len(scope),
        );
        let (written, members, schema_url) = scope;
        bytes(&mut buf, s.scope_spans.scope, written);
        spans_at = buf.len();
        if copy_spans {
            buf.extend_from_slice(members);
        }
        string(&mut buf, s.scope_spans.schema_url, schema_url);
    }
    string(&mut buf, s.resource_spans.schema_url, resource_schema_url);
    (buf, spans_at)
}

/// What a nested message of `len` bytes takes in `field`: its key, its length, itself.
fn nested_len(field: u32, len: usize) -> usize {
    key_len(field) + encoded_len_varint(len as u64) + len
}

/// A nested message's key and length, its `len` bytes to follow.
fn nested_head(buf: &mut Vec<u8>, field: u32, len: usize) {
    key(buf, field, WireType::LengthDelimited);
    varint(buf, len as u64);
}

fn instrumentation_scope(s: &Schema, buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(buf, s.scope.name, scope.name());
    string(buf, s.scope.version, scope.version().unwrap_or_default());
    attributes(s, buf, s.scope.attributes, scope.attributes());
}

fn span_message(s: &Schema, buf: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    id(buf, s.span.trace_id, context.trace_id().to_bytes());
    id(buf, s.span.span_id, context.span_id().to_bytes());
    trace_state(buf, s.span.trace_state, context);
    if span.parent_span_id != SpanId::INVALID {
        id(buf, s.span.parent_span_id, span.parent_span_id.to_bytes());
    }
    string(buf, s.span.name, &span.name);
    uint(buf, s.span.kind, span_kind(s, &span.span_kind));
    fixed64(buf, s.span.start_time, unix_nanos(span.start_time));
    fixed64(buf, s.span.end_time, unix_nanos(span.end_time));
    attributes(s, buf, s.span.attributes, &span.attributes);
    uint(
        buf,
        s.span.dropped_attributes,
        span.dropped_attributes_count.into(),
    );
    for event in span.events.iter() {
        message(buf, s.span.events, |buf| {
            fixed64(buf, s.event.time, unix_nanos(event.timestamp));
            string(buf, s.event.name, &event.name);
            attributes(s, buf, s.event.attributes, &event.attributes);
            uint(
                buf,
                s.event.dropped_attributes,
                event.dropped_attributes_count.into(),
            );
        });
    }
    uint(buf, s.span.dropped_events, span.events.dropped_count.into());
    for link in span.links.iter() {
        message(buf, s.span.links, |buf| {
            let linked = &link.span_context;
            id(buf, s.link.trace_id, linked.trace_id().to_bytes());
            id(buf, s.link.span_id, linked.span_id().to_bytes());
            trace_state(buf, s.link.trace_state, linked);
            attributes(s, buf, s.link.attributes, &link.attributes);
            uint(
                buf,
                s.link.dropped_attributes,
                link.dropped_attributes_count.into(),
            );
            fixed32(buf, s.link.flags, span_flags(s, linked, linked.is_remote()));
        });
    }
    uint(buf, s.span.dropped_links, span.links.dropped_count.into());
    message(buf, s.span.status, |buf| match &span.status {
        Status::Unset => {}
        Status::Ok => uint(buf, s.status.code, s.code.ok),
        Status::Error { description } => {
            string(buf, s.status.message, description);
            uint(buf, s.status.code, s.code.error);
        }
    });
    fixed32(
        buf,
        s.span.flags,
        span_flags(s, context, span.parent_span_is_remote),
    );
}

/// A span of our own (`super::own_spans`), as [`span_message`] writes the SDK's: the same fields
/// (no links, nothing dropped), its attributes written by `attributes`.
fn own_span_message(
    s: &Schema,
    buf: &mut Vec<u8>,
    span: &FinishedSpan<'_>,
    attributes: impl FnOnce(&mut dyn Attributes),
) {
    let context = span.context;
    id(buf, s.span.trace_id, context.trace_id().to_bytes());
    id(buf, s.span.span_id, context.span_id().to_bytes());
    trace_state(buf, s.span.trace_state, context);
    if span.parent_span_id != SpanId::INVALID {
        id(buf, s.span.parent_span_id, span.parent_span_id.to_bytes());
    }
    name(buf, s.span.name, span.name);
    uint(buf, s.span.kind, span_kind(s, &span.kind));
    fixed64(buf, s.span.start_time, unix_nanos(span.start));
    fixed64(buf, s.span.end_time, unix_nanos(span.end));
    attributes(&mut SpanAttributes { s, buf });
    if let Some(event) = &span.event {
        message(buf, s.span.events, |buf| {
            fixed64(buf, s.event.time, unix_nanos(event.time));
            string(buf, s.event.name, event.name);
            text_attribute(s, buf, s.event.attributes, "error.message", event.message);
        });
    }
    message(buf, s.span.status, |buf| {
        if let Some(description) = span.error {
            string(buf, s.status.message, description);
            uint(buf, s.status.code, s.code.error);
        }
    });
    fixed32(
        buf,
        s.span.flags,
        span_flags(s, context, span.parent_is_remote),
    );
}

/// A span's attributes as `Span.attributes` fields.
struct SpanAttributes<'a> {
    s: &'a Schema,
    buf: &'a mut Vec<u8>,
}

impl Attributes for SpanAttributes<'_> {
    fn text(&mut self, key: &'static str, value: &str) {
        text_attribute(self.s, self.buf, self.s.span.attributes, key, value);
    }

    fn int(&mut self, key_text: &'static str, value: i64) {
        let s = self.s;
        // int64 is written as its two's complement bits.
        let bits = value as u64;
        let value_len = key_len(s.any.int) + encoded_len_varint(bits);
        scalar_attribute(s, self.buf, s.span.attributes, key_text, value_len, |buf| {
            key(buf, s.any.int, WireType::Varint);
            varint(buf, bits);
        });
    }

    fn fixed(&mut self, attributes: &FixedAttributes) {
        let s = self.s;
        let encoded = attributes.encoded(|key_values| {
            let mut encoded = Vec::new();
            for kv in key_values {
                attribute(
                    s,
                    &mut encoded,
                    s.span.attributes,
                    kv.key.as_str(),
                    &kv.value,
                );
            }
            encoded
        });
        self.buf.extend_from_slice(encoded);
    }
}

/// A span's name from its two parts, joined by a space.
fn name(buf: &mut Vec<u8>, field: u32, name: SpanName<'_>) {
    let SpanName(first, second) = name;
    let len = first.len() + second.map_or(0, |second| 1 + second.len());
    key(buf, field, WireType::LengthDelimited);
    varint(buf, len as u64);
    buf.extend_from_slice(first.as_bytes());
    if let Some(second) = second {
        buf.push(b' ');
        buf.extend_from_slice(second.as_bytes());
    }
}

/// OTLP's `SpanKind` number of `kind`.
fn span_kind(s: &Schema, kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => s.kind.internal,
        SpanKind::Server => s.kind.server,
        SpanKind::Client => s.kind.client,
        SpanKind::Producer => s.kind.producer,
        SpanKind::Consumer => s.kind.consumer,
    }
}

/// `SpanFlags`: the W3C trace flags, and whether the parent is known to be remote.
fn span_flags(s: &Schema, context: &SpanContext, remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | s.flags.has_is_remote;
    if remote {
        flags |= s.flags.is_remote;
    }
    flags
}

fn trace_state(buf: &mut Vec<u8>, field: u32, context: &SpanContext) {
    let header = context.trace_state().header();
    string(buf, field, &header);
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

fn attributes<'a>(
    s: &Schema,
    buf: &mut Vec<u8>,
    field: u32,
    attributes: impl IntoIterator<Item = &'a KeyValue>,
) {
    for kv in attributes {
        attribute(s, buf, field, kv.key.as_str(), &kv.value);
    }
}

/// One `KeyValue` message in `field`. Its length is worked out first, so that it is
/// written straight through in one reserved stretch: attributes are most of what an
/// export writes (eleven for a catalog read), and the general `message` path cost
/// ~400 instructions each.
fn attribute(s: &Schema, buf: &mut Vec<u8>, field: u32, key_text: &str, value: &Value) {
    let Some(value_len) = scalar_value_len(s, value) else {
        // An array: its length is found after it is written.
        return message(buf, field, |buf| key_value(s, buf, key_text, value));
    };
    scalar_attribute(s, buf, field, key_text, value_len, |buf| {
        any_value(s, buf, value)
    });
}

/// A string attribute, without making an OpenTelemetry `Value` of it first.
fn text_attribute(s: &Schema, buf: &mut Vec<u8>, field: u32, key_text: &str, value: &str) {
    let value_len = key_len(s.any.string) + encoded_len_varint(value.len() as u64) + value.len();
    scalar_attribute(s, buf, field, key_text, value_len, |buf| {
        key(buf, s.any.string, WireType::LengthDelimited);
        length_delimited(buf, value.as_bytes());
    });
}

/// A `KeyValue` whose `AnyValue` (`value_len` bytes) `write_value` writes.
fn scalar_attribute(
    s: &Schema,
    buf: &mut Vec<u8>,
    field: u32,
    key_text: &str,
    value_len: usize,
    write_value: impl FnOnce(&mut Vec<u8>),
) {
    let body = string_len(s.key_value.key, key_text)
        + key_len(s.key_value.value)
        + encoded_len_varint(value_len as u64)
        + value_len;
    buf.reserve(key_len(field) + encoded_len_varint(body as u64) + body);
    key(buf, field, WireType::LengthDelimited);
    varint(buf, body as u64);
    string(buf, s.key_value.key, key_text);
    key(buf, s.key_value.value, WireType::LengthDelimited);
    varint(buf, value_len as u64);
    write_value(buf);
}

fn key_value(s: &Schema, buf: &mut Vec<u8>, key_text: &str, value: &Value) {
    string(buf, s.key_value.key, key_text);
    message(buf, s.key_value.value, |buf| any_value(s, buf, value));
}

/// The length `any_value` writes for `value`, unless it is an array.
fn scalar_value_len(s: &Schema, value: &Value) -> Option<usize> {
    Some(match value {
        Value::Bool(_) => key_len(s.any.bool) + 1,
        Value::I64(i) => key_len(s.any.int) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(s.any.double) + 8,
        Value::String(text) => {
            let len = text.as_str().len();
            key_len(s.any.string) + encoded_len_varint(len as u64) + len
        }
        Value::Array(_) => return None,
        // Newer than this exporter: `any_value` writes nothing.
        _ => 0,
    })
}

/// An `AnyValue`: one field of a oneof, written even when it holds its default (an
/// empty string, `false`, 0), or the reader would see no value at all.
fn any_value(s: &Schema, buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            key(buf, s.any.bool, WireType::Varint);
            varint(buf, u64::from(*b));
        }
        Value::I64(i) => {
            key(buf, s.any.int, WireType::Varint);
            // int64 is written as its two's complement bits.
            varint(buf, *i as u64);
        }
        Value::F64(f) => {
            key(buf, s.any.double, WireType::SixtyFourBit);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(text) => {
            key(buf, s.any.string, WireType::LengthDelimited);
            length_delimited(buf, text.as_str().as_bytes());
        }
        Value::Array(array) => message(buf, s.any.array, |buf| match array {
            Array::Bool(values) => array_values(s, buf, values, |v| Value::Bool(*v)),
            Array::I64(values) => array_values(s, buf, values, |v| Value::I64(*v)),
            Array::F64(values) => array_values(s, buf, values, |v| Value::F64(*v)),
            Array::String(values) => array_values(s, buf, values, string_value),
            // A kind of array newer than this exporter: sent empty rather than not at all.
            _ => {}
        }),
        // A kind of value newer than this exporter: the attribute goes without a value.
        _ => {}
    }
}

fn string_value(value: &StringValue) -> Value {
    Value::String(value.clone())
}

fn array_values<T>(s: &Schema, buf: &mut Vec<u8>, values: &[T], to_value: impl Fn(&T) -> Value) {
    for value in values {
        message(buf, s.array.values, |buf| {
            any_value(s, buf, &to_value(value))
        });
    }
}

/// A nested message: its field key, its length, then what `write` appends. The length
/// is known only afterwards: one byte is kept for it, enough for a body under 128
/// bytes (an attribute, a status); a longer body is moved up to make room.
fn message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, WireType::LengthDelimited);
    let start = buf.len();
    buf.push(0);
    write(buf);
    let length = buf.len() - start - 1;
    let prefix_len = encoded_len_varint(length as u64);
    if prefix_len > 1 {
        let end = buf.len();
        buf.resize(end + prefix_len - 1, 0);
        buf.copy_within(start + 1..end, start + prefix_len);
    }
    encode_varint(length as u64, &mut &mut buf[start..start + prefix_len]);
}

/// A varint, written inline: nearly all of them here (field keys, attribute lengths)
/// are one byte, and prost's writer is an out-of-line call through `BufMut` per varint.
#[inline]
fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// A field's key: its number and wire type, as one varint.
#[inline]
fn key(buf: &mut Vec<u8>, field: u32, wire_type: WireType) {
    varint(buf, u64::from(field) << 3 | wire_type as u64);
}

fn key_len(field: u32) -> usize {
    encoded_len_varint(u64::from(field) << 3)
}

/// What `string` writes for `value`.
fn string_len(field: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(field) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn length_delimited(buf: &mut Vec<u8>, value: &[u8]) {
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

/// A string field; proto3 leaves an empty one out.
fn string(buf: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        key(buf, field, WireType::LengthDelimited);
        length_delimited(buf, value.as_bytes());
    }
}

/// A trace or span id: a bytes field whose length is known, copied without a call.
fn id<const N: usize>(buf: &mut Vec<u8>, field: u32, value: [u8; N]) {
    const { assert!(N < 0x80, "the length is one byte") };
    key(buf, field, WireType::LengthDelimited);
    buf.push(N as u8);
    buf.extend_from_slice(&value);
}

fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(buf, field, WireType::LengthDelimited);
    length_delimited(buf, value);
}

/// An unsigned or enum field; proto3 leaves a zero out.
fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, WireType::Varint);
        varint(buf, value);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, WireType::SixtyFourBit);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        key(buf, field, WireType::ThirtyTwoBit);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;
    use std::borrow::Cow;

    fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state.parse::<TraceState>().expect("trace state"),
        )
    }

    fn span(name: &'static str, scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: context(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa,
                false,
                "",
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(name),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
            attributes: vec![KeyValue::new("http.request.method", "GET")],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// Spans using every kind of field and value, in two scopes.
    fn spans() -> Vec<SpanData> {
        let ours = InstrumentationScope::builder("ecommerce_monolith").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.flag", true)])
            .build();

        let plain = span("GET /api/products/{id}", &ours);

        let mut everything = span("checkout", &other);
        everything.span_context = context(u128::MAX - 7, 42, false, "vendor=value,other=x");
        everything.parent_span_id = SpanId::from(0x0102_0304_0506_0708);
        everything.parent_span_is_remote = true;
        everything.span_kind = SpanKind::Client;
        everything.name = Cow::Owned("SELECT products".to_string());
        everything.attributes = vec![
            KeyValue::new("empty", ""),
            KeyValue::new("text", "ünïcödé <b>"),
            KeyValue::new("flag", false),
            KeyValue::new("zero", 0i64),
            KeyValue::new("negative", -1_234_567_890_123i64),
            KeyValue::new("ratio", 0.25f64),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![-1, 0, 1]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec!["a".into(), "".into()])),
            ),
            KeyValue::new("long", "x".repeat(300)),
        ];
        everything.dropped_attributes_count = 3;
        everything
            .events
            .events
            .push(opentelemetry::trace::Event::new(
                "exception",
                UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                vec![KeyValue::new("exception.message", "boom")],
                1,
            ));
        everything.events.dropped_count = 2;
        everything.links.links.push(opentelemetry::trace::Link::new(
            context(9, 10, true, "k=v"),
            vec![KeyValue::new("link.kind", "enqueued by")],
            4,
        ));
        everything.links.dropped_count = 5;
        everything.status = Status::error("the gateway declined");

        let mut ok = span("commit", &ours);
        ok.status = Status::Ok;
        ok.span_kind = SpanKind::Internal;

        let mut producer = span("enqueue", &ours);
        producer.span_kind = SpanKind::Producer;
        let mut consumer = span("charge", &other);
        consumer.span_kind = SpanKind::Consumer;

        vec![plain, everything, ok, producer, consumer]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "ecommerce-monolith"),
                KeyValue::new("service.version", "0.1.0"),
                KeyValue::new("replica", 2i64),
            ])
            .with_schema_url(
                Vec::<KeyValue>::new(),
                "https://opentelemetry.io/schemas/1.30.0",
            )
            .build()
    }

    /// An exporter with the default settings, sending under `resource`.
    fn exporter_under(resource: &Resource) -> OtlpHttpExporter {
        let settings = crate::config::TelemetrySettings::from_source(&[].as_slice(), "test")
            .expect("default settings");
        let exporter =
            OtlpHttpExporter::new("http://unused".into(), &settings).expect("an exporter");
        exporter.use_resource(resource);
        exporter
    }

    /// The export request `exporter` would send for `encoded`, decoded by
    /// opentelemetry-proto.
    fn exported(
        exporter: &OtlpHttpExporter,
        encoded: &mut EncodedSpans,
    ) -> ExportTraceServiceRequest {
        let body = exporter.body(encoded).expect("a body");
        ExportTraceServiceRequest::decode(body).expect("valid OTLP")
    }

    #[test]
    fn what_is_written_decodes_to_what_opentelemetry_proto_would_send() {
        let resource = resource();
        let exporter = exporter_under(&resource);
        let mut encoded = EncodedSpans::default();
        for span in spans() {
            exporter.encode(&mut encoded, &span);
        }
        let decoded = exported(&exporter, &mut encoded);
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(decoded, expected);
        // Two scopes, in the order they first appear, each with its own spans.
        let scopes = &decoded.resource_spans[0].scope_spans;
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[0].spans.len(), 3);
        assert_eq!(scopes[1].spans.len(), 2);
    }

    /// A span of our own, with a fixed attribute set, an event and an error: written
    /// straight, and as the `SpanData` the gRPC export sends.
    fn own_span_both_ways(
        exporter: &OtlpHttpExporter,
        scope: &InstrumentationScope,
        encoded: &mut EncodedSpans,
    ) -> SpanData {
        let own = context(0x0a0b_0c0d, 0x77, false, "vendor=value");
        let fixed = FixedAttributes::new(vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.text", "SELECT 1 FROM products WHERE id = $1"),
        ]);
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = FinishedSpan {
            context: &own,
            parent_span_id: SpanId::from(0x0102),
            parent_is_remote: true,
            kind: SpanKind::Client,
            name: SpanName("SELECT", Some("products")),
            start,
            end: start + Duration::from_millis(3),
            error: Some("40P01"),
            event: Some(crate::telemetry::finished_span::SpanEvent {
                time: start + Duration::from_millis(2),
                name: "request failed",
                message: "deadlock detected",
            }),
        };
        let attributes = |attributes: &mut dyn Attributes| {
            attributes.fixed(&fixed);
            attributes.int("db.response.returned_rows", -3);
            attributes.text("error.type", "40P01");
        };
        exporter.encode_own(encoded, scope, &span, attributes);
        // Twice: the fixed attributes' bytes are worked out once, then copied.
        exporter.encode_own(encoded, scope, &span, attributes);
        span.to_span_data(scope, attributes)
    }

    /// Two own spans exported under `resource`: what is sent, decoded, and what
    /// opentelemetry-proto would send for their `SpanData`.
    fn own_spans_exported_under(
        resource: &Resource,
    ) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
        let exporter = exporter_under(resource);
        let scope = InstrumentationScope::builder("ecommerce_monolith").build();
        let mut encoded = EncodedSpans::default();
        let as_span_data = own_span_both_ways(&exporter, &scope, &mut encoded);
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                vec![as_span_data.clone(), as_span_data],
                &ResourceAttributesWithSchema::from(resource),
            ),
        };
        (exported(&exporter, &mut encoded), expected)
    }

    #[test]
    fn a_span_of_our_own_is_written_as_the_sdk_would_send_it() {
        let (decoded, expected) = own_spans_exported_under(&resource());
        assert_eq!(decoded, expected);
        let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "SELECT products");
        assert_eq!(span.attributes.len(), 4);
        assert_eq!(span.events.len(), 1);
    }

    #[test]
    fn a_batch_under_one_scope_is_sent_from_its_buffer_which_comes_back() {
        let exporter = exporter_under(&resource());
        let scope = InstrumentationScope::builder("ecommerce_monolith").build();
        let mut encoded = EncodedSpans::default();
        own_span_both_ways(&exporter, &scope, &mut encoded);
        let lent = encoded.scopes[0].1.as_ptr_range();
        let body = exporter.body(&mut encoded).expect("a body");
        assert!(
            lent.contains(&body.as_ptr()),
            "the body is the spans' own buffer, not a copy"
        );
        let first = ExportTraceServiceRequest::decode(body.clone()).expect("valid OTLP");
        assert_ne!(encoded.scopes[0].1.as_ptr_range(), lent);
        drop(body);

        // The client is done with it: the next batch's spans are written into it.
        encoded.clear();
        own_span_both_ways(&exporter, &scope, &mut encoded);
        let second = exported(&exporter, &mut encoded);
        assert_eq!(second, first);
        assert_eq!(encoded.scopes[0].1.as_ptr_range().start, lent.start);
    }

    #[test]
    fn a_resource_too_large_for_the_room_before_the_spans_is_sent_as_a_copy() {
        let resource = Resource::builder_empty()
            .with_attribute(KeyValue::new("k8s.pod.labels", "x".repeat(2 * HEADROOM)))
            .build();
        let (decoded, expected) = own_spans_exported_under(&resource);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn an_empty_batch_is_a_valid_request() {
        let schema = Schema::load().expect("the schema");
        let written = export_request(&schema, &mut EncodedSpans::default(), &[], "");
        let decoded = ExportTraceServiceRequest::decode(written.as_slice()).expect("valid OTLP");
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
    }
}
