//! Everything the service tells the outside world about itself, set up in one place:
//!
//! - traces: `tracing` spans exported over OTLP by `tracing-opentelemetry` ([`init`]),
//!   each span written as OTLP protobuf where it ends and sent in batches ([`span_queue`],
//!   [`otlp_http`]);
//! - database statements as client spans ([`db_spans`]);
//! - HTTP server spans, the `X-Trace-Id` header and request metrics ([`http`]);
//! - Prometheus metrics ([`metrics`]), the latency histograms with exemplars that link
//!   them to traces ([`exemplars`]), served as OpenMetrics to Prometheus ([`openmetrics`]);
//! - logs with the trace and span id of the request on every line ([`logs`]).
//!
//! The application code only creates spans and records metrics; it never talks to an
//! exporter.

pub mod db_spans;
pub mod exemplars;
pub mod finished_span;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod openmetrics;
pub mod otlp_http;
mod otlp_schema;
pub mod own_spans;
pub mod server_timing;
pub mod span_queue;
pub mod without_polls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

use self::logs::LogOutput;
use self::otlp_http::{ExportFailures, OtlpHttpExporter};
use self::span_queue::EncodingSpanProcessor;
use self::without_polls::WithoutPolls;
use crate::config::{LogFormat, OtlpProtocol, TelemetrySettings, TraceSampler};

/// The crate's own spans are the only ones exported: the exporter's HTTP/gRPC
/// clients must never trace themselves.
const OWN_TARGET: &str = env!("CARGO_CRATE_NAME");
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The W3C `traceparent` of the current span, if it is being traced: what a job stored
/// in the outbox carries, so that its spans continue the trace that enqueued it.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    /// Whether its export is the one the spans of our own go to (see `own_spans`).
    exports_own_spans: bool,
}

impl Telemetry {
    /// Exports the spans still queued. Bounded in time, so a dead collector cannot
    /// hold up a deployment.
    pub async fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            if self.exports_own_spans {
                own_spans::shut_down();
            }
            let flushed = tokio::task::spawn_blocking(move || {
                provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            })
            .await;
            match flushed {
                Ok(Ok(())) => tracing::info!("trace exporter flushed and shut down"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "trace exporter did not shut down cleanly")
                }
                Err(e) => tracing::warn!(error = %e, "trace exporter shutdown task failed"),
            }
        }
    }
}

/// Installs the global subscriber: logs, and spans exported over OTLP.
///
/// Must run inside a tokio runtime (the gRPC exporter needs one).
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    init_with_logs_to(settings, LogOutput::Stdout)
}

/// [`init`] for a command-line tool: logs go to stderr, stdout is the tool's output.
pub fn init_for_tool(settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    init_with_logs_to(settings, LogOutput::Stderr)
}

fn init_with_logs_to(settings: &TelemetrySettings, output: LogOutput) -> anyhow::Result<Telemetry> {
    let log_filter = EnvFilter::try_new(&settings.log_filter)
        .with_context(|| format!("RUST_LOG: cannot parse {:?}", settings.log_filter))?;
    // The log filter hears of polls only if it has span directives (`target[span]=level`):
    // those are the only ones that depend on which span is entered.
    let log_layer = logs::layer(settings.log_format, output).with_filter(log_filter);
    let log_layer: Box<dyn Layer<_> + Send + Sync> = if settings.log_filter.contains('[') {
        Box::new(log_layer)
    } else {
        Box::new(WithoutPolls(log_layer))
    };

    let mut exports_own_spans = false;
    let tracer_provider = if settings.traces_enabled {
        let (provider, own_span_export) = build_tracer_provider(settings)?;
        // The server and statement spans, made without the SDK's span objects.
        exports_own_spans = own_spans::install(own_span_export, sampler(&settings.sampler));
        Some(provider)
    } else {
        None
    };
    let trace_layers = tracer_provider.as_ref().map(|provider| {
        let tracer = provider.tracer(OWN_TARGET);
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer.clone())
            // Source locations, thread ids and busy/idle timings on every span cost
            // more per request than they tell a reader of these traces.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // `tracing` spans find their parents through `tracing`; only the server span,
            // which is not one, is made current as an OpenTelemetry context (by the
            // request middleware, see `http`). Attaching a context at every poll of
            // every `tracing` span as well would be work without a reader.
            .with_context_activation(false)
            // An ERROR event inside a span (a 500, an orphaned payment) marks it failed;
            // business failures (a declined card) are marked explicitly by the checkout.
            .with_error_events_to_status(true);
        // Only the crate's own spans and events are exported: the exporter's HTTP/gRPC
        // clients must never trace themselves.
        let spans = spans.with_filter(Targets::new().with_target(OWN_TARGET, Level::TRACE));
        // A span ends when it closes, not at its last exit: the layer's only use of polls
        // is that end time, bought with a lock and a clock read at every exit.
        WithoutPolls(spans)
    });

    let subscriber = tracing_subscriber::registry()
        .with(trace_layers)
        .with(log_layer);
    logs::install_global(subscriber)?;

    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(
            endpoint = %settings.otlp_endpoint,
            protocol = ?settings.otlp_protocol,
            "exporting traces over OTLP"
        );
    } else {
        tracing::info!("tracing export disabled (OTEL_SDK_DISABLED=true)");
    }
    Ok(Telemetry {
        tracer_provider,
        exports_own_spans,
    })
}

