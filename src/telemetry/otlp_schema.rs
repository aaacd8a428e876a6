//! OTLP's field and enum numbers, read from the schema itself: opentelemetry-proto's
//! descriptors of `trace.proto`, `common.proto` and `resource.proto` (the bytes its
//! build compiled from the specification's files), decoded once at start. The exporter
//! writes with these numbers; none is kept by hand here, and a field the schema no
//! longer has stops the start with an error that names it.

use std::collections::HashMap;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// The numbers the exporter writes with, by message.
#[derive(Debug, Clone)]
pub struct Schema {
    pub request: Request,
    pub resource_spans: ResourceSpans,
    pub resource: Resource,
    pub scope_spans: ScopeSpans,
    pub scope: Scope,
    pub span: Span,
    pub event: Event,
    pub link: Link,
    pub status: Status,
    pub key_value: KeyValue,
    pub any: AnyValue,
    pub array: Array,
    pub kind: SpanKinds,
    pub code: StatusCodes,
    pub flags: SpanFlags,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub resource_spans: u32,
}
#[derive(Debug, Clone)]
pub struct ResourceSpans {
    pub resource: u32,
    pub scope_spans: u32,
    pub schema_url: u32,
}
#[derive(Debug, Clone)]
pub struct Resource {
    pub attributes: u32,
}
#[derive(Debug, Clone)]
pub struct ScopeSpans {
    pub scope: u32,
    pub spans: u32,
    pub schema_url: u32,
}
#[derive(Debug, Clone)]
pub struct Scope {
    pub name: u32,
    pub version: u32,
    pub attributes: u32,
}
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: u32,
    pub span_id: u32,
    pub trace_state: u32,
    pub parent_span_id: u32,
    pub name: u32,
    pub kind: u32,
    pub start_time: u32,
    pub end_time: u32,
    pub attributes: u32,
    pub dropped_attributes: u32,
    pub events: u32,
    pub dropped_events: u32,
    pub links: u32,
    pub dropped_links: u32,
    pub status: u32,
    pub flags: u32,
}
#[derive(Debug, Clone)]
pub struct Event {
    pub time: u32,
    pub name: u32,
    pub attributes: u32,
    pub dropped_attributes: u32,
}
#[derive(Debug, Clone)]
pub struct Link {
    pub trace_id: u32,
    pub span_id: u32,
    pub trace_state: u32,
    pub attributes: u32,
    pub dropped_attributes: u32,
    pub flags: u32,
}
#[derive(Debug, Clone)]
pub struct Status {
    pub message: u32,
    pub code: u32,
}
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub key: u32,
    pub value: u32,
}
#[derive(Debug, Clone)]
pub struct AnyValue {
    pub string: u32,
    pub bool: u32,
    pub int: u32,
    pub double: u32,
    pub array: u32,
}
#[derive(Debug, Clone)]
pub struct Array {
    pub values: u32,
}
/// `Span.SpanKind`'s numbers.
#[derive(Debug, Clone)]
pub struct SpanKinds {
    pub internal: u64,
    pub server: u64,
    pub client: u64,
    pub producer: u64,
    pub consumer: u64,
}
/// `Status.StatusCode`'s numbers.
#[derive(Debug, Clone)]
pub struct StatusCodes {
    pub ok: u64,
    pub error: u64,
}
/// `SpanFlags`' bits: whether the parent's remoteness is known, and whether it is.
#[derive(Debug, Clone)]
pub struct SpanFlags {
    pub has_is_remote: u32,
    pub is_remote: u32,
}

/// The messages and enums of the descriptors, by full name (`opentelemetry.proto.trace.
/// v1.Span.Event`), each as its names to numbers.
struct Index {
    messages: HashMap<String, HashMap<String, i32>>,
    enums: HashMap<String, HashMap<String, i32>>,
}

impl Index {
    fn read(descriptors: &[u8]) -> Result<Self, String> {
        let set = FileDescriptorSet::decode(descriptors)
            .map_err(|e| format!("opentelemetry-proto's descriptors do not decode: {e}"))?;
        let mut index = Index {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                index.add_message(package, message);
            }
            for kind in &file.enum_type {
                index.add_enum(package, kind);
            }
        }
        Ok(index)
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        let fields = message
            .field
            .iter()
            .map(|f| (f.name().to_string(), f.number()))
            .collect();
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for kind in &message.enum_type {
            self.add_enum(&name, kind);
        }
        self.messages.insert(name, fields);
    }

    fn add_enum(&mut self, scope: &str, kind: &EnumDescriptorProto) {
        let values = kind
            .value
            .iter()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        self.enums
            .insert(format!("{scope}.{}", kind.name()), values);
    }

    fn field(&self, message: &str, field: &str) -> Result<u32, String> {
        self.messages
            .get(message)
            .and_then(|fields| fields.get(field))
            .and_then(|number| u32::try_from(*number).ok())
            .ok_or_else(|| format!("the OTLP schema has no field {message}.{field}"))
    }

    fn value(&self, kind: &str, value: &str) -> Result<i32, String> {
        self.enums
            .get(kind)
            .and_then(|values| values.get(value))
            .copied()
            .ok_or_else(|| format!("the OTLP schema has no value {kind}.{value}"))
    }
}

const TRACE: &str = "opentelemetry.proto.trace.v1";
const COMMON: &str = "opentelemetry.proto.common.v1";

impl Schema {
    /// The numbers of the OTLP schema opentelemetry-proto was built from.
    pub fn load() -> Result<Self, String> {
        Self::from_descriptors(opentelemetry_proto::DESCRIPTORS)
    }

