//! The OTLP/HTTP trace exporter: the SDK's finished spans written straight into OTLP's
//! protobuf `ExportTraceServiceRequest` and POSTed to `{endpoint}/v1/traces`.
//!
//! Why not opentelemetry-otlp's HTTP exporter (still used for gRPC): it first copies
//! every span into the generated protobuf structs — a `String` per attribute key and
//! value, a `Vec` per id — and prost then measures each nested message again at every
//! level before writing it. On the service's cheapest request that came to ~20,000
//! instructions per span on the exporter thread, the largest single cost of tracing
//! (BENCHMARKS.md). Written directly, a span costs little more than a copy of its
//! bytes. The field numbers are OTLP's (opentelemetry-proto's `trace.proto`); a test
//! decodes what this module writes with opentelemetry-proto's generated types and
//! compares it with that crate's own conversion of the same spans.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// POSTs batches of spans as `application/x-protobuf` to one OTLP/HTTP traces URL.
#[derive(Debug)]
pub struct OtlpHttpExporter {
    url: String,
    timeout: Duration,
    /// Built on the exporter's own thread at the first export: reqwest's blocking
    /// client runs a runtime of its own and must not be built inside tokio's.
    client: OnceLock<reqwest::blocking::Client>,
    /// The `Resource` message, written once: it is the same in every batch.
    resource: Vec<u8>,
    resource_schema_url: String,
}

impl OtlpHttpExporter {
    /// `traces_url` is the full URL, e.g. `http://collector:4318/v1/traces`.
    pub fn new(traces_url: String, timeout: Duration) -> Self {
        Self {
            url: traces_url,
            timeout,
            client: OnceLock::new(),
            resource: Vec::new(),
            resource_schema_url: String::new(),
        }
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, OTelSdkError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| OTelSdkError::InternalFailure(format!("building the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| client))
    }
}

impl SpanExporter for OtlpHttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = export_request(&batch, &self.resource, &self.resource_schema_url);
        // The batch processor runs exports on a thread of its own, outside tokio: a
        // blocking call here holds up nothing but the next batch.
        let response = self
            .client()?
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .map_err(|e| OTelSdkError::InternalFailure(format!("{}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "{}: the collector answered {status}",
                self.url
            )))
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource.clear();
        for (key, value) in resource.iter() {
            message(&mut self.resource, RESOURCE_ATTRIBUTES, |buf| {
                key_value(buf, key.as_str(), value)
            });
        }
        self.resource_schema_url = resource.schema_url().unwrap_or_default().to_string();
    }
}

// Field numbers of opentelemetry-proto's messages, by message.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const SCOPE_ATTRIBUTES: u32 = 3;
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_TRACE_STATE: u32 = 3;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START_TIME: u32 = 7;
const SPAN_END_TIME: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
const SPAN_EVENTS: u32 = 11;
const SPAN_DROPPED_EVENTS: u32 = 12;
const SPAN_LINKS: u32 = 13;
const SPAN_DROPPED_LINKS: u32 = 14;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
const EVENT_DROPPED_ATTRIBUTES: u32 = 4;
const LINK_TRACE_ID: u32 = 1;
const LINK_SPAN_ID: u32 = 2;
const LINK_TRACE_STATE: u32 = 3;
const LINK_ATTRIBUTES: u32 = 4;
const LINK_DROPPED_ATTRIBUTES: u32 = 5;
const LINK_FLAGS: u32 = 6;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
const ARRAY_VALUES: u32 = 1;

/// `SpanFlags`: the W3C trace flags, and whether the parent is known to be remote.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// The body of one export: the spans grouped by instrumentation scope (in the order
/// the scopes first appear) under the one resource.
fn export_request(spans: &[SpanData], resource: &[u8], resource_schema_url: &str) -> Vec<u8> {
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    for span in spans {
        if !scopes.contains(&&span.instrumentation_scope) {
            scopes.push(&span.instrumentation_scope);
        }
    }
    let mut buf = Vec::with_capacity(256 + spans.len() * 512);
    message(&mut buf, REQUEST_RESOURCE_SPANS, |buf| {
        message(buf, RESOURCE_SPANS_RESOURCE, |buf| {
            buf.extend_from_slice(resource)
        });
        for scope in scopes {
            message(buf, RESOURCE_SPANS_SCOPE_SPANS, |buf| {
                message(buf, SCOPE_SPANS_SCOPE, |buf| {
                    instrumentation_scope(buf, scope)
                });
                for span in spans.iter().filter(|s| &s.instrumentation_scope == scope) {
                    message(buf, SCOPE_SPANS_SPANS, |buf| span_message(buf, span));
                }
                string(
                    buf,
                    SCOPE_SPANS_SCHEMA_URL,
                    scope.schema_url().unwrap_or_default(),
                );
            });
        }
        string(buf, RESOURCE_SPANS_SCHEMA_URL, resource_schema_url);
    });
    buf
}

fn instrumentation_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(buf, SCOPE_NAME, scope.name());
    string(buf, SCOPE_VERSION, scope.version().unwrap_or_default());
    attributes(buf, SCOPE_ATTRIBUTES, scope.attributes());
}

