//! Logs, traces and metrics: the standard OpenTelemetry variables and our own few.

use secrecy::SecretString;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpCompression {
    None,
    Gzip,
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
    /// How long one export may take, its retries included (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
    /// else `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds): a collector that accepts and
    /// never answers holds the exporting thread (never a request) this long per batch.
    pub otlp_timeout: std::time::Duration,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values percent-decoded) —
    /// an authorization token for a collector behind a proxy, say. Values are secrets.
    pub otlp_headers: Vec<(String, SecretString)>,
    /// `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`, else `OTEL_EXPORTER_OTLP_COMPRESSION`.
    pub otlp_compression: OtlpCompression,
    pub sampler: TraceSampler,
    pub span_batches: SpanBatchSettings,
    /// `false` when `METRICS_ENABLED=false`: no recorder, `/metrics` answers 404.
    pub metrics_enabled: bool,
}

/// How finished spans wait for export: the standard `OTEL_BSP_*` variables, with the
/// specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanBatchSettings {
    /// `OTEL_BSP_MAX_QUEUE_SIZE` (2048): spans waiting beyond it are dropped.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512): this many waiting spans are sent at once,
    /// without waiting for the delay.
    pub max_batch: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY` (5000 ms): the longest a span waits for export.
    pub delay: std::time::Duration,
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
    let otlp_timeout = r.millis(traces_or_all(r, "TIMEOUT"), 5000);
    let otlp_headers = read_headers(r, traces_or_all(r, "HEADERS"));
    let span_batches = read_span_batches(r);
    let compression = traces_or_all(r, "COMPRESSION");
    let otlp_compression = match r
        .string(compression, "none")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "none" | "" => OtlpCompression::None,
        "gzip" => OtlpCompression::Gzip,
        other => {
            r.problem(format!(
                "{compression}: expected gzip or none, got {other:?}"
            ));
            OtlpCompression::None
        }
    };

    TelemetrySettings {
        log_format,
        log_filter: r.string("RUST_LOG", DEFAULT_LOG_FILTER),
        service_name: r.string("OTEL_SERVICE_NAME", default_service_name),
        traces_enabled: !r.bool("OTEL_SDK_DISABLED", false),
        otlp_endpoint,
        otlp_protocol,
        otlp_timeout,
        otlp_headers,
        otlp_compression,
        sampler,
        span_batches,
        metrics_enabled: r.bool("METRICS_ENABLED", true),
    }
}

fn read_span_batches(r: &mut Reader) -> SpanBatchSettings {
    let max_queue = r.parse(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        2048usize,
        "a positive whole number",
    );
    let max_batch = r.parse(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        512usize,
        "a positive whole number",
    );
    if max_queue == 0 || max_batch == 0 {
        r.problem(
            "OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must be at least 1"
                .to_string(),
        );
    }
    SpanBatchSettings {
        max_queue,
        // The specification: a batch is never larger than the queue.
        max_batch: max_batch.min(max_queue),
        delay: r.millis("OTEL_BSP_SCHEDULE_DELAY", 5000),
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_<setting>` when it is set (the signal's own variable wins),
/// else `OTEL_EXPORTER_OTLP_<setting>`.
fn traces_or_all(r: &Reader, setting: &str) -> &'static str {
    let (traces, all) = match setting {
        "TIMEOUT" => (
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        "HEADERS" => (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        _ => (
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ),
    };
    if r.raw(traces).is_some() { traces } else { all }
}

/// `key=value,key2=value2` (the OpenTelemetry specification's format, values
/// percent-decoded); a pair without `=` or with an empty key is a problem of `variable`.
fn read_headers(r: &mut Reader, variable: &str) -> Vec<(String, SecretString)> {
    let Some(raw) = r.raw(variable) else {
        return Vec::new();
    };
    let mut headers = Vec::new();
    for pair in raw
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let parsed = pair.split_once('=').and_then(|(key, value)| {
            let key = key.trim();
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .ok()?;
            (!key.is_empty()).then(|| (key.to_string(), SecretString::from(value.into_owned())))
        });
        match parsed {
            Some(header) => headers.push(header),
            None => r.problem(format!(
                "{variable}: expected key=value pairs separated by commas (values \
                 percent-encoded), got {:?}",
                pair.split('=').next().unwrap_or_default()
            )),
        }
    }
    headers
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<TelemetrySettings, super::super::ConfigError> {
        TelemetrySettings::from_source(&pairs, "test")
    }

    #[test]
    fn the_export_follows_the_standard_variables_the_traces_ones_first() {
        let defaults = settings(&[]).expect("defaults");
        assert_eq!(defaults.otlp_timeout, std::time::Duration::from_secs(5));
        assert!(defaults.otlp_headers.is_empty());
        assert_eq!(defaults.otlp_compression, OtlpCompression::None);

        let set = settings(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "api-key=x%2Cy%3Dz , tenant = shop",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "GZIP"),
        ])
        .expect("valid");
        assert_eq!(set.otlp_timeout, std::time::Duration::from_millis(2500));
        let headers: Vec<(&str, &str)> = set
            .otlp_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(headers, [("api-key", "x,y=z"), ("tenant", "shop")]);
        assert_eq!(set.otlp_compression, OtlpCompression::Gzip);
    }

    #[test]
    fn bad_export_settings_are_named_and_a_header_value_is_never_shown() {
        let error = settings(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20x,oops",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ])
        .expect_err("three problems");
        let message = error.to_string();
        assert!(message.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{message}");
        assert!(message.contains("\"oops\""), "{message}");
        assert!(
            message.contains("OTEL_EXPORTER_OTLP_COMPRESSION"),
            "{message}"
        );
        assert!(message.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{message}");
        assert!(!message.contains("Bearer"), "{message}");
        // A settings dump (a debug log) shows the header's name, not its value.
        let set =
            settings(&[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x")]).expect("valid");
        assert!(!format!("{set:?}").contains("Bearer"));
    }
}
