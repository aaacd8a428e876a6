//! Log output: JSON lines (for containers) or human-readable text, each line inside a
//! request carrying the `trace_id` and `span_id` that Jaeger shows for it.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, fmt as tfmt};

use crate::config::LogFormat;

/// The installed subscriber, kept weakly so that layers and formatters can ask the
/// OpenTelemetry layer about a span while an event is being dispatched (the global
/// dispatcher is not re-entrant: inside a layer it answers "no subscriber").
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// The OpenTelemetry context of a span, if trace export is on.
pub(crate) fn otel_context_of(span: &tracing::span::Id) -> Option<opentelemetry::Context> {
    let dispatch = DISPATCH.get()?.upgrade()?;
    tracing_opentelemetry::get_otel_context(span, &dispatch)
}

/// Where log lines go: the service logs to stdout (12-factor); the command-line tools
/// log to stderr, because their stdout is their output (a report, JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
}

pub fn layer<S>(log_format: LogFormat, output: LogOutput) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let (writer, is_terminal) = match output {
        LogOutput::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogOutput::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    match log_format {
        LogFormat::Json => tfmt::layer()
            .with_writer(writer)
            .event_format(WithTraceIds {
                inner: tfmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
                json: true,
            })
            .fmt_fields(format::JsonFields::new())
            .boxed(),
        LogFormat::Pretty => tfmt::layer()
            .with_writer(writer)
            .with_ansi(is_terminal)
            .event_format(WithTraceIds {
                inner: tfmt::format().with_target(true),
                json: false,
            })
            .boxed(),
    }
}

pub fn install_global<S>(subscriber: S) -> anyhow::Result<()>
where
    S: Subscriber + Send + Sync + 'static,
{
    let dispatch = Dispatch::new(subscriber);
    // Only the first installation counts; tests may call this more than once.
    let _ = DISPATCH.set(dispatch.downgrade());
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| anyhow::anyhow!("a global tracing subscriber is already installed: {e}"))
}

/// The trace and span id of the event's current span, as OpenTelemetry sees them;
/// with tracing export switched off, the request's trace id from the HTTP layer.
fn ids_of_current_span<S, N>(ctx: &FmtContext<'_, S, N>) -> (Option<String>, Option<String>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    // Outside any `tracing` span: the request's server span, if export is on (it is the
    // current OpenTelemetry context while the request runs; see `telemetry::http`).
    let cx = match ctx.lookup_current() {
        Some(span) => otel_context_of(&span.id()),
        None => Some(opentelemetry::Context::current()),
    };
    cx.and_then(|cx| {
        let span = cx.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                Some(span_context.trace_id().to_string()),
                Some(span_context.span_id().to_string()),
            )
        })
    })
    .unwrap_or_else(|| (super::http::current_trace_id(), None))
}

struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let (trace_id, span_id) = ids_of_current_span(ctx);
        let line = line.trim_end();
        if trace_id.is_none() {
            return writeln!(writer, "{line}");
        }
        let mut ids = String::new();
        if self.json {
            // The inner formatter wrote one JSON object: add the ids as top-level keys.
            let body = line.strip_suffix('}').unwrap_or(line);
            for (key, value) in [("trace_id", &trace_id), ("span_id", &span_id)] {
                if let Some(value) = value {
                    write!(ids, ",\"{key}\":\"{value}\"")?;
                }
            }
            writeln!(writer, "{body}{ids}}}")
        } else {
            for (key, value) in [("trace_id", &trace_id), ("span_id", &span_id)] {
                if let Some(value) = value {
                    write!(ids, " {key}={value}")?;
                }
            }
            writeln!(writer, "{line}{ids}")
        }
    }
}