/// Logs only (to stderr), for the short-lived commands (`migrate`, `seed`).
pub fn init_cli_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("RUST_LOG: cannot parse {filter:?}"))?;
    let subscriber = tracing_subscriber::registry()
        .with(logs::layer(format, LogOutput::Stderr).with_filter(filter));
    logs::install_global(subscriber)
}

/// The tracer provider of `tracing`'s spans, and where the spans of our own
/// ([`own_spans`]) go: the same export, under the same scope as the tracer's.
fn build_tracer_provider(
    settings: &TelemetrySettings,
) -> anyhow::Result<(SdkTracerProvider, own_spans::OwnSpanExport)> {
    let endpoint = settings.otlp_endpoint.trim_end_matches('/');
    let batches = settings.span_batches;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let scope = InstrumentationScope::builder(OWN_TARGET).build();
    let (builder, own_span_export) = match settings.otlp_protocol {
        OtlpProtocol::Grpc => {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(settings.otlp_timeout)
                .build()
                .context("building the OTLP span exporter")?;
            // Given here rather than by the provider: the processor is shared (below).
            exporter.set_resource(&resource);
            let config = BatchConfigBuilder::default()
                .with_max_queue_size(batches.max_queue)
                .with_max_export_batch_size(batches.max_batch)
                .with_scheduled_delay(batches.delay)
                .build();
            let processor = Arc::new(
                BatchSpanProcessor::builder(ReportFailuresOnce::new(exporter, endpoint))
                    .with_batch_config(config)
                    .build(),
            );
            (
                SdkTracerProvider::builder()
                    .with_span_processor(SharedProcessor(Arc::clone(&processor))),
                own_spans::OwnSpanExport::sdk(processor, scope),
            )
        }
        // Given in code, the endpoint is used as-is: add the signal path ourselves.
        OtlpProtocol::HttpProtobuf => {
            let exporter = OtlpHttpExporter::new(format!("{endpoint}/v1/traces"), settings)?;
            let processor = EncodingSpanProcessor::new(exporter, endpoint, batches);
            let queue = processor.queue(scope);
            (
                SdkTracerProvider::builder().with_span_processor(processor),
                own_spans::OwnSpanExport::queue(queue),
            )
        }
    };
    let provider = builder
        .with_sampler(sampler(&settings.sampler))
        .with_resource(resource)
        .build();
    Ok((provider, own_span_export))
}

fn sampler(choice: &TraceSampler) -> Sampler {
    match *choice {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedTraceIdRatio(ratio) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

/// The SDK's batch processor, shared by the tracer provider and the spans of our own.
#[derive(Debug)]
struct SharedProcessor(Arc<BatchSpanProcessor>);

impl SpanProcessor for SharedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    /// Nothing to do: the exporter was given the resource when it was built.
    fn set_resource(&mut self, _resource: &opentelemetry_sdk::Resource) {}
}

/// The gRPC exporter under the SDK's batch processor, its failures reported once.
#[derive(Debug)]
struct ReportFailuresOnce<E> {
    inner: E,
    failures: ExportFailures,
}

impl<E> ReportFailuresOnce<E> {
    fn new(inner: E, endpoint: &str) -> Self {
        Self {
            inner,
            failures: ExportFailures::new(endpoint),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportFailuresOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.failures.after_export(&result, spans);
        // The failure is handled here; the SDK must not log it again per batch.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
