//! `/metrics` of the real binary after real traffic: the series the dashboards and alerts
//! are built on exist, with sensible values. (`promtool` lints the exposition in the
//! `external` test target.)

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{CHECKOUT_STEPS, Ledger, expect_json, sample, spawn_process, traced_app};
use crate::otlp::OtlpReceiver;

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_shows_up_in_every_series() {
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "150"), ("EMAIL_DELAY_MS", "300")]).await;
    let (alice, kettle) = app.alice_with_kettles(2).await;
    expect_json(app.checkout(&alice).await, StatusCode::CREATED).await;
    assert_eq!(app.checkout(&alice).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get(&format!("/api/products/{kettle}"), None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/products/987654", None).await.status(),
        StatusCode::NOT_FOUND
    );

    let text = app.metrics().await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };

    // Outcomes, counted from the start (zero until they happen).
    assert_eq!(value("checkouts_total", &[("outcome", "success")]), 1.0);
    assert_eq!(value("checkouts_total", &[("outcome", "empty_cart")]), 1.0);
    assert_eq!(
        value("checkouts_total", &[("outcome", "payment_declined")]),
        0.0
    );
    assert_eq!(value("payments_orphaned_total", &[]), 0.0);
    assert_eq!(value("orders_revenue_cents_total", &[]), 3998.0);
    assert_eq!(value("checkouts_in_flight", &[]), 0.0);

    // The whole checkout and each step.
    assert_eq!(
        value("checkout_duration_seconds_count", &[("outcome", "success")]),
        1.0
    );
    assert!(value("checkout_duration_seconds_sum", &[("outcome", "success")]) >= 0.45);
    for step in CHECKOUT_STEPS {
        assert!(
            value("checkout_step_duration_seconds_count", &[("step", step)]) >= 1.0,
            "{step}"
        );
    }
    let payment = value(
        "checkout_step_duration_seconds_sum",
        &[("step", "process_payment")],
    );
    assert!(
        (0.15..1.15).contains(&payment),
        "process_payment took {payment}"
    );
    // The 150 ms payment lands above the 0.1 s bucket; the 300 ms e-mail above 0.25 s.
    let bucket = |step: &str, le: &str| {
        value(
            "checkout_step_duration_seconds_bucket",
            &[("step", step), ("le", le)],
        )
    };
    assert_eq!(bucket("process_payment", "0.1"), 0.0);
    assert_eq!(bucket("process_payment", "1"), 1.0);
    assert_eq!(bucket("send_email", "0.25"), 0.0);
    assert_eq!(bucket("send_email", "2"), 1.0);
    let email = value(
        "checkout_step_duration_seconds_sum",
        &[("step", "send_email")],
    );
    assert!((0.3..1.3).contains(&email), "send_email took {email}");
    assert_eq!(
        value(
            "payment_gateway_duration_seconds_count",
            &[("outcome", "approved")]
        ),
        1.0
    );
    assert_eq!(
        value("email_send_duration_seconds_count", &[("outcome", "sent")]),
        1.0
    );
    assert_eq!(
        value("checkout_inventory_lock_wait_seconds_count", &[]),
        1.0
    );

    // HTTP by route template, never by raw path.
    assert_eq!(
        value(
            "http_server_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("route", "/api/products/{id}"),
                ("status", "404")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "http_server_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/api/orders/checkout"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(!text.contains("route=\"/api/products/987654\""));
    assert!(text.contains("le=\"0.005\"") && text.contains("le=\"10\""));

    // The pool, the fault settings, the process.
    assert_eq!(value("db_pool_connections_max", &[]), 10.0);
    let size = value("db_pool_connections_size", &[]);
    assert!(size >= 1.0);
    assert_eq!(
        value("db_pool_connections_idle", &[]) + value("db_pool_connections_in_use", &[]),
        size,
        "every open connection is idle or in use"
    );
    assert!(value("db_pool_acquire_duration_seconds_count", &[]) >= 5.0);
    assert_eq!(value("fault_payment_delay_seconds", &[]), 0.15);
    assert_eq!(value("fault_email_delay_seconds", &[]), 0.3);
    assert_eq!(value("fault_payment_success_ratio", &[]), 1.0);
    assert_eq!(value("fault_email_outage", &[]), 0.0);
    assert!(value("process_resident_memory_bytes", &[]) > 1_000_000.0);
    // Exposed (`value` fails on a missing series); a fresh process may not have used a
    // whole clock tick of CPU yet, so its value says nothing here.
    value("process_cpu_seconds_total", &[]);
    assert_eq!(
        value(
            "ecommerce_monolith_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    app.assert_ledger_counted(Ledger::paid(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_outage_counts_an_orphaned_payment_and_moves_the_fault_gauge() {
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 5).await;
    expect_json(
        app.add_to_cart(&alice, kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    expect_json(
        app.put(
            "/api/admin/faults",
            Some(&admin),
            &json!({"email_outage": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.checkout(&alice).await.status(), StatusCode::BAD_GATEWAY);

    let text = app.metrics().await;
    assert_eq!(sample(&text, "fault_email_outage", &[]), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "payments_orphaned_total",
            &[("reason", "email_failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "payments_orphaned_amount_cents_total",
            &[("reason", "email_failed")]
        ),
        Some(1999.0)
    );
    assert_eq!(
        sample(&text, "checkouts_total", &[("outcome", "email_failed")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "email_send_duration_seconds_count",
            &[("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "orders_revenue_cents_total", &[]), Some(0.0));
    app.assert_ledger_counted(Ledger {
        approved: 1,
        with_order: 0,
        refunded: 0,
        without_order: 1,
    })
    .await;
}

/// What Prometheus sends (2.42; 3.x sends the same types in another order).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const SAMPLED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// `(sample line before the exemplar, trace_id, span_id)` of every exemplar.
fn exemplars(body: &str) -> Vec<(String, String, String)> {
    body.lines()
        .filter_map(|line| {
            let (sample, exemplar) = line.split_once(" # {")?;
            let label = |key: &str| {
                exemplar
                    .split_once(&format!("{key}=\""))
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(value, _)| value.to_string())
                    .unwrap_or_default()
            };
            Some((sample.to_string(), label("trace_id"), label("span_id")))
        })
        .collect()
}

/// The metric family of every `# TYPE` line, checked to appear once.
fn families_once(body: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            assert!(families.insert(name.clone()), "{name} is exposed twice");
        }
    }
    families
}

/// The series (name and labels, `le` normalised) of every sample line, checked to
/// appear once: nothing is counted twice on any panel.
fn series_once(body: &str) -> BTreeSet<String> {
    let mut series = BTreeSet::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.split(" # {").next().unwrap_or(line);
        let (name_and_labels, _) = sample.rsplit_once(' ').expect("a value");
        let (name, labels) = name_and_labels
            .split_once('{')
            .map_or((name_and_labels, ""), |(n, l)| (n, l.trim_end_matches('}')));
        let mut labels: Vec<String> = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| match l.strip_prefix("le=\"") {
                Some(bound) => {
                    let bound = bound.trim_end_matches('"');
                    let bound = bound
                        .parse::<f64>()
                        .map_or(bound.to_string(), |b| b.to_string());
                    format!("le=\"{bound}\"")
                }
                None => l.to_string(),
            })
            .collect();
        labels.sort();
        let key = format!("{name}{{{}}}", labels.join(","));
        assert!(series.insert(key.clone()), "{key} is exposed twice");
    }
    series
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_gets_openmetrics_with_exemplars_of_sampled_requests_only() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&receiver, &[]).await;
    let (alice, kettle) = app.alice_with_kettles(1).await;
    let checkout = app.checkout_in_trace(&alice, SAMPLED_TRACE).await;
    expect_json(checkout, StatusCode::CREATED).await;
    // A request the caller's sampler dropped (flags 00): no exemplar may point to it.
    let unsampled = app
        .reviews_in_unsampled_trace(kettle, UNSAMPLED_TRACE)
        .await;
    assert_eq!(unsampled.status(), StatusCode::OK);

    // (The first scrape creates the series of `/metrics` itself.)
    app.metrics().await;
    // curl, promtool, people: the classic text, every histogram in it, no exemplars.
    let classic = app.get("/metrics", None).await;
    assert_eq!(
        classic.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = classic.text().await.expect("body");
    assert!(
        !classic.contains("trace_id"),
        "exemplars break the classic parser"
    );
    assert!(
        classic.starts_with("# The latency histograms"),
        "a person is told where the exemplars are"
    );

    // Prometheus: OpenMetrics, well formed, the same series, and the exemplars.
    let openmetrics = app
        .request(Method::GET, "/metrics", None)
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        openmetrics.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(openmetrics.headers()["vary"], "accept");
    let openmetrics = openmetrics.text().await.expect("body");
    assert!(openmetrics.ends_with("\n# EOF\n"), "ends with # EOF");
    assert!(
        !openmetrics.lines().any(|l| l.trim().is_empty()),
        "a blank line fails the whole scrape"
    );
    let (in_classic, in_openmetrics) = (series_once(&classic), series_once(&openmetrics));
    assert!(
        in_classic == in_openmetrics,
        "both formats expose the same series; only in the classic text: {:?}; only in OpenMetrics: {:?}",
        in_classic.difference(&in_openmetrics).collect::<Vec<_>>(),
        in_openmetrics.difference(&in_classic).collect::<Vec<_>>()
    );
    let classic_families = families_once(&classic);
    let om_families = families_once(&openmetrics);
    assert_eq!(classic_families.len(), om_families.len());
    for histogram in [
        "http_server_request_duration_seconds",
        "checkout_duration_seconds",
        "order_time_to_confirmed_seconds",
    ] {
        assert!(classic_families.contains(histogram), "{histogram}");
        assert!(om_families.contains(histogram), "{histogram}");
    }
    assert!(
        om_families.contains("checkouts") && classic_families.contains("checkouts_total"),
        "an OpenMetrics counter family is named without _total"
    );

    let found = exemplars(&openmetrics);
    for (sample, trace_id, span_id) in &found {
        assert!(sample.contains("_bucket{"), "exemplar on {sample}");
        assert_ne!(trace_id, UNSAMPLED_TRACE, "an unsampled trace on {sample}");
        assert_eq!((trace_id.len(), span_id.len()), (32, 16), "{sample}");
    }
    assert!(
        !found.iter().any(|(sample, ..)| sample.contains("/reviews")),
        "{found:?}"
    );
    let of = |histogram: &str| -> (String, String) {
        let (_, trace_id, span_id) = found
            .iter()
            .find(|(sample, ..)| {
                sample.starts_with(histogram)
                    && (!histogram.starts_with("http") || sample.contains("/api/orders/checkout"))
            })
            .unwrap_or_else(|| panic!("no exemplar on {histogram}: {found:?}"));
        (trace_id.clone(), span_id.clone())
    };

    // Each exemplar leads to a span the collector received, in the caller's trace.
    let spans = receiver.wait_for_trace(SAMPLED_TRACE, "checkout").await;
    let span_named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("span {name}"))
            .span_id
            .clone()
    };
    let server = span_named("POST /api/orders/checkout");
    let checkout = span_named("checkout");
    assert_eq!(
        of("http_server_request_duration_seconds_bucket"),
        (SAMPLED_TRACE.to_string(), server)
    );
    assert_eq!(
        of("checkout_duration_seconds_bucket"),
        (SAMPLED_TRACE.to_string(), checkout.clone())
    );
    assert_eq!(
        of("order_time_to_confirmed_seconds_bucket"),
        (SAMPLED_TRACE.to_string(), checkout)
    );
}
