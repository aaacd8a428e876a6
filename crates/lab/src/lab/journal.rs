//! The journal of a run: the verdicts first (✓ held, ✗ not, – skipped, with what was
//! observed beside what was expected), then the phases — as text in the terminal, and
//! on request as JSON (`experiment`, `hypotheses`, `phases` at the top) and as one HTML
//! page with the phases shaded over the load generator's charts, a Grafana link per
//! phase and the slowest checkout of each in Jaeger.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use super::args::{RunArgs, Scale};
use super::experiment::{Experiment, Hypothesis};
use super::scrape::Scrape;
use crate::loadgen::html;
use crate::loadgen::report::Report;

/// One hypothesis' verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    /// `true` held, `false` did not, `null` could not be judged here (see `observed`).
    pub held: Option<bool>,
    pub observed: String,
    pub expected: String,
    pub during: String,
}

impl Verdict {
    pub fn judged(hypothesis: &Hypothesis, held: bool, observed: String, expected: String) -> Self {
        Self {
            name: hypothesis.name.get_ref().clone(),
            held: Some(held),
            observed,
            expected,
            during: during(hypothesis),
        }
    }

    pub fn skipped(hypothesis: &Hypothesis, why: &str) -> Self {
        Self {
            name: hypothesis.name.get_ref().clone(),
            held: None,
            observed: format!("skipped: {why}"),
            expected: String::new(),
            during: during(hypothesis),
        }
    }

    /// The same verdict, said of a steady-state check.
    pub fn in_the_steady_state(mut self) -> Self {
        self.during = "steady".to_string();
        self
    }

    fn mark(&self) -> &'static str {
        match self.held {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "–",
        }
    }
}

fn during(hypothesis: &Hypothesis) -> String {
    hypothesis
        .during
        .as_ref()
        .map_or("run".to_string(), |d| d.get_ref().clone())
}

/// One stretch of the run, as it was watched.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    pub name: String,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub seconds: f64,
    pub scrapes: Arc<Vec<Scrape>>,
    pub report: Option<Report>,
    pub ledger_before: Option<Value>,
    pub ledger_after: Option<Value>,
    /// The alerts that fired, and how long after the phase began.
    pub alerts_fired: BTreeMap<String, std::time::Duration>,
    pub slowest_checkout: Option<String>,
    pub settings: Vec<String>,
    pub actions: Vec<String>,
    /// The injected delays in force, in seconds: the gateway's and the mail server's.
    pub delays: (f64, f64),
}

pub struct Journal {
    pub name: String,
    pub title: String,
    pub question: String,
    pub predict: String,
    pub lesson: Option<String>,
    pub look_at: Vec<String>,
    pub quick: bool,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub steady_before: Vec<Verdict>,
    pub steady_after: Vec<Verdict>,
    /// The steady state did not hold before the timeline: it did not run.
    pub steady_broken: bool,
    pub hypotheses: Vec<Verdict>,
    /// The steady stretches and the phases, in order.
    pub phases: Vec<PhaseRecord>,
    pub rolled_back: Vec<String>,
    pub failure: Option<String>,
    pub was_interrupted: bool,
}

impl Journal {
    pub fn new(experiment: &Experiment, quick: bool, started_at: SystemTime) -> Self {
        Self {
            name: experiment.name.get_ref().clone(),
            title: experiment.title.clone(),
            question: experiment.question.clone(),
            predict: experiment.predict.clone(),
            lesson: experiment.lesson.clone(),
            look_at: experiment.look_at.clone(),
            quick,
            started_at,
            ended_at: started_at,
            steady_before: Vec::new(),
            steady_after: Vec::new(),
            steady_broken: false,
            hypotheses: experiment
                .hypotheses
                .iter()
                .map(|h| Verdict::skipped(h, "not reached"))
                .collect(),
            phases: Vec::new(),
            rolled_back: Vec::new(),
            failure: None,
            was_interrupted: false,
        }
    }

