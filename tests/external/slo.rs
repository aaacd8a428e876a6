//! The service-level objectives are whole: every SLO that `slo.yml` names (by its
//! `sloth_slo` label) has its error ratio for every window, its objective and budget,
//! the remaining-budget rule, both burn-rate alerts (page and ticket, each with its two
//! window pairs), a runbook section, a row on the SLOs dashboard and unit tests — so an
//! SLO added in one place and forgotten in another fails here. Structure only: what the
//! rules compute is proven by promtool (`slo.test.yml`) and against a real Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ecommerce_lab::loadgen::slo::Slo;
use serde_json::Value;
use strum::VariantArray;
use yaml_serde::Value as Yaml;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, run_tool, spawn_process};
use crate::prometheus::Prometheus;
use crate::require::tool_available;
use crate::stack::{read_yaml, repo_file};

/// The windows of the error ratio: the workbook's six, Sloth's 3d, and the 30-day
/// period the budget is counted over.
const WINDOWS: [&str; 8] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"];
const PER_SLO_RULES: [&str; 7] = [
    "slo:objective:ratio",
    "slo:error_budget:ratio",
    "slo:time_period:days",
    "slo:current_burn_rate:ratio",
    "slo:period_burn_rate:ratio",
    "slo:period_error_budget_remaining:ratio",
    "sloth_slo_info",
];
/// A window pair of a burn-rate alert: the short window, the long one, the burn rate.
type WindowPair = (&'static str, &'static str, &'static str);

/// The page and the ticket: their severity and their two window pairs.
const ALERTS: [(&str, [WindowPair; 2]); 2] = [
    ("page", [("5m", "1h", "14.4"), ("30m", "6h", "6")]),
    ("ticket", [("2h", "1d", "3"), ("6h", "3d", "1")]),
];

fn rules() -> Vec<Yaml> {
    read_yaml("slo.yml")["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

fn label<'a>(rule: &'a Yaml, name: &str) -> Option<&'a str> {
    rule["labels"][name].as_str()
}

/// The number in `vector(<number>)`.
fn constant(rule: &Yaml) -> f64 {
    let expr = rule["expr"].as_str().unwrap_or_default().trim();
    expr.strip_prefix("vector(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|number| number.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a constant: {expr}"))
}

