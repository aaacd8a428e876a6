//! Each hypothesis judged on what the run observed: held, not held, or skipped (could
//! not be judged here — an alert without a Prometheus, or in `--quick`), with what was
//! observed beside what was expected.

use std::time::Duration;

use chrono::{DateTime, Utc};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::watch;

use super::args::{RunArgs, Scale};
use super::experiment::{Bound, During, Hypothesis, Reference, Stat, Subject, trim_number};
use super::journal::{PhaseRecord, Verdict};
use super::scrape::{self, Scrape};
use crate::client::ApiClient;
use crate::loadgen::report::Report;
use crate::loadgen::slo::{Slo, Verdict as SloVerdict};

/// What the run observed, for the verdicts.
pub struct Observed<'a> {
    pub steady: &'a PhaseRecord,
    pub phases: &'a [PhaseRecord],
    pub end: &'a End,
    pub scale: Scale,
}

/// The state the timeline left.
pub struct End {
    pub ledger: Option<Value>,
    /// Every product's name and available stock.
    pub stock: Vec<(String, i64)>,
}

/// What the service says now, for the hypotheses judged on the state the timeline
/// leaves: its orders (admin API) and its metrics.
pub struct Probe<'a> {
    pub client: &'a ApiClient,
    pub admin: &'a str,
}

impl Probe<'_> {
    async fn scrape(&self) -> Option<Scrape> {
        let text = self.client.text("/metrics", None).await.ok()?;
        Some(Scrape::parse(&text))
    }

    async fn count_orders(&self, status: &str) -> Option<f64> {
        let answer = self
            .client
            .send(
                Method::GET,
                &format!("/api/orders?status={status}&limit=1"),
                Some(self.admin),
                None,
            )
            .await
            .ok()?;
        answer.body["total"].as_f64()
    }
}

/// The steady state's checks, judged on one steady stretch (`after`: compared with
/// `before`, for "…x steady" bounds).
pub fn steady(
    checks: &[Hypothesis],
    stretch: &PhaseRecord,
    before: Option<&PhaseRecord>,
) -> Vec<Verdict> {
    checks
        .iter()
        .map(|check| {
            let subject = check.looks_at().clone();
            let refer = |reference: &Reference| match reference {
                Reference::Steady => before.and_then(|b| figure(&subject, std::slice::from_ref(b))),
                Reference::Delays { payment, email } => {
                    Some(delay_of(stretch.delays, *payment, *email))
                }
                Reference::Phase(_) => None,
            };
            match figure(&subject, std::slice::from_ref(stretch)) {
                Some(value) => bounded(check, value, &refer, unit(&subject)),
                None => Verdict::skipped(check, "the service does not export it"),
            }
            .in_the_steady_state()
        })
        .collect()
}