    pub fn failed(
        experiment: &Experiment,
        quick: bool,
        started_at: SystemTime,
        why: String,
    ) -> Self {
        let mut journal = Self::new(experiment, quick, started_at);
        journal.hypotheses = experiment
            .hypotheses
            .iter()
            .map(|h| Verdict::skipped(h, "the run failed"))
            .collect();
        journal.failure = Some(why);
        journal.ended_at = SystemTime::now();
        journal
    }

    pub fn interrupted(&mut self) {
        self.was_interrupted = true;
        for verdict in &mut self.hypotheses {
            if verdict.held.is_some() {
                continue;
            }
            verdict.observed = "skipped: the run was interrupted".to_string();
        }
    }

    /// Every hypothesis held (skipped ones neither hold nor break a run), the steady
    /// state held before and after, and the run was neither interrupted nor failed.
    pub fn all_held(&self) -> bool {
        !self.was_interrupted
            && self.failure.is_none()
            && !self.steady_broken
            && self
                .hypotheses
                .iter()
                .chain(&self.steady_before)
                .chain(&self.steady_after)
                .all(|v| v.held != Some(false))
            && self.hypotheses.iter().any(|v| v.held == Some(true))
    }

    fn outcome(&self) -> &'static str {
        if self.was_interrupted {
            "interrupted"
        } else if self.failure.is_some() {
            "failed"
        } else if self.steady_broken {
            "the steady state did not hold"
        } else if self.all_held() {
            "every hypothesis held"
        } else {
            "a hypothesis did not hold"
        }
    }

    pub fn render_text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "\n== {} — {}", self.title, self.outcome());
        for verdict in &self.hypotheses {
            write_verdict(&mut text, verdict);
        }
        if !self.steady_before.is_empty() {
            let _ = writeln!(text, "  steady state, before:");
            for verdict in &self.steady_before {
                write_verdict(&mut text, verdict);
            }
        }
        if !self.steady_after.is_empty() {
            let _ = writeln!(text, "  steady state, after:");
            for verdict in &self.steady_after {
                write_verdict(&mut text, verdict);
            }
        }
        if let Some(failure) = &self.failure {
            let _ = writeln!(text, "  the run failed: {failure}");
        }
        if let Some(lesson) = &self.lesson {
            let _ = writeln!(text, "\nWhy: {}", lesson.trim());
        }
        let _ = writeln!(text, "\nPut back as found: {}", self.rolled_back.join("; "));
        text
    }

    fn to_json(&self) -> Value {
        json!({
            "experiment": {
                "name": self.name,
                "title": self.title,
                "question": self.question,
                "predict": self.predict,
                "quick": self.quick,
                "outcome": self.outcome(),
            },
            "hypotheses": self.hypotheses,
            "steady_state": {"before": self.steady_before, "after": self.steady_after},
            "phases": self.phases.iter().map(|p| json!({
                "name": p.name,
                "started_at": millis(p.started_at),
                "ended_at": millis(p.ended_at),
                "seconds": p.seconds,
                "settings": p.settings,
                "actions": p.actions,
                "alerts_fired": p.alerts_fired.iter().map(|(a, after)| (a.clone(), after.as_secs_f64())).collect::<BTreeMap<_, _>>(),
                "slowest_checkout_trace": p.slowest_checkout,
                "load": p.report.as_ref().map(|r| json!({
                    "requests": r.requests,
                    "checkouts": r.checkouts,
                    "server_errors": r.server_errors,
                    "slos": r.slos,
                })),
            })).collect::<Vec<_>>(),
            "rolled_back": self.rolled_back,
            "started_at": millis(self.started_at),
            "ended_at": millis(self.ended_at),
            "failure": self.failure,
        })
    }

    pub fn write(
        &self,
        json_path: Option<&Path>,
        html_path: Option<&Path>,
        args: &RunArgs,
    ) -> anyhow::Result<()> {
        if let Some(path) = json_path {
            let json = serde_json::to_string_pretty(&self.to_json())?;
            if path.as_os_str() == "-" {
                println!("{json}");
            } else {
                std::fs::write(path, json)
                    .with_context(|| format!("writing the journal to {}", path.display()))?;
            }
        }
        if let Some(path) = html_path {
            std::fs::write(path, self.render_html(args))
                .with_context(|| format!("writing the report to {}", path.display()))?;
        }
        Ok(())
    }

    /// One self-contained page: the verdicts, the phases with their links, the charts
    /// with the phases shaded on one time axis.
    fn render_html(&self, args: &RunArgs) -> String {
        let start = self
            .phases
            .first()
            .map_or(self.started_at, |p| p.started_at);
        let offset = |at: SystemTime| at.duration_since(start).map_or(0.0, |d| d.as_secs_f64());
        let bands: Vec<html::Band> = self
            .phases
            .iter()
            .map(|p| html::Band {
                name: p.name.clone(),
                from: offset(p.started_at),
                to: offset(p.ended_at),
            })
            .collect();
        let reports: Vec<(f64, &Report)> = self
            .phases
            .iter()
            .filter_map(|p| p.report.as_ref().map(|r| (offset(p.started_at), r)))
            .collect();
        let mut page = String::new();
        let _ = write!(
            page,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n\
             <style>body{{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1300px;padding:0 1rem;color:#222}}\
             table{{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}}td,th{{border:1px solid #ccc;padding:.35rem .6rem;text-align:left;vertical-align:top}}\
             th{{background:#f4f4f4}}.held{{color:#1a7f37;font-weight:600}}.broken{{color:#cf222e;font-weight:600}}.skipped{{color:#6e7781}}\
             figure{{margin:0 0 1.2rem}}figcaption{{font-weight:600;margin-bottom:.3rem}}svg{{width:100%;height:auto;display:block}}\
             .note{{color:#555}}h2{{margin-top:2rem;border-bottom:1px solid #ddd}}</style></head><body>\n\
             <h1>{title}</h1>\n<p><strong>{outcome}</strong>{quick}</p>\n<p><strong>The question.</strong> {question}</p>\n\
             <p><strong>The prediction.</strong> {predict}</p>\n",
            title = escape(&self.title),
            outcome = escape(self.outcome()),
            quick = if self.quick {
                " (the --quick form: durations and delays scaled down)"
            } else {
                ""
            },
            question = escape(&self.question),
            predict = escape(&self.predict),
        );
        page.push_str("<h2>Hypotheses</h2>\n<table><thead><tr><th></th><th>hypothesis</th><th>during</th><th>observed</th><th>expected</th></tr></thead><tbody>\n");
        for verdict in &self.hypotheses {
            let class = match verdict.held {
                Some(true) => "held",
                Some(false) => "broken",
                None => "skipped",
            };
            let _ = writeln!(
                page,
                "<tr><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                verdict.mark(),
                escape(&verdict.name),
                escape(&verdict.during),
                escape(&verdict.observed),
                escape(&verdict.expected)
            );
        }
        page.push_str("</tbody></table>\n<h2>Phases</h2>\n<table><thead><tr><th>phase</th><th>from</th><th>to</th><th>settings</th><th>look at</th></tr></thead><tbody>\n");
        for phase in &self.phases {
            let grafana = format!(
                "{}/d/checkout-anatomy?from={}&to={}",
                args.grafana_url.trim_end_matches('/'),
                millis(phase.started_at),
                millis(phase.ended_at)
            );
            let trace = phase.slowest_checkout.as_ref().map_or(String::new(), |id| {
                format!(
                    ", <a href=\"{}/trace/{id}\">the slowest checkout in Jaeger</a>",
                    args.jaeger_url.trim_end_matches('/')
                )
            });
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{:.0} s</td><td>{:.0} s</td><td>{}</td><td><a href=\"{}\">Grafana, this phase</a>{trace}</td></tr>",
                escape(&phase.name),
                offset(phase.started_at),
                offset(phase.ended_at),
                escape(&phase.settings.join(", ")),
                escape(&grafana),
            );
        }
        page.push_str("</tbody></table>\n");
        if !self.look_at.is_empty() {
            page.push_str("<h2>Where to look</h2><ul>");
            for place in &self.look_at {
                let _ = write!(page, "<li>{}</li>", escape(place));
            }
            page.push_str("</ul>\n");
        }
        for (caption, chart) in html::timeline_charts(&reports, &bands) {
            let _ = writeln!(
                page,
                "<figure><figcaption>{}</figcaption>\n{chart}</figure>",
                escape(&caption)
            );
        }
        if let Some(lesson) = &self.lesson {
            let _ = writeln!(page, "<h2>Why</h2><p>{}</p>", escape(lesson.trim()));
        }
        let _ = writeln!(
            page,
            "<p class=\"note\">Put back as found: {}</p></body></html>",
            escape(&self.rolled_back.join("; "))
        );
        page
    }
}

fn write_verdict(text: &mut String, verdict: &Verdict) {
    let _ = write!(
        text,
        "  {} {} [{}]: {}",
        verdict.mark(),
        verdict.name,
        verdict.during,
        verdict.observed
    );
    if !verdict.expected.is_empty() {
        let _ = write!(text, " (expected {})", verdict.expected);
    }
    text.push('\n');
}

fn millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What the learner reads before the run: the question, and what to predict.
pub fn introduce(experiment: &Experiment, scale: Scale, quick: bool) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "== {}", experiment.title);
    let _ = writeln!(text, "Question: {}", experiment.question.trim());
    let _ = writeln!(
        text,
        "Predict, before it runs: {}",
        experiment.predict.trim()
    );
    if !experiment.look_at.is_empty() {
        let _ = writeln!(text, "While it runs, look at:");
        for place in &experiment.look_at {
            let _ = writeln!(text, "  - {place}");
        }
    }
    let length = experiment
        .phases
        .iter()
        .map(|p| scale.duration(p.duration.get_ref().0))
        .sum::<std::time::Duration>()
        + scale.duration(experiment.steady.duration.get_ref().0) * 2;
    let _ = writeln!(
        text,
        "It takes about {}{}.\n",
        humantime::format_duration(std::time::Duration::from_secs(length.as_secs())),
        if quick { " (--quick)" } else { "" }
    );
    text
}

/// `lab show`: the experiment, as a learner reads it before running it.
pub fn describe(experiment: &Experiment) -> String {
    let mut text = introduce(
        experiment,
        Scale {
            time: 1.0,
            delays: 1.0,
        },
        false,
    );
    let _ = writeln!(text, "Timeline:");
    let _ = writeln!(
        text,
        "  steady state, {} (checked before and after)",
        humantime::format_duration(experiment.steady.duration.get_ref().0)
    );
    for phase in &experiment.phases {
        let _ = writeln!(
            text,
            "  {}, {}{}",
            phase.name.get_ref(),
            humantime::format_duration(phase.duration.get_ref().0),
            if phase.load.shoppers > 0 {
                format!(", {} shoppers", phase.load.shoppers)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(text, "Hypotheses:");
    for hypothesis in &experiment.hypotheses {
        let _ = writeln!(
            text,
            "  - {} [{}]",
            hypothesis.name.get_ref(),
            during(hypothesis)
        );
    }
    let _ = writeln!(
        text,
        "Run it: ecommerce-monolith lab run {} (add --quick for about a minute)",
        experiment.name.get_ref()
    );
    text
}

/// One line about a phase's load, for the terminal.
pub fn phase_summary(report: Option<&Report>) -> String {
    let Some(report) = report else {
        return "no load".to_string();
    };
    let checkout = report.operations.get("checkout");
    format!(
        "{} requests, {} checkouts (p99 {:.0} ms), {} server errors",
        report.requests,
        checkout.map_or(0, |c| c.count),
        checkout.map_or(0.0, |c| c.latency_ms.p99),
        report.server_errors
    )
}