#[test]
fn every_slo_has_every_window_its_budget_and_both_alerts() {
    let rules = rules();
    let slos: BTreeSet<&str> = rules.iter().filter_map(|r| label(r, "sloth_slo")).collect();
    assert!(slos.len() >= 4, "the four objectives: {slos:?}");
    let runbook = std::fs::read_to_string(repo_file("docs/runbooks/slo.md")).expect("runbook");
    let dashboard =
        std::fs::read_to_string(repo_file("grafana/dashboards/slos.json")).expect("dashboard");
    let unit_tests = std::fs::read_to_string(repo_file("slo.test.yml")).expect("slo.test.yml");

    for slo in slos {
        let id = format!("ecommerce-monolith-{slo}");
        let recorded: BTreeMap<String, Vec<&Yaml>> = rules
            .iter()
            .filter(|r| label(r, "sloth_slo") == Some(slo))
            .fold(BTreeMap::new(), |mut by_name, rule| {
                let name = rule["record"].as_str().unwrap_or("alert").to_string();
                by_name.entry(name).or_default().push(rule);
                by_name
            });
        for rule in recorded.values().flatten() {
            assert_eq!(
                label(rule, "sloth_service"),
                Some("ecommerce-monolith"),
                "{slo}"
            );
            assert_eq!(label(rule, "sloth_id"), Some(id.as_str()), "{slo}");
        }
        for window in WINDOWS {
            let name = format!("slo:sli_error:ratio_rate{window}");
            let ratio = recorded.get(&name).map(Vec::as_slice).unwrap_or_default();
            assert_eq!(ratio.len(), 1, "{slo}: one {name}");
            assert_eq!(
                label(ratio[0], "sloth_window"),
                Some(window),
                "{slo}: {name}"
            );
            let expr = ratio[0]["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains(&format!("[{window}]")),
                "{slo}: {name} over {window}"
            );
            if window != "30d" {
                assert!(
                    expr.contains("or vector(0)") && expr.contains("clamp_min("),
                    "{slo}: {name} is 0, never NaN, without traffic"
                );
            }
        }
        for name in PER_SLO_RULES {
            let found = recorded.get(name).map(Vec::len).unwrap_or_default();
            assert_eq!(found, 1, "{slo}: one {name}");
        }
        let objective = constant(recorded["slo:objective:ratio"][0]);
        let budget = constant(recorded["slo:error_budget:ratio"][0]);
        assert!(
            (objective + budget - 1.0).abs() < 1e-9,
            "{slo}: objective + budget = 1"
        );

        let alerts: Vec<&Yaml> = rules
            .iter()
            .filter(|r| r.get("alert").is_some() && label(r, "slo") == Some(slo))
            .collect();
        assert_eq!(alerts.len(), 2, "{slo}: a page and a ticket");
        for (severity, pairs) in ALERTS {
            let alert = alerts
                .iter()
                .find(|a| label(a, "severity") == Some(severity))
                .unwrap_or_else(|| panic!("{slo}: no {severity} alert"));
            let expr = alert["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains(&format!("sloth_id=\"{id}\"")),
                "{slo}: {severity} on its SLO"
            );
            for (short, long, rate) in pairs {
                for window in [short, long] {
                    assert!(
                        expr.contains(&format!("slo:sli_error:ratio_rate{window}{{")),
                        "{slo}: the {severity} alert looks at the {window} window"
                    );
                }
                assert!(
                    expr.contains(&format!("({rate} * {budget})")),
                    "{slo}: the {severity} alert burns at {rate}x the budget {budget}"
                );
            }
            let runbook_url = alert["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(runbook_url, format!("docs/runbooks/slo.md#{slo}"), "{slo}");
            assert!(
                !alert["annotations"]["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{slo}: {severity} summary"
            );
        }
        let heading = format!("## {}", slo.replace('-', " "));
        assert!(
            runbook.to_lowercase().contains(&heading),
            "{slo}: a runbook section `{heading}`"
        );
        assert!(dashboard.contains(&id), "{slo}: on the SLOs dashboard");
        assert!(
            unit_tests.contains(slo),
            "{slo}: promtool cases in slo.test.yml"
        );
    }
}

/// The load generator judges runs against the same four SLOs: same names, objectives,
/// and thresholds (the `le` of each 5m ratio) as `slo.yml`.
#[test]
fn the_load_generator_judges_the_slos_of_slo_yml() {
    let rules = rules();
    let in_rules: BTreeSet<&str> = rules.iter().filter_map(|r| label(r, "sloth_slo")).collect();
    let in_loadgen: BTreeSet<&str> = Slo::VARIANTS.iter().map(|s| s.name()).collect();
    assert_eq!(in_rules, in_loadgen);
    for slo in Slo::VARIANTS {
        let of_slo = |record: &str| {
            rules
                .iter()
                .find(|r| {
                    label(r, "sloth_slo") == Some(slo.name())
                        && r["record"].as_str() == Some(record)
                })
                .unwrap_or_else(|| panic!("{}: {record}", slo.name()))
        };
        let objective = constant(of_slo("slo:objective:ratio"));
        assert!((objective - slo.objective()).abs() < 1e-9, "{}", slo.name());
        let ratio = of_slo("slo:sli_error:ratio_rate5m")["expr"]
            .as_str()
            .unwrap_or_default();
        match slo.threshold() {
            Some(limit) => {
                let seconds = limit.as_secs_f64();
                assert!(
                    ratio.contains(&format!("le=~\"{seconds}|")),
                    "{}: the rules count events within {seconds} s: {ratio}",
                    slo.name()
                );
            }
            None => assert!(!ratio.contains("le=~"), "{}", slo.name()),
        }
    }
}

