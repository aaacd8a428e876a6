//! From a point on a chart to its trace, end to end: the real binary exports its spans
//! to a real OTLP receiver, a real Prometheus (with the compose file's exemplar storage)
//! scrapes it, and the exemplars Prometheus stores lead to spans the receiver has —
//! for sampled requests only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_json, poll_until, traced_app};
use crate::otlp::OtlpReceiver;
use crate::prometheus::Prometheus;
use crate::require::{PROMETHEUS_PACKAGE, tool_available};
use crate::stack::EXEMPLAR_HISTOGRAMS;

const BLOCKING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ASYNC_TRACE: &str = "5c1e7d0f3b9a4e8d9f2a6b7c8d9e0f1a";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// `(trace_id, span_id)` of every exemplar Prometheus stored for `selector` in the last
/// hour.
async fn stored_exemplars(prometheus: &Prometheus, selector: &str) -> Vec<(String, String)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", selector)
        .append_pair("start", &(now - 3600).to_string())
        .append_pair("end", &(now + 60).to_string())
        .finish();
    let answer: Value = reqwest::get(format!("{}/api/v1/query_exemplars?{query}", prometheus.url))
        .await
        .expect("query_exemplars")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
        .map(|exemplar| {
            let label = |key: &str| {
                exemplar["labels"][key]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            (label("trace_id"), label("span_id"))
        })
        .collect()
}

/// Waits (≤ 30 s of 1 s scrapes) until Prometheus has an exemplar of `trace_id` for
/// `selector`, and returns its span id.
async fn exemplar_span(prometheus: &Prometheus, selector: &str, trace_id: &str) -> String {
    let found = poll_until(Duration::from_secs(30), || async {
        let found = stored_exemplars(prometheus, selector).await;
        found
            .into_iter()
            .find(|(trace, _)| trace == trace_id)
            .map(|(_, span_id)| span_id)
    })
    .await;
    if let Some(span_id) = found {
        return span_id;
    }
    panic!(
        "no exemplar of trace {trace_id} on {selector}: {:?}",
        stored_exemplars(prometheus, selector).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exemplar_in_prometheus_leads_to_its_trace_and_never_to_an_unsampled_one() {
    if !tool_available("prometheus", PROMETHEUS_PACKAGE) {
        return;
    }
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[("PAYMENT_DELAY_MS", "100")]).await;
    let prometheus = Prometheus::start(app.address.trim_start_matches("http://")).await;
    let admin = app.admin_token().await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    expect_json(
        app.checkout_in_trace(&alice, BLOCKING_TRACE).await,
        StatusCode::CREATED,
    )
    .await;
    let unsampled = app
        .reviews_in_unsampled_trace(kettle, UNSAMPLED_TRACE)
        .await;
    assert_eq!(unsampled.status(), StatusCode::OK);
    // The asynchronous checkout: its time to confirmed ends in a worker, in the same trace.
    app.set_checkout_mode(&admin, "async").await;
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    expect_json(
        app.checkout_in_trace(&alice, ASYNC_TRACE).await,
        StatusCode::ACCEPTED,
    )
    .await;

    let blocking = receiver.wait_for_trace(BLOCKING_TRACE, "checkout").await;
    let asynchronous = receiver
        .wait_for_trace(ASYNC_TRACE, "outbox.charge_order")
        .await;
    let span_id = |spans: &[crate::otlp::ReceivedSpan], name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("span {name}"))
            .span_id
            .clone()
    };

    // Each chart's dot opens the span that took that long.
    let cases = [
        (
            r#"http_server_request_duration_seconds_bucket{route="/api/orders/checkout",status="201"}"#,
            BLOCKING_TRACE,
            span_id(&blocking, "POST /api/orders/checkout"),
        ),
        (
            r#"checkout_duration_seconds_bucket{mode="blocking"}"#,
            BLOCKING_TRACE,
            span_id(&blocking, "checkout"),
        ),
        (
            r#"checkout_duration_seconds_bucket{mode="async"}"#,
            ASYNC_TRACE,
            span_id(&asynchronous, "checkout"),
        ),
        (
            r#"order_time_to_confirmed_seconds_bucket{mode="async"}"#,
            ASYNC_TRACE,
            span_id(&asynchronous, "outbox.charge_order"),
        ),
    ];
    for (selector, trace_id, expected_span) in cases {
        let found = exemplar_span(&prometheus, selector, trace_id).await;
        assert_eq!(found, expected_span, "{selector}");
        println!("{selector}: exemplar {trace_id}/{found}, a span the collector has");
    }

    // Nothing leads to a trace that was never exported.
    for histogram in EXEMPLAR_HISTOGRAMS {
        let all = stored_exemplars(&prometheus, &format!("{histogram}_bucket")).await;
        assert!(!all.is_empty(), "{histogram} has exemplars");
        for (trace_id, span_id) in &all {
            assert_ne!(trace_id, UNSAMPLED_TRACE, "{histogram}");
            assert!(
                receiver
                    .spans()
                    .iter()
                    .any(|s| &s.trace_id == trace_id && &s.span_id == span_id),
                "{histogram}: exemplar {trace_id}/{span_id} leads nowhere"
            );
        }
    }
    // Prometheus read OpenMetrics (only it carries a unit), and the scrape stays healthy.
    let metadata: Value = reqwest::get(format!(
        "{}/api/v1/metadata?metric=checkout_duration_seconds",
        prometheus.url
    ))
    .await
    .expect("metadata")
    .json()
    .await
    .expect("JSON");
    assert_eq!(
        metadata["data"]["checkout_duration_seconds"][0]["unit"], "seconds",
        "{metadata}"
    );
    let up = prometheus.query(r#"up{job="ecommerce-monolith"}"#).await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}
