//! The three latency histograms that lead from a point on a chart to its trace:
//! `http_server_request_duration_seconds`, `checkout_duration_seconds` and
//! `order_time_to_confirmed_seconds`. Each of their buckets carries an OpenMetrics
//! exemplar: the trace and span id of the latest *sampled* request that fell into it.
//!
//! Why a second metrics library: metrics-exporter-prometheus renders every other series
//! but has no exemplars, so these three live in a `prometheus-client` registry instead
//! and are appended to the same `/metrics` body (see [`super::metrics::Exposition`]).
//! The `metrics` facade never records them, so each series is exposed exactly once.

use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::sync::{OnceLock, PoisonError, RwLock};

use axum::extract::MatchedPath;
use axum::http::{Method, StatusCode};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::CheckoutMode;

/// Histogram buckets from 5 ms to 10 s, dense around the 1 s payment, the 2 s e-mail
/// and the 3–5 s checkout, so each lands in a bucket of its own. The facade's other
/// duration histograms (`super::metrics`) use them too.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.25, 2.5, 3.0, 3.25, 3.5,
    4.0, 5.0, 7.5, 10.0,
];

/// Set once when metrics are switched on; until then (and in tests that build the app
/// in-process) recording is a no-op, like the `metrics` facade without a recorder.
static LATENCY: OnceLock<LatencyHistograms> = OnceLock::new();

/// Built for every request, so made of what the request already holds (the method, the
/// route's shared string, the status number): no text is copied to count a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: MethodLabel,
    route: RouteLabel,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct MethodLabel(Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(self.0.as_str())
    }
}

/// The route template; requests that matched no route share one value, as raw paths
/// would make the label's cardinality unbounded.
#[derive(Clone, Debug)]
struct RouteLabel(Option<MatchedPath>);

impl RouteLabel {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl Hash for RouteLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckoutLabels {
    mode: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

/// 63 characters of names and values: well inside OpenMetrics' limit of 128. Kept as
/// the ids' bytes and written out as hex only when a scrape renders them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceExemplar {
    trace_id: Hex<TraceId>,
    span_id: Hex<SpanId>,
}

/// An id written out by its `Display` (lower-case hex for trace and span ids).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Hex<T>(T);

impl<T: fmt::Display> EncodeLabelValue for Hex<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        write!(encoder, "{}", self.0)
    }
}

type Latency = HistogramWithExemplars<TraceExemplar>;

fn new_latency() -> Latency {
    HistogramWithExemplars::new(DURATION_BUCKETS.iter().copied())
}

pub struct LatencyHistograms {
    registry: Registry,
    http: Family<HttpLabels, Latency>,
    /// The `http` family's histograms, found by a cheaper hash than the family's own
    /// (SipHash over the route's text: ~700 instructions of every request).
    http_by_labels: RwLock<FxHashMap<HttpLabels, Latency>>,
    checkout: Family<CheckoutLabels, Latency>,
    time_to_confirmed: Family<ModeLabels, Latency>,
}

impl LatencyHistograms {
    fn new() -> Self {
        let http = Family::new_with_constructor(new_latency as fn() -> Latency);
        let checkout = Family::new_with_constructor(new_latency as fn() -> Latency);
        let time_to_confirmed = Family::new_with_constructor(new_latency as fn() -> Latency);
        let mut registry = Registry::default();
        // The name goes without its unit (the registry appends `_seconds`), the help
        // without its final period (the registry appends one).
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP requests by method, route template and status code",
            Unit::Seconds,
            http.clone(),
        );
        registry.register_with_unit(
            "checkout_duration",
            "What the customer waits for: the checkout request, by mode and outcome (accepted: the asynchronous checkout's 202)",
            Unit::Seconds,
            checkout.clone(),
        );
        registry.register_with_unit(
            "order_time_to_confirmed",
            "From the checkout request to the order confirmed, by mode: when the work is done",
            Unit::Seconds,
            time_to_confirmed.clone(),
        );
        LatencyHistograms {
            registry,
            http,
            http_by_labels: RwLock::default(),
            checkout,
            time_to_confirmed,
        }
    }

    /// Observes one request in the `http` family's histogram of `labels`.
    fn observe_http(&self, labels: HttpLabels, seconds: f64, exemplar: Option<TraceExemplar>) {
        let known = self
            .http_by_labels
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(histogram) = known.get(&labels) {
            return histogram.observe(seconds, exemplar, None);
        }
        drop(known);
        let histogram = self.http.get_or_create(&labels).clone();
        histogram.observe(seconds, exemplar, None);
        self.http_by_labels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(labels, histogram);
    }

    /// OpenMetrics families with their exemplars, without the closing `# EOF`.
    pub fn encode_openmetrics(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }

    /// The classic text format (0.0.4), which cannot carry exemplars.
    pub fn encode_classic(&self, out: &mut String) -> fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }
}