/// One hypothesis, judged.
pub async fn hypothesis(
    hypothesis: &Hypothesis,
    observed: &Observed<'_>,
    probe: Probe<'_>,
    interrupted: &watch::Receiver<bool>,
    args: &RunArgs,
) -> Verdict {
    let subject = hypothesis.looks_at().clone();
    let during = hypothesis.judged_during().clone();
    if *interrupted.borrow() {
        return Verdict::skipped(hypothesis, "the run was interrupted");
    }
    let stretch: Vec<PhaseRecord> = match &during {
        During::Phase(name) => observed
            .phases
            .iter()
            .filter(|p| &p.name == name)
            .cloned()
            .collect(),
        During::Run | During::End => observed.phases.to_vec(),
    };
    // "…x payment_delay" bounds: the delays of the stretch's first phase.
    let delays = stretch.first().map_or(observed.steady.delays, |p| p.delays);
    let refer = |reference: &Reference| match reference {
        Reference::Steady => figure(&subject, std::slice::from_ref(observed.steady)),
        Reference::Phase(name) => {
            let phase: Vec<PhaseRecord> = observed
                .phases
                .iter()
                .filter(|p| &p.name == name)
                .cloned()
                .collect();
            figure(&subject, &phase)
        }
        Reference::Delays { payment, email } => Some(delay_of(delays, *payment, *email)),
    };
    match &subject {
        Subject::Alert {
            name,
            fires,
            within,
        } => {
            if args.quick {
                return Verdict::skipped(
                    hypothesis,
                    "not judged in --quick: an alert is judged on a full-length run (its windows and `for:` outlast a minute)",
                );
            }
            if args.prometheus_url.is_none() {
                return Verdict::skipped(hypothesis, "no --prometheus-url to ask");
            }
            let fired = stretch
                .iter()
                .find_map(|p| p.alerts_fired.get(name).copied());
            let limit = within.map(|w| observed.scale.duration(w));
            let expected = match (fires, limit) {
                (true, Some(limit)) => format!("fires within {}", seconds(limit)),
                (true, None) => "fires".to_string(),
                (false, _) => "does not fire".to_string(),
            };
            let observed_text = fired.map_or("did not fire".to_string(), |after| {
                format!("fired {} after the phase began", seconds(after))
            });
            let held = match (fires, fired, limit) {
                (true, Some(after), Some(limit)) => after <= limit,
                (true, Some(_), None) => true,
                (true, None, _) => false,
                (false, fired, _) => fired.is_none(),
            };
            Verdict::judged(hypothesis, held, observed_text, expected)
        }
        Subject::Orders { status, within } => {
            let limit = within.map_or(Duration::ZERO, |w| observed.scale.duration(w));
            let started = std::time::Instant::now();
            loop {
                let Some(count) = probe.count_orders(status).await else {
                    return Verdict::skipped(hypothesis, "the orders could not be counted");
                };
                let verdict = bounded(hypothesis, count, &|_| None, "orders");
                if verdict.held == Some(true) || started.elapsed() >= limit || *interrupted.borrow()
                {
                    return verdict;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Subject::Metric {
            name,
            labels,
            stat,
            within,
        } if during == During::End => {
            let limit = within.map_or(Duration::ZERO, |w| observed.scale.duration(w));
            let started = std::time::Instant::now();
            loop {
                let value = probe.scrape().await.and_then(|now| {
                    scrape::over(std::slice::from_ref(&now), name, labels, *stat, 1.0)
                });
                let Some(value) = value else {
                    return Verdict::skipped(hypothesis, "the service does not export it");
                };
                let verdict = bounded(hypothesis, value, &refer, unit(&subject));
                if verdict.held == Some(true) || started.elapsed() >= limit || *interrupted.borrow()
                {
                    return verdict;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Subject::StockNotNegative => {
            let negative: Vec<&(String, i64)> =
                observed.end.stock.iter().filter(|(_, s)| *s < 0).collect();
            let lowest = observed
                .end
                .stock
                .iter()
                .map(|(_, s)| *s)
                .min()
                .unwrap_or(0);
            Verdict::judged(
                hypothesis,
                negative.is_empty(),
                format!(
                    "lowest stock {lowest} over {} products",
                    observed.end.stock.len()
                ),
                "no product below 0".to_string(),
            )
        }
        Subject::Ledger(figure) if figure == "balanced" => {
            let Some(ledger) = &observed.end.ledger else {
                return Verdict::skipped(hypothesis, "the ledger could not be read");
            };
            let n = |key: &str| ledger[key].as_i64().unwrap_or(-1);
            let (approved, with, refunded, without) = (
                n("approved_charges"),
                n("with_order"),
                n("refunded"),
                n("without_order"),
            );
            Verdict::judged(
                hypothesis,
                approved == with + refunded + without,
                format!(
                    "{approved} approved = {with} with an order + {refunded} refunded + {without} without"
                ),
                "approved = with an order + refunded + without an order".to_string(),
            )
        }
        Subject::Ledger(figure) => {
            let value = match during {
                During::End => observed
                    .end
                    .ledger
                    .as_ref()
                    .and_then(|l| ledger_figure(l, figure, None)),
                _ => ledger_delta(&stretch, figure),
            };
            match value {
                Some(value) => bounded(hypothesis, value, &refer, ""),
                None => Verdict::skipped(hypothesis, "the ledger could not be read"),
            }
        }
        other => match figure(other, &stretch) {
            Some(value) => bounded(hypothesis, value, &refer, unit(other)),
            None => Verdict::skipped(hypothesis, "not measured in this run"),
        },
    }
}

/// A metric, client or SLO figure over consecutive phases.
fn figure(subject: &Subject, phases: &[PhaseRecord]) -> Option<f64> {
    match subject {
        Subject::Metric {
            name, labels, stat, ..
        } => {
            let scrapes: Vec<Scrape> = phases
                .iter()
                .flat_map(|p| p.scrapes.iter().cloned())
                .collect();
            let seconds: f64 = phases.iter().map(|p| p.seconds).sum();
            scrape::over(&scrapes, name, labels, *stat, seconds)
        }
        Subject::Client(name) => {
            let reports: Vec<&Report> = phases.iter().filter_map(|p| p.report.as_ref()).collect();
            if reports.is_empty() {
                return None;
            }
            Some(client_figure(name, &reports))
        }
        Subject::Slo { slo, .. } => {
            let verdicts: Vec<&SloVerdict> = phases
                .iter()
                .filter_map(|p| p.report.as_ref())
                .flat_map(|r| r.slos.iter())
                .filter(|v| v.slo == slo)
                .collect();
            let (good, total) = verdicts
                .iter()
                .fold((0u64, 0u64), |(g, t), v| (g + v.good, t + v.total));
            (total > 0).then(|| (total - good) as f64 / total as f64)
        }
        _ => None,
    }
}

/// The load generator's figures, over the phases' reports.
fn client_figure(name: &str, reports: &[&Report]) -> f64 {
    let sum = |pick: &dyn Fn(&Report) -> u64| reports.iter().map(|r| pick(r) as f64).sum::<f64>();
    let highest =
        |pick: &dyn Fn(&Report) -> f64| reports.iter().map(|r| pick(r)).fold(0.0, f64::max);
    let checkout = |r: &Report| r.operations.get("checkout").map(|o| o.latency_ms.clone());
    match name {
        "checkouts" => sum(&|r| r.operations.get("checkout").map_or(0, |o| o.count)),
        "checkout_p50" => highest(&|r| checkout(r).map_or(0.0, |l| l.p50 / 1000.0)),
        "checkout_p99" => highest(&|r| checkout(r).map_or(0.0, |l| l.p99 / 1000.0)),
        "catalog_p99" => highest(&|r| {
            r.operations
                .iter()
                .filter(|(op, _)| *op == "browse" || *op == "view_product")
                .map(|(_, o)| o.latency_ms.p99 / 1000.0)
                .fold(0.0, f64::max)
        }),
        "server_errors" => sum(&|r| r.server_errors),
        "business_outcomes" => sum(&|r| r.business_outcomes.values().sum()),
        "sold_out" => sum(&|r| r.checkouts.get("insufficient_stock").copied().unwrap_or(0)),
        "decline_ratio" => {
            let count = |outcome: &str| sum(&|r| r.checkouts.get(outcome).copied().unwrap_or(0));
            let declined = count("payment_declined");
            let charged = count("success") + declined + count("email_failed");
            if charged > 0.0 {
                declined / charged
            } else {
                0.0
            }
        }
        "success_ratio" => {
            let succeeded = sum(&|r| r.checkouts.get("success").copied().unwrap_or(0));
            let all = sum(&|r| r.checkouts.values().sum());
            if all > 0.0 { succeeded / all } else { 0.0 }
        }
        "error_rate" => highest(&|r| r.error_rate),
        "time_to_confirmed_p99" => highest(&|r| {
            r.time_to_confirmed_ms
                .values()
                .map(|l| l.p99 / 1000.0)
                .fold(0.0, f64::max)
        }),
        "purchases" => sum(&|r| r.purchases),
        _ => 0.0,
    }
}

fn ledger_figure(ledger: &Value, figure: &str, _purchases: Option<f64>) -> Option<f64> {
    let key = match figure {
        "approved" => "approved_charges",
        other => other,
    };
    ledger[key].as_f64()
}

/// A ledger figure's change over the phases (`approved_per_purchase`: charges approved
/// per purchase a shopper meant to make).
fn ledger_delta(phases: &[PhaseRecord], figure: &str) -> Option<f64> {
    let before = phases.first()?.ledger_before.as_ref()?;
    let after = phases.last()?.ledger_after.as_ref()?;
    if figure == "approved_per_purchase" {
        let approved =
            ledger_figure(after, "approved", None)? - ledger_figure(before, "approved", None)?;
        let reports: Vec<&Report> = phases.iter().filter_map(|p| p.report.as_ref()).collect();
        let purchases = client_figure("purchases", &reports);
        return (purchases > 0.0).then(|| approved / purchases);
    }
    Some(ledger_figure(after, figure, None)? - ledger_figure(before, figure, None)?)
}

fn unit(subject: &Subject) -> &'static str {
    match subject {
        Subject::Metric { name, stat, .. } => match stat {
            Stat::Quantile(_) if name.ends_with("_seconds") => "s",
            Stat::Rate => "/s",
            _ => "",
        },
        Subject::Client(name) if name.ends_with("_p50") || name.ends_with("_p99") => "s",
        Subject::Slo { .. } => "bad",
        _ => "",
    }
}

/// The delays named, in seconds, of `(payment, email)`.
fn delay_of((payment_delay, email_delay): (f64, f64), payment: bool, email: bool) -> f64 {
    let mut delay = 0.0;
    if payment {
        delay += payment_delay;
    }
    if email {
        delay += email_delay;
    }
    delay
}

/// A value against the hypothesis' tolerance (`at_least`, `at_most`); `refer` gives the
/// figure a relative bound ("3x steady", "0.2x blocking") is relative to. An SLO's value
/// is its error ratio: held means within budget.
fn bounded(
    hypothesis: &Hypothesis,
    value: f64,
    refer: &dyn Fn(&Reference) -> Option<f64>,
    unit: &str,
) -> Verdict {
    if let Subject::Slo { slo, held } = hypothesis.looks_at() {
        let (slo, held) = (slo.as_str(), *held);
        // The error budget: what the objective leaves (1 % of events for 99 %).
        let budget = <Slo as strum::VariantArray>::VARIANTS
            .iter()
            .find(|s| s.name() == slo)
            .map_or(0.0, |s| 1.0 - s.objective());
        let within = value <= budget + 1e-9;
        let observed = format!("{:.1} % of events bad", value * 100.0);
        let expected = if held { "held" } else { "broken" }.to_string();
        let verdict_word = if within { "held" } else { "broken" };
        return Verdict::judged(
            hypothesis,
            within == held,
            format!("{verdict_word} ({observed})"),
            expected,
        );
    }
    let resolve = |bound: &Bound| -> Option<f64> {
        match bound {
            Bound::Value(v) => Some(*v),
            Bound::Times(factor, reference) => refer(reference).map(|r| r * factor),
        }
    };
    let mut expected = Vec::new();
    let mut held = true;
    let mut unjudgeable = false;
    for (word, bound, ok) in [
        (
            "≥",
            hypothesis.at_least.as_ref(),
            (|v: f64, b: f64| v >= b) as fn(f64, f64) -> bool,
        ),
        ("≤", hypothesis.at_most.as_ref(), |v: f64, b: f64| v <= b),
    ] {
        let Some(bound) = bound else { continue };
        let bound = bound.get_ref();
        match resolve(bound) {
            Some(limit) => {
                held &= ok(value, limit);
                expected.push(match bound {
                    Bound::Value(_) => format!("{word} {}", with_unit(limit, unit)),
                    _ => format!("{word} {bound} ({})", with_unit(limit, unit)),
                });
            }
            None => unjudgeable = true,
        }
    }
    let observed = with_unit(value, unit);
    if unjudgeable {
        return Verdict::skipped(hypothesis, "nothing measured to compare with");
    }
    Verdict::judged(hypothesis, held, observed, expected.join(" and "))
}

fn with_unit(value: f64, unit: &str) -> String {
    if unit.is_empty() {
        trim_number(value)
    } else {
        format!("{} {unit}", trim_number(value))
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.0} s", duration.as_secs_f64())
}

/// The figures a phase's hypotheses watch, now, for the progress line.
pub fn watched_figures(watching: &[&Hypothesis], scrapes: &[Scrape], seconds: f64) -> String {
    watching
        .iter()
        .filter_map(|h| match h.looks_at().clone() {
            Subject::Metric {
                name, labels, stat, ..
            } => {
                let value = scrape::over(scrapes, &name, &labels, stat, seconds.max(1.0))?;
                let short = h.name.get_ref().chars().take(32).collect::<String>();
                Some(format!("{short}: {}", trim_number(value)))
            }
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// The alerts firing now in Prometheus.
pub async fn firing_alerts(prometheus: &str, since: DateTime<Utc>) -> Vec<String> {
    let url = format!("{}/api/v1/alerts", prometheus.trim_end_matches('/'));
    let Ok(response) = reqwest::get(url).await else {
        return Vec::new();
    };
    let Ok(body) = response.json::<Value>().await else {
        return Vec::new();
    };
    body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        // An alert already active before `since` was set off by something earlier (the
        // steady state, a run before this one), not by this phase.
        .filter(|a| {
            a["activeAt"]
                .as_str()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .is_none_or(|at| at >= since)
        })
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}
