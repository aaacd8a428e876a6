//! A finished span of our own (`super::own_spans`) as the exporters take it: what it
//! says but its attributes ([`FinishedSpan`]), and its attributes written through
//! [`Attributes`] — as protobuf by the OTLP/HTTP exporter, or as the SDK's `SpanData`
//! for gRPC ([`FinishedSpan::to_span_data`]).

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// A span's name in two parts joined by a space, the second optional: `GET
/// /api/products/{id}`, `SELECT inventory`, `COMMIT`. Kept apart so that no name is
/// put together per span.
#[derive(Debug, Clone, Copy)]
pub struct SpanName<'a>(pub &'a str, pub Option<&'a str>);

impl SpanName<'_> {
    pub fn to_text(self) -> String {
        match self.1 {
            Some(second) => format!("{} {second}", self.0),
            None => self.0.to_string(),
        }
    }
}

/// One event on a span: `name` at `time`, saying `error.message`.
pub struct SpanEvent<'a> {
    pub time: SystemTime,
    pub name: &'static str,
    pub message: &'a str,
}

/// Everything a finished span of our own says but its attributes.
pub struct FinishedSpan<'a> {
    pub context: &'a SpanContext,
    pub parent_span_id: SpanId,
    pub parent_is_remote: bool,
    pub kind: SpanKind,
    pub name: SpanName<'a>,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Set when the span failed: its status's description.
    pub error: Option<&'a str>,
    pub event: Option<SpanEvent<'a>>,
}

/// What a span's attributes are written into: protobuf, or the SDK's `KeyValue`s.
pub trait Attributes {
    fn text(&mut self, key: &'static str, value: &str);
    fn int(&mut self, key: &'static str, value: i64);
    /// Attributes fixed for the life of the process (a statement's), written once.
    fn fixed(&mut self, attributes: &FixedAttributes);
}

/// Attributes that never change, with their protobuf worked out at their first use.
pub struct FixedAttributes {
    key_values: Vec<KeyValue>,
    encoded: OnceLock<Vec<u8>>,
}

impl FixedAttributes {
    pub fn new(key_values: Vec<KeyValue>) -> Self {
        Self {
            key_values,
            encoded: OnceLock::new(),
        }
    }

    pub(super) fn key_values(&self) -> &[KeyValue] {
        &self.key_values
    }

    pub(super) fn encoded(&self, encode: impl FnOnce(&[KeyValue]) -> Vec<u8>) -> &[u8] {
        self.encoded.get_or_init(|| encode(&self.key_values))
    }
}

impl FinishedSpan<'_> {
    /// The span as the SDK's exporters take it, under `scope`.
    pub fn to_span_data(
        &self,
        scope: &InstrumentationScope,
        attributes: impl FnOnce(&mut dyn Attributes),
    ) -> SpanData {
        let mut key_values = KeyValues(Vec::with_capacity(10));
        attributes(&mut key_values);
        let events = self
            .event
            .iter()
            .map(|event| {
                Event::new(
                    event.name,
                    event.time,
                    vec![KeyValue::new("error.message", event.message.to_string())],
                    0,
                )
            })
            .collect();
        SpanData {
            span_context: self.context.clone(),
            parent_span_id: self.parent_span_id,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind.clone(),
            name: Cow::Owned(self.name.to_text()),
            start_time: self.start,
            end_time: self.end,
            attributes: key_values.0,
            dropped_attributes_count: 0,
            events: {
                let mut span_events = SpanEvents::default();
                span_events.events = events;
                span_events
            },
            links: SpanLinks::default(),
            status: self
                .error
                .map_or(Status::Unset, |why| Status::error(why.to_string())),
            instrumentation_scope: scope.clone(),
        }
    }
}

struct KeyValues(Vec<KeyValue>);

impl Attributes for KeyValues {
    fn text(&mut self, key: &'static str, value: &str) {
        self.0.push(KeyValue::new(key, value.to_string()));
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.0.push(KeyValue::new(key, value));
    }

    fn fixed(&mut self, attributes: &FixedAttributes) {
        self.0.extend_from_slice(attributes.key_values());
    }
}
