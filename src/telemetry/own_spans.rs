//! The two spans the service makes most — a request's server span and each statement's
//! client span — made without the SDK's span objects. Their ids are drawn and the
//! sampler asked here; a finished one is handed to the export as it is: written as OTLP
//! protobuf straight into the span queue from the `&'static str`s and numbers it holds
//! (OTLP/HTTP, [`super::span_queue`]), or as the SDK's `SpanData` to its batch processor
//! (gRPC).
//!
//! Why: through the SDK each of these spans was a boxed span behind a lock, its
//! attributes gathered into a `Vec` of `KeyValue`s, a `SpanData` built, written, and
//! all of it freed: with them gone (and two smaller changes) telemetry costs a catalog
//! read ~6,700 instructions instead of ~13,000 (BENCHMARKS.md, "The two commonest
//! spans without the SDK's span objects"). A
//! statement's fixed attributes (its text, operation and table) are written once, when
//! it first runs, and copied from then on.
//!
//! The `tracing` spans (a checkout and its steps, the jobs) still go through
//! `tracing-opentelemetry` and the SDK; they find a server span as their parent in the
//! OpenTelemetry context, where the request middleware puts its `SpanContext`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{SpanContext, SpanKind, TraceFlags};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};

use super::finished_span::{Attributes, FinishedSpan, SpanName};
use super::span_queue::SpanQueue;

/// Where finished spans of our own go, and the sampler that decides which are kept.
struct OwnSpans {
    sink: Sink,
    sampler: Sampler,
}

enum Sink {
    /// Written as protobuf into the OTLP/HTTP exporter's queue.
    Queue(SpanQueue),
    /// Handed, as `SpanData` of this scope, to the gRPC exporter's batch processor.
    Sdk {
        processor: Arc<BatchSpanProcessor>,
        scope: InstrumentationScope,
    },
}

static OWN_SPANS: OnceLock<OwnSpans> = OnceLock::new();
/// Set when the tracer provider shuts down: later spans are not exported, as the
/// SDK's tracer stops making them (the gRPC processor would warn about every one).
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

/// How the spans of our own are exported: built with the tracer provider.
pub(super) struct OwnSpanExport {
    sink: Sink,
}

impl OwnSpanExport {
    pub(super) fn queue(queue: SpanQueue) -> Self {
        Self {
            sink: Sink::Queue(queue),
        }
    }

    pub(super) fn sdk(processor: Arc<BatchSpanProcessor>, scope: InstrumentationScope) -> Self {
        Self {
            sink: Sink::Sdk { processor, scope },
        }
    }
}

/// Spans of our own are made from now on, sampled by `sampler` (the provider's). Only
/// the first installation counts, like the subscriber's (tests install more): false
/// for the others.
pub(super) fn install(export: OwnSpanExport, sampler: Sampler) -> bool {
    OWN_SPANS
        .set(OwnSpans {
            sink: export.sink,
            sampler,
        })
        .is_ok()
}

/// No span of our own is exported from now on: the export is shutting down.
pub(super) fn shut_down() {
    SHUT_DOWN.store(true, Ordering::Relaxed);
}

/// Whether spans of our own are made (trace export is on).
pub fn enabled() -> bool {
    OWN_SPANS.get().is_some()
}

/// The context of a new span under `parent`, a span of this process: its trace, flags
/// and trace state, and an id of its own. None when nothing is exported (export off,
/// or the parent not sampled — every sampler the service offers keeps a child of a
/// local parent exactly when it kept the parent, as they decide by the parent or by
/// the trace id).
pub fn child_of(parent: &SpanContext) -> Option<SpanContext> {
    OWN_SPANS.get()?;
    parent.is_sampled().then(|| {
        SpanContext::new(
            parent.trace_id(),
            RandomIdGenerator::default().new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    })
}

/// The context of a request's server span: a child of `remote` (the caller's
/// `traceparent`, when it sent a valid one) or the root of a new trace, sampled as the
/// sampler decides. None when trace export is off.
pub fn server_span(remote: &Context, name: SpanName<'_>) -> Option<SpanContext> {
    use opentelemetry::trace::TraceContextExt as _;

    let own = OWN_SPANS.get()?;
    let caller = remote.span();
    let caller = caller.span_context();
    let trace_id = if caller.is_valid() {
        caller.trace_id()
    } else {
        RandomIdGenerator::default().new_trace_id()
    };
    // The samplers the service offers decide by the parent and the trace id alone; the
    // name is what the SDK would pass them.
    let sampled =
        own.sampler
            .should_sample(Some(remote), trace_id, name.0, &SpanKind::Server, &[], &[]);
    let flags = if caller.is_valid() {
        caller.trace_flags()
    } else {
        TraceFlags::default()
    };
    let flags = flags.with_sampled(sampled.decision == SamplingDecision::RecordAndSample);
    Some(SpanContext::new(
        trace_id,
        RandomIdGenerator::default().new_span_id(),
        flags,
        false,
        sampled.trace_state,
    ))
}

/// Exports `span` (if sampled), its attributes written by `attributes`.
pub fn finish(span: &FinishedSpan<'_>, attributes: impl FnOnce(&mut dyn Attributes)) {
    let Some(own) = OWN_SPANS.get() else {
        return;
    };
    if !span.context.is_sampled() || SHUT_DOWN.load(Ordering::Relaxed) {
        return;
    }
    match &own.sink {
        Sink::Queue(queue) => queue.write(span, attributes),
        Sink::Sdk { processor, scope } => {
            use opentelemetry_sdk::trace::SpanProcessor as _;
            processor.on_end(span.to_span_data(scope, attributes));
        }
    }
}