fn span_message(buf: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes(buf, SPAN_TRACE_ID, &context.trace_id().to_bytes());
    bytes(buf, SPAN_SPAN_ID, &context.span_id().to_bytes());
    trace_state(buf, SPAN_TRACE_STATE, context);
    if span.parent_span_id != SpanId::INVALID {
        bytes(buf, SPAN_PARENT_SPAN_ID, &span.parent_span_id.to_bytes());
    }
    string(buf, SPAN_NAME, &span.name);
    uint(buf, SPAN_KIND, span_kind(&span.span_kind));
    fixed64(buf, SPAN_START_TIME, unix_nanos(span.start_time));
    fixed64(buf, SPAN_END_TIME, unix_nanos(span.end_time));
    attributes(buf, SPAN_ATTRIBUTES, &span.attributes);
    uint(
        buf,
        SPAN_DROPPED_ATTRIBUTES,
        span.dropped_attributes_count.into(),
    );
    for event in span.events.iter() {
        message(buf, SPAN_EVENTS, |buf| {
            fixed64(buf, EVENT_TIME, unix_nanos(event.timestamp));
            string(buf, EVENT_NAME, &event.name);
            attributes(buf, EVENT_ATTRIBUTES, &event.attributes);
            uint(
                buf,
                EVENT_DROPPED_ATTRIBUTES,
                event.dropped_attributes_count.into(),
            );
        });
    }
    uint(buf, SPAN_DROPPED_EVENTS, span.events.dropped_count.into());
    for link in span.links.iter() {
        message(buf, SPAN_LINKS, |buf| {
            let linked = &link.span_context;
            bytes(buf, LINK_TRACE_ID, &linked.trace_id().to_bytes());
            bytes(buf, LINK_SPAN_ID, &linked.span_id().to_bytes());
            trace_state(buf, LINK_TRACE_STATE, linked);
            attributes(buf, LINK_ATTRIBUTES, &link.attributes);
            uint(
                buf,
                LINK_DROPPED_ATTRIBUTES,
                link.dropped_attributes_count.into(),
            );
            fixed32(buf, LINK_FLAGS, span_flags(linked, linked.is_remote()));
        });
    }
    uint(buf, SPAN_DROPPED_LINKS, span.links.dropped_count.into());
    message(buf, SPAN_STATUS, |buf| match &span.status {
        Status::Unset => {}
        Status::Ok => uint(buf, STATUS_CODE, 1),
        Status::Error { description } => {
            string(buf, STATUS_MESSAGE, description);
            uint(buf, STATUS_CODE, 2);
        }
    });
    fixed32(
        buf,
        SPAN_FLAGS,
        span_flags(context, span.parent_span_is_remote),
    );
}

/// OTLP's `SpanKind` numbers (0 is "unspecified").
fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn span_flags(context: &SpanContext, remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | FLAG_HAS_IS_REMOTE;
    if remote {
        flags |= FLAG_IS_REMOTE;
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
    buf: &mut Vec<u8>,
    field: u32,
    attributes: impl IntoIterator<Item = &'a KeyValue>,
) {
    for attribute in attributes {
        message(buf, field, |buf| {
            key_value(buf, attribute.key.as_str(), &attribute.value)
        });
    }
}

fn key_value(buf: &mut Vec<u8>, key: &str, value: &Value) {
    string(buf, KEY_VALUE_KEY, key);
    message(buf, KEY_VALUE_VALUE, |buf| any_value(buf, value));
}

/// An `AnyValue`: one field of a oneof, written even when it holds its default (an
/// empty string, `false`, 0), or the reader would see no value at all.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            encode_key(ANY_BOOL, WireType::Varint, buf);
            encode_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            encode_key(ANY_INT, WireType::Varint, buf);
            // int64 is written as its two's complement bits.
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            encode_key(ANY_DOUBLE, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            encode_key(ANY_STRING, WireType::LengthDelimited, buf);
            length_delimited(buf, s.as_str().as_bytes());
        }
        Value::Array(array) => message(buf, ANY_ARRAY, |buf| match array {
            Array::Bool(values) => array_values(buf, values, |v| Value::Bool(*v)),
            Array::I64(values) => array_values(buf, values, |v| Value::I64(*v)),
            Array::F64(values) => array_values(buf, values, |v| Value::F64(*v)),
            Array::String(values) => array_values(buf, values, string_value),
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

fn array_values<T>(buf: &mut Vec<u8>, values: &[T], to_value: impl Fn(&T) -> Value) {
    for value in values {
        message(buf, ARRAY_VALUES, |buf| any_value(buf, &to_value(value)));
    }
}

/// A nested message: its field key, its length, then what `write` appends. The length
/// is known only afterwards: one byte is kept for it, enough for a body under 128
/// bytes (an attribute, a status); a longer body is moved up to make room.
fn message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    encode_key(field, WireType::LengthDelimited, buf);
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

fn length_delimited(buf: &mut Vec<u8>, value: &[u8]) {
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value);
}

/// A string field; proto3 leaves an empty one out.
fn string(buf: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        encode_key(field, WireType::LengthDelimited, buf);
        length_delimited(buf, value.as_bytes());
    }
}

fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    encode_key(field, WireType::LengthDelimited, buf);
    length_delimited(buf, value);
}

/// An unsigned or enum field; proto3 leaves a zero out.
fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        encode_key(field, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        encode_key(field, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        encode_key(field, WireType::ThirtyTwoBit, buf);
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

    #[test]
    fn what_is_written_decodes_to_what_opentelemetry_proto_would_send() {
        let resource = resource();
        let mut exporter = OtlpHttpExporter::new("http://unused".into(), Duration::from_secs(1));
        exporter.set_resource(&resource);
        let written = export_request(&spans(), &exporter.resource, &exporter.resource_schema_url);

        let decoded = ExportTraceServiceRequest::decode(written.as_slice()).expect("valid OTLP");
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

    #[test]
    fn an_empty_batch_is_a_valid_request() {
        let written = export_request(&[], &[], "");
        let decoded = ExportTraceServiceRequest::decode(written.as_slice()).expect("valid OTLP");
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
    }
}