/// A minute of shoppers who all check out, in `mode`, with 600 ms of waiting in each
/// checkout and a pool of two connections; then what the load generator and
/// Prometheus's recording rules each say: (the loadgen's verdicts by SLO, Prometheus's
/// 5m error ratio by SLO).
async fn a_minute_of_checkouts(mode: &str) -> (BTreeMap<String, Value>, BTreeMap<String, f64>) {
    let app = spawn_process(&[
        ("CHECKOUT_MODE", mode),
        ("PAYMENT_DELAY_MS", "300"),
        ("EMAIL_DELAY_MS", "300"),
        ("DB_MAX_CONNECTIONS", "2"),
    ])
    .await;
    app.seed().await;
    let prometheus = Prometheus::start(app.address.trim_start_matches("http://")).await;
    let output = run_tool(
        &[
            "loadgen",
            "--base-url",
            &app.address,
            "--users",
            "8",
            "--duration",
            "60s",
            "--think-time",
            "50ms",
            "--checkout-ratio",
            "1",
            "--restock-every",
            "0s",
            "--json",
            "-",
        ],
        &[
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout[stdout.find("\n{").map_or(0, |i| i + 1)..])
        .expect("the JSON report");
    // What the run did is in the series, and the rules have been evaluated on it.
    prometheus.wait_for_scrapes(2).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // about time itself: one rule evaluation (1 s) after the last scrape
    let verdicts = report["slos"]
        .as_array()
        .expect("slos")
        .iter()
        .map(|v| (v["slo"].as_str().unwrap_or_default().to_string(), v.clone()))
        .collect();
    let answer = prometheus.query("slo:sli_error:ratio_rate5m").await;
    let ratios = answer["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|series| {
            let slo = series["metric"]["sloth_slo"].as_str().unwrap_or_default();
            let value = series["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            (slo.to_string(), value)
        })
        .collect();
    (verdicts, ratios)
}

/// The loadgen's error ratio for `slo` agrees with Prometheus's 5m ratio: the run is
/// shorter than the window, so both cover the same events, but for those of the last
/// scrape interval (a second of load) that Prometheus may not have yet.
fn assert_agree(slo: &str, loadgen: &BTreeMap<String, Value>, prometheus: &BTreeMap<String, f64>) {
    let verdict = &loadgen[slo];
    let ours = verdict["error_ratio"].as_f64().expect("error_ratio");
    let total = verdict["total"].as_f64().expect("total");
    let theirs = prometheus[slo];
    println!("{slo}: loadgen {ours:.4} of {total} events, Prometheus {theirs:.4}");
    // A second of the minute's events, or a tenth of a percent.
    let tolerance = (2.0 / 60.0_f64).max(1.0 / total.max(1.0)).max(0.001);
    assert!(
        (ours - theirs).abs() <= tolerance,
        "{slo}: loadgen {ours:.4} of {total} events, Prometheus {theirs:.4} (tolerance {tolerance:.4})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_checkouts_burn_the_responsiveness_budget_and_starve_the_catalog() {
    if !tool_available("prometheus", "apt-get install prometheus") {
        return;
    }
    // Every checkout is slow, and the shoppers' catalog reads queue behind them for the pool.
    let (loadgen, prometheus) = a_minute_of_checkouts("blocking").await;
    let responsiveness = prometheus["checkout-responsiveness"];
    assert!(
        responsiveness > 0.99,
        "every checkout is slow: {responsiveness}"
    );
    assert_eq!(loadgen["checkout-responsiveness"]["held"], false);
    let catalog = prometheus["catalog-responsiveness"];
    assert!(
        catalog > 0.0,
        "the pool storm reaches the catalog: {prometheus:?}"
    );
    assert_eq!(
        loadgen["catalog-responsiveness"]["held"], false,
        "{loadgen:?}"
    );
    for slo in [
        "checkout-responsiveness",
        "checkout-availability",
        "catalog-responsiveness",
    ] {
        assert_agree(slo, &loadgen, &prometheus);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn async_checkouts_keep_the_responsiveness_budget() {
    if !tool_available("prometheus", "apt-get install prometheus") {
        return;
    }
    let (loadgen, prometheus) = a_minute_of_checkouts("async").await;
    let responsiveness = prometheus["checkout-responsiveness"];
    assert!(
        responsiveness < 0.01,
        "202s in milliseconds: {responsiveness}"
    );
    assert_eq!(loadgen["checkout-responsiveness"]["held"], true);
    assert!(loadgen["order-confirmation"]["total"].as_u64() > Some(0));
    for slo in [
        "checkout-responsiveness",
        "checkout-availability",
        "order-confirmation",
    ] {
        assert_agree(slo, &loadgen, &prometheus);
    }
}
