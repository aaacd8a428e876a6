//! Logs, traces and metrics: the standard OpenTelemetry variables and our own few.

use super::reader::Reader;
use super::reader::{ConfigError, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG`; only the console/JSON log output obeys it, never the exported spans.
    pub log_filter: String,
    pub service_name: String,
    /// `false` when `OTEL_SDK_DISABLED=true`: no spans are built or exported.
    pub traces_enabled: bool,
    pub otlp_endpoint: String,
    pub otlp_protocol: OtlpProtocol,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds): a collector that accepts and never
    /// answers holds the exporting thread (never a request) this long per batch.
    pub otlp_timeout: std::time::Duration,
    pub sampler: TraceSampler,
    /// `false` when `METRICS_ENABLED=false`: no recorder, `/metrics` answers 404.
    pub metrics_enabled: bool,
}

/// The OpenTelemetry SDK logs its own housekeeping at INFO; keep that out of the way.
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn,opentelemetry_sdk=warn";

/// Log format of the short-lived commands (`migrate`, `seed`).
pub const DEFAULT_LOG_FORMAT_CLI: LogFormat = LogFormat::Pretty;

/// The service name in traces, unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "ecommerce-monolith";

impl TelemetrySettings {
    /// Telemetry alone, for the tools that are not the service (`loadgen`).
    pub fn from_source(
        source: &dyn Source,
        default_service_name: &str,
    ) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let settings = read(&mut reader, default_service_name);
        reader.finish(settings)
    }
}

pub(super) fn read(r: &mut Reader, default_service_name: &str) -> TelemetrySettings {
    let log_format = match r
        .string("LOG_FORMAT", "pretty")
        .to_ascii_lowercase()
        .as_str()
    {
        "json" => LogFormat::Json,
        "pretty" | "text" => LogFormat::Pretty,
        other => {
            r.problem(format!(
                "LOG_FORMAT: expected json or pretty, got {other:?}"
            ));
            LogFormat::Pretty
        }
    };
    let otlp_protocol = match r
        .string("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .to_ascii_lowercase()
        .as_str()
    {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => {
            r.problem(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got {other:?}"
            ));
            OtlpProtocol::HttpProtobuf
        }
    };
    let default_endpoint = match otlp_protocol {
        OtlpProtocol::Grpc => "http://localhost:4317",
        OtlpProtocol::HttpProtobuf => "http://localhost:4318",
    };
    let otlp_endpoint = r.string("OTEL_EXPORTER_OTLP_ENDPOINT", default_endpoint);
    if !(otlp_endpoint.starts_with("http://") || otlp_endpoint.starts_with("https://")) {
        r.problem(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT: expected an http:// or https:// URL, got {otlp_endpoint:?}"
        ));
    }
    let sampler = read_sampler(r);
    // The specification's default is 10 s; 5 s frees the exporting thread sooner when
    // a collector hangs (spans queue meanwhile, and are dropped once the queue is full).
    let otlp_timeout = match r.raw("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
        Some(_) => r.millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 5000),
        None => r.millis("OTEL_EXPORTER_OTLP_TIMEOUT", 5000),
    };

    TelemetrySettings {
        log_format,
        log_filter: r.string("RUST_LOG", DEFAULT_LOG_FILTER),
        service_name: r.string("OTEL_SERVICE_NAME", default_service_name),
        traces_enabled: !r.bool("OTEL_SDK_DISABLED", false),
        otlp_endpoint,
        otlp_protocol,
        otlp_timeout,
        sampler,
        metrics_enabled: r.bool("METRICS_ENABLED", true),
    }
}

fn read_sampler(r: &mut Reader) -> TraceSampler {
    let name = r
        .string("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .to_ascii_lowercase();
    let mut ratio = || {
        let ratio = r.parse("OTEL_TRACES_SAMPLER_ARG", 1.0f64, "a number from 0 to 1");
        if !(0.0..=1.0).contains(&ratio) {
            r.problem(format!(
                "OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1, got {ratio}"
            ));
        }
        ratio
    };
    match name.as_str() {
        "always_on" => TraceSampler::AlwaysOn,
        "always_off" => TraceSampler::AlwaysOff,
        "traceidratio" => TraceSampler::TraceIdRatio(ratio()),
        "parentbased_always_on" => TraceSampler::ParentBasedAlwaysOn,
        "parentbased_always_off" => TraceSampler::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => TraceSampler::ParentBasedTraceIdRatio(ratio()),
        other => {
            r.problem(format!(
                "OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio; got {other:?}"
            ));
            TraceSampler::ParentBasedAlwaysOn
        }
    }
}
