//! The service-level objectives are whole: every SLO that `slo.yml` names (by its
//! `sloth_slo` label) has its error ratio for every window, its objective and budget,
//! the remaining-budget rule, both burn-rate alerts (page and ticket, each with its two
//! window pairs), a runbook section, a row on the SLOs dashboard and unit tests — so an
//! SLO added in one place and forgotten in another fails here. Structure only: what the
//! rules compute is proven by promtool (`slo.test.yml`) and against a real Prometheus.

use std::collections::{BTreeMap, BTreeSet};

use yaml_serde::Value as Yaml;

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