/// Switches recording on; returns the histograms for `/metrics` to render.
pub fn install() -> &'static LatencyHistograms {
    LATENCY.get_or_init(LatencyHistograms::new)
}

/// One request served; `span` is its server span's context.
pub fn record_http_request(
    span: &SpanContext,
    method: Method,
    route: Option<MatchedPath>,
    status: StatusCode,
    seconds: f64,
) {
    if let Some(latency) = LATENCY.get() {
        let labels = HttpLabels {
            method: MethodLabel(method),
            route: RouteLabel(route),
            status: status.as_u16(),
        };
        latency.observe_http(labels, seconds, exemplar_from(span));
    }
}

/// One checkout answered; `span` is its `checkout` span.
pub fn record_checkout(
    span: &tracing::Span,
    mode: CheckoutMode,
    outcome: &'static str,
    seconds: f64,
) {
    if let Some(latency) = LATENCY.get() {
        let labels = CheckoutLabels {
            mode: mode.as_str(),
            outcome,
        };
        latency
            .checkout
            .get_or_create(&labels)
            .observe(seconds, exemplar_of(span), None);
    }
}

/// One order confirmed; `span` is the span that confirmed it (the checkout's, or the
/// charge job's, which belongs to the checkout's trace).
pub fn record_time_to_confirmed(span: &tracing::Span, mode: CheckoutMode, seconds: f64) {
    if let Some(latency) = LATENCY.get() {
        let labels = ModeLabels {
            mode: mode.as_str(),
        };
        latency
            .time_to_confirmed
            .get_or_create(&labels)
            .observe(seconds, exemplar_of(span), None);
    }
}

/// The ids of `span` if its trace is sampled (exported): an exemplar must lead to a
/// trace that exists. Spans switched off or dropped by the sampler give none.
fn exemplar_of(span: &tracing::Span) -> Option<TraceExemplar> {
    exemplar_from(span.context().span().span_context())
}

fn exemplar_from(span: &SpanContext) -> Option<TraceExemplar> {
    (span.is_valid() && span.is_sampled()).then(|| TraceExemplar {
        trace_id: Hex(span.trace_id()),
        span_id: Hex(span.span_id()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> LatencyHistograms {
        let latency = LatencyHistograms::new();
        let sampled = TraceExemplar {
            trace_id: Hex(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")),
            span_id: Hex(SpanId::from_hex("00f067aa0ba902b7").expect("hex")),
        };
        latency
            .checkout
            .get_or_create(&CheckoutLabels {
                mode: "blocking",
                outcome: "success",
            })
            .observe(3.1, Some(sampled), None);
        latency
            .checkout
            .get_or_create(&CheckoutLabels {
                mode: "blocking",
                outcome: "success",
            })
            .observe(0.02, None, None);
        latency
    }

    #[test]
    fn openmetrics_carries_the_exemplar_on_its_bucket_only() {
        let mut text = String::new();
        observed().encode_openmetrics(&mut text).expect("encode");
        let with_exemplar: Vec<&str> = text.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(with_exemplar.len(), 1, "{text}");
        assert!(with_exemplar[0].starts_with("checkout_duration_seconds_bucket{le=\"3.25\""));
        assert!(with_exemplar[0].ends_with(
            "# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 3.1"
        ));
        assert!(text.contains("# UNIT checkout_duration_seconds seconds"));
        assert!(!text.contains("seconds_seconds") && !text.contains(".."));
        assert!(!text.contains("# EOF"), "the caller closes the body");
    }

    #[test]
    fn the_classic_format_has_no_exemplars() {
        let mut text = String::new();
        observed().encode_classic(&mut text).expect("encode");
        assert!(!text.contains("trace_id"), "{text}");
        assert!(text.contains("# TYPE checkout_duration_seconds histogram"));
        assert!(
            text.contains(
                "checkout_duration_seconds_bucket{mode=\"blocking\",outcome=\"success\",le=\"3.25\"} 2"
            ),
            "{text}"
        );
    }
}