    fn from_descriptors(descriptors: &[u8]) -> Result<Self, String> {
        let index = Index::read(descriptors)?;
        let span = format!("{TRACE}.Span");
        let event = format!("{TRACE}.Span.Event");
        let link = format!("{TRACE}.Span.Link");
        let status = format!("{TRACE}.Status");
        let scope_spans = format!("{TRACE}.ScopeSpans");
        let resource_spans = format!("{TRACE}.ResourceSpans");
        let scope = format!("{COMMON}.InstrumentationScope");
        let key_value = format!("{COMMON}.KeyValue");
        let any = format!("{COMMON}.AnyValue");
        let kind = |name: &str| -> Result<u64, String> {
            let value = index.value(&format!("{TRACE}.Span.SpanKind"), name)?;
            u64::try_from(value).map_err(|e| e.to_string())
        };
        let code = |name: &str| -> Result<u64, String> {
            let value = index.value(&format!("{TRACE}.Status.StatusCode"), name)?;
            u64::try_from(value).map_err(|e| e.to_string())
        };
        let flag = |name: &str| -> Result<u32, String> {
            let value = index.value(&format!("{TRACE}.SpanFlags"), name)?;
            u32::try_from(value).map_err(|e| e.to_string())
        };
        let f = |message: &str, field: &str| index.field(message, field);
        Ok(Schema {
            request: Request {
                resource_spans: f(
                    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
                    "resource_spans",
                )?,
            },
            resource_spans: ResourceSpans {
                resource: f(&resource_spans, "resource")?,
                scope_spans: f(&resource_spans, "scope_spans")?,
                schema_url: f(&resource_spans, "schema_url")?,
            },
            resource: Resource {
                attributes: f("opentelemetry.proto.resource.v1.Resource", "attributes")?,
            },
            scope_spans: ScopeSpans {
                scope: f(&scope_spans, "scope")?,
                spans: f(&scope_spans, "spans")?,
                schema_url: f(&scope_spans, "schema_url")?,
            },
            scope: Scope {
                name: f(&scope, "name")?,
                version: f(&scope, "version")?,
                attributes: f(&scope, "attributes")?,
            },
            span: Span {
                trace_id: f(&span, "trace_id")?,
                span_id: f(&span, "span_id")?,
                trace_state: f(&span, "trace_state")?,
                parent_span_id: f(&span, "parent_span_id")?,
                name: f(&span, "name")?,
                kind: f(&span, "kind")?,
                start_time: f(&span, "start_time_unix_nano")?,
                end_time: f(&span, "end_time_unix_nano")?,
                attributes: f(&span, "attributes")?,
                dropped_attributes: f(&span, "dropped_attributes_count")?,
                events: f(&span, "events")?,
                dropped_events: f(&span, "dropped_events_count")?,
                links: f(&span, "links")?,
                dropped_links: f(&span, "dropped_links_count")?,
                status: f(&span, "status")?,
                flags: f(&span, "flags")?,
            },
            event: Event {
                time: f(&event, "time_unix_nano")?,
                name: f(&event, "name")?,
                attributes: f(&event, "attributes")?,
                dropped_attributes: f(&event, "dropped_attributes_count")?,
            },
            link: Link {
                trace_id: f(&link, "trace_id")?,
                span_id: f(&link, "span_id")?,
                trace_state: f(&link, "trace_state")?,
                attributes: f(&link, "attributes")?,
                dropped_attributes: f(&link, "dropped_attributes_count")?,
                flags: f(&link, "flags")?,
            },
            status: Status {
                message: f(&status, "message")?,
                code: f(&status, "code")?,
            },
            key_value: KeyValue {
                key: f(&key_value, "key")?,
                value: f(&key_value, "value")?,
            },
            any: AnyValue {
                string: f(&any, "string_value")?,
                bool: f(&any, "bool_value")?,
                int: f(&any, "int_value")?,
                double: f(&any, "double_value")?,
                array: f(&any, "array_value")?,
            },
            array: Array {
                values: f(&format!("{COMMON}.ArrayValue"), "values")?,
            },
            kind: SpanKinds {
                internal: kind("SPAN_KIND_INTERNAL")?,
                server: kind("SPAN_KIND_SERVER")?,
                client: kind("SPAN_KIND_CLIENT")?,
                producer: kind("SPAN_KIND_PRODUCER")?,
                consumer: kind("SPAN_KIND_CONSUMER")?,
            },
            code: StatusCodes {
                ok: code("STATUS_CODE_OK")?,
                error: code("STATUS_CODE_ERROR")?,
            },
            flags: SpanFlags {
                has_is_remote: flag("SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK")?,
                is_remote: flag("SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_read_from_opentelemetry_protos_descriptors() {
        let schema = Schema::load().expect("every field the exporter writes");
        // A few the OTLP specification fixed long ago, as a check on the reading.
        assert_eq!(schema.span.name, 5);
        assert_eq!(schema.span.attributes, 9);
        assert_eq!(schema.kind.server, 2);
        assert_eq!(schema.code.error, 2);
        assert_eq!(schema.flags.is_remote, 0x200);
    }

    #[test]
    fn a_field_the_schema_lacks_is_named() {
        let descriptors = FileDescriptorSet { file: Vec::new() }.encode_to_vec();
        let error = Schema::from_descriptors(&descriptors).expect_err("nothing to read");
        assert!(
            error.contains("ExportTraceServiceRequest.resource_spans"),
            "{error}"
        );
    }
}
