//! An experiment file (`lab/*.toml`): what it asks, what to predict, the steady state
//! it starts from, its timeline of phases, and its hypotheses — read with the line of
//! every mistake, so that `lab run` says where a file is wrong and what was expected
//! there (`lab/README.md` is the schema, with an example of every field).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use ecommerce_monolith::domain::{ResilienceSettings, ResilienceUpdate};
use serde::Deserialize;
use toml::Spanned;

/// A file that is not a valid experiment: where, and what was expected.
#[derive(Debug)]
pub struct SchemaError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for SchemaError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The file's name without `.toml`; what `lab run` is given.
    pub name: Spanned<String>,
    pub title: String,
    /// The question the experiment answers.
    pub question: String,
    /// What to predict before it runs (printed first, so a learner commits to a guess).
    pub predict: String,
    /// Why it happens: printed with the verdicts.
    #[serde(default)]
    pub lesson: Option<String>,
    /// Where to look while it runs: dashboards, panels, Jaeger searches.
    #[serde(default)]
    pub look_at: Vec<String>,
    /// The state the service is brought to and checked in, before and after the timeline.
    pub steady: Steady,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
    #[serde(rename = "hypothesis")]
    pub hypotheses: Vec<Hypothesis>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steady {
    pub duration: Spanned<Length>,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub settings: Settings,
    /// Must hold in the steady state before the timeline (else it does not start) and
    /// again after it (else the service did not recover).
    #[serde(rename = "check", default)]
    pub checks: Vec<Hypothesis>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: Spanned<String>,
    pub duration: Spanned<Length>,
    #[serde(default)]
    pub load: Load,
    /// Put in force when the phase starts (and restored when the run ends).
    #[serde(default)]
    pub settings: Settings,
    /// Done when the phase starts.
    #[serde(default)]
    pub actions: Vec<Spanned<Action>>,
}

/// A length of time, written as humans do: `30s`, `2m`, `1m30s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length(pub Duration);

impl<'de> Deserialize<'de> for Length {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(Length)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "expected a length of time such as \"30s\", \"2m\" or \"500ms\", got {text:?}"
                ))
            })
    }
}

/// What the simulated shoppers do during a phase: `loadgen`'s knobs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// `browse` (the default), `checkout`, `burst` or `impatient`.
    #[serde(default)]
    pub scenario: Option<Spanned<String>>,
    /// Simultaneous shoppers; 0 (the default) is no load at all.
    #[serde(default)]
    pub shoppers: u16,
    /// Offered checkouts per second (the checkout scenario): an open model.
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default)]
    pub checkout_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    pub hot_product_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub think_time: Option<Length>,
    /// The impatient scenario: how long a shopper waits for a checkout's answer before it
    /// gives up and sends it again.
    #[serde(default)]
    pub patience: Option<Length>,
    /// The impatient scenario: whether the retry carries the first attempt's
    /// `Idempotency-Key`.
    #[serde(default)]
    pub idempotency_key: Option<bool>,
}

/// Live settings a phase puts in force: the checkout mode, the faults and the rungs of
/// the ladder of cures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `blocking` or `async`.
    #[serde(default)]
    pub checkout_mode: Option<Spanned<String>>,
    /// Fault settings, as `PUT /api/admin/faults` takes them (fields left out keep
    /// their value): `payment_delay_ms`, `payment_success_rate`, `payment_flap_rate`,
    /// `payment_capacity`, `email_delay_ms`, `email_outage`, `email_hang`.
    #[serde(default)]
    pub faults: BTreeMap<String, Spanned<toml::Value>>,
    /// The rungs, as `PUT /api/admin/resilience` takes them (fields left out keep their
    /// value): `{ payment = { timeout_ms = N }, email = { timeout_ms = N } }`.
    #[serde(default)]
    pub resilience: Option<Spanned<ResilienceUpdate>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Put the seeded stock back (products below 20 units get 100 more).
    Restock,
    /// Put the dead-lettered outbox jobs back in the queue.
    ReplayDeadLetters,
}

/// A named check with its tolerance: exactly one of `metric`, `client`, `slo`, `alert`,
/// `ledger`, `orders`, `stock` says what is looked at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypothesis {
    pub name: Spanned<String>,
    /// A phase's name; `run` (the default) is the whole timeline, `end` the state it
    /// leaves.
    #[serde(default)]
    pub during: Option<Spanned<String>>,

    /// A metric of the service's `/metrics`, over the phase: with `labels` and `stat`.
    #[serde(default)]
    pub metric: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `p50`, `p90`, `p95`, `p99` (a histogram), `rate` (per second), `increase`, `max`
    /// or `last` (a gauge); at the `end`, `last`, waited for up to `within`.
    #[serde(default)]
    pub stat: Option<Spanned<String>>,

    /// A figure of the load generator's report of the phase: `checkouts`, `purchases`,
    /// `checkout_p50`, `checkout_p99`, `catalog_p99`, `server_errors`,
    /// `business_outcomes`, `sold_out`, `decline_ratio` (of the checkouts that reached
    /// the gateway), `success_ratio` (of all checkouts, those that ended in an order),
    /// `error_rate`, `time_to_confirmed_p99`.
    #[serde(default)]
    pub client: Option<Spanned<String>>,

    /// An SLO of `slo.yml`, judged on the phase's events: `verdict` `held` or `broken`.
    #[serde(default)]
    pub slo: Option<Spanned<String>>,
    #[serde(default)]
    pub verdict: Option<Spanned<String>>,

    /// An alert of Prometheus (with `--prometheus-url`): `fires`, and `within` a time
    /// of the phase's start.
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub fires: Option<bool>,
    #[serde(default)]
    pub within: Option<Length>,

    /// The gateway's ledger against the orders: `balanced` (every approved charge is a
    /// paid order, a refund, or counted without an order), or a figure to bound:
    /// `approved`, `approved_per_purchase` (charges per purchase a shopper meant to
    /// make), `with_order`, `refunded`, `without_order`.
    #[serde(default)]
    pub ledger: Option<Spanned<String>>,

    /// How many orders are in a status (`pending`, `confirmed`, `payment_failed`, …),
    /// waited for up to `within` after the phase.
    #[serde(default)]
    pub orders: Option<Spanned<String>>,

    /// `not_negative`: no product's available stock below zero.
    #[serde(default)]
    pub stock: Option<Spanned<String>>,

    /// The tolerance: a number, or that many times a reference figure: `"3x steady"`,
    /// `"0.2x blocking"` (a phase), `"0.9x payment_delay"`.
    #[serde(default)]
    pub at_least: Option<Spanned<Bound>>,
    #[serde(default)]
    pub at_most: Option<Spanned<Bound>>,

    /// What it looks at and where, as [`Experiment::parse`] read them (never written in
    /// a file).
    #[serde(skip)]
    pub read: Option<(Subject, During)>,
}

/// One side of a tolerance.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Value(f64),
    /// That many times a reference figure: `"3x steady"`, `"0.2x blocking"`,
    /// `"0.9x payment_delay"`.
    Times(f64, Reference),
}

/// What a relative bound is relative to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// The same figure in the steady state before the timeline.
    Steady,
    /// The same figure in another phase (by name).
    Phase(String),
    /// The injected delays in force in the phase, in seconds: a bound that follows the
    /// delays when `--quick` scales them.
    Delays { payment: bool, email: bool },
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Integer(i64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(value) => Ok(Bound::Value(value)),
            Written::Integer(value) => Ok(Bound::Value(value as f64)),
            Written::Text(text) => Bound::parse(&text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a number, or \"<factor>x\" and steady, a phase's name, payment_delay, \
                     email_delay or payment_delay+email_delay (such as \"3x steady\"), got {text:?}"
                ))
            }),
        }
    }
}

impl Bound {
    fn parse(text: &str) -> Option<Self> {
        let (factor, reference) = text.trim().split_once("x ")?;
        let factor: f64 = factor.trim().parse().ok().filter(|f: &f64| f.is_finite())?;
        let reference = reference.trim();
        let delays: Vec<&str> = reference.split('+').map(str::trim).collect();
        let reference = match reference {
            "" => return None,
            "steady" => Reference::Steady,
            _ if delays
                .iter()
                .all(|d| ["payment_delay", "email_delay"].contains(d)) =>
            {
                let payment = delays.iter().filter(|d| **d == "payment_delay").count();
                let email = delays.len() - payment;
                if payment > 1 || email > 1 {
                    return None;
                }
                Reference::Delays {
                    payment: payment == 1,
                    email: email == 1,
                }
            }
            phase => Reference::Phase(phase.to_string()),
        };
        Some(Bound::Times(factor, reference))
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Value(value) => write!(f, "{}", trim_number(*value)),
            Bound::Times(factor, reference) => write!(f, "{}x {reference}", trim_number(*factor)),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Steady => write!(f, "steady"),
            Reference::Phase(phase) => write!(f, "{phase}"),
            Reference::Delays { payment, email } => {
                let delays: Vec<&str> = [(*payment, "payment_delay"), (*email, "email_delay")]
                    .into_iter()
                    .filter_map(|(on, name)| on.then_some(name))
                    .collect();
                write!(f, "{}", delays.join("+"))
            }
        }
    }
}

pub fn trim_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Hypothesis {
    /// What it looks at (read and checked with the file).
    pub fn looks_at(&self) -> &Subject {
        &self.expect_read().0
    }

    /// Where it is judged (read and checked with the file).
    pub fn judged_during(&self) -> &During {
        &self.expect_read().1
    }

    fn expect_read(&self) -> &(Subject, During) {
        // Every Hypothesis comes out of Experiment::parse, which sets it or fails.
        self.read
            .as_ref()
            .unwrap_or_else(|| unreachable!("a hypothesis is read by Experiment::parse"))
    }
}

/// What a hypothesis looks at, once the file is read and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Metric {
        name: String,
        labels: BTreeMap<String, String>,
        stat: Stat,
        /// At the `end`: how long to wait for the value to come within bounds.
        within: Option<Duration>,
    },
    Client(String),
    Slo {
        slo: String,
        held: bool,
    },
    Alert {
        name: String,
        fires: bool,
        within: Option<Duration>,
    },
    Ledger(String),
    Orders {
        status: String,
        within: Option<Duration>,
    },
    StockNotNegative,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Quantile(f64),
    Rate,
    Increase,
    Max,
    Last,
}

/// Where a hypothesis is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum During {
    Phase(String),
    /// The whole timeline.
    Run,
    /// The state the timeline leaves.
    End,
}

/// The client figures a hypothesis may name.
pub const CLIENT_FIGURES: [&str; 12] = [
    "checkouts",
    "purchases",
    "checkout_p50",
    "checkout_p99",
    "catalog_p99",
    "server_errors",
    "business_outcomes",
    "sold_out",
    "decline_ratio",
    "success_ratio",
    "error_rate",
    "time_to_confirmed_p99",
];

/// The ledger's figures a hypothesis may name.
pub const LEDGER_FIGURES: [&str; 6] = [
    "balanced",
    "approved",
    "approved_per_purchase",
    "with_order",
    "refunded",
    "without_order",
];

pub const SCENARIOS: [&str; 4] = ["browse", "checkout", "burst", "impatient"];

impl Experiment {
    /// Reads `text`, the file `file` (named in every error), and checks what TOML alone
    /// cannot: that names meet, values are in range, each hypothesis says what it looks
    /// at.
    pub fn parse(file: &str, text: &str, slos: &[&str]) -> Result<Self, SchemaError> {
        let at = |span: Option<Range<usize>>, message: String| SchemaError {
            file: file.to_string(),
            line: span.map_or(1, |span| line_of(text, span.start)),
            message,
        };
        let mut experiment: Experiment =
            toml::from_str(text).map_err(|error| at(error.span(), error.message().to_string()))?;
        let stem = std::path::Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if experiment.name.get_ref() != stem && !stem.is_empty() && file.ends_with(".toml") {
            return Err(at(
                Some(experiment.name.span()),
                format!(
                    "expected the name to be the file's, {stem:?}, got {:?}",
                    experiment.name.get_ref()
                ),
            ));
        }
        if experiment.phases.is_empty() {
            return Err(at(None, "expected at least one [[phase]]".to_string()));
        }
        if experiment.hypotheses.is_empty() {
            return Err(at(None, "expected at least one [[hypothesis]]".to_string()));
        }
        let mut names: Vec<&str> = Vec::new();
        for phase in &experiment.phases {
            let name = phase.name.get_ref().as_str();
            if names.contains(&name) || name == "run" || name == "end" {
                return Err(at(
                    Some(phase.name.span()),
                    format!(
                        "expected a phase name of its own (not run, end or another's), got {name:?}"
                    ),
                ));
            }
            names.push(name);
            check_length(&at, &phase.duration)?;
            check_load(&at, &phase.load)?;
            check_settings(&at, &phase.settings)?;
        }
        check_length(&at, &experiment.steady.duration)?;
        check_load(&at, &experiment.steady.load)?;
        check_settings(&at, &experiment.steady.settings)?;
        let names: Vec<String> = names.into_iter().map(str::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for check in &mut experiment.steady.checks {
            check.read = Some((check.subject(&at, slos)?, During::Run));
        }
        for hypothesis in experiment
            .hypotheses
            .iter()
            .chain(&experiment.steady.checks)
        {
            for bound in [&hypothesis.at_least, &hypothesis.at_most]
                .into_iter()
                .flatten()
            {
                if let Bound::Times(_, Reference::Phase(phase)) = bound.get_ref()
                    && !names.contains(&phase.as_str())
                {
                    return Err(at(
                        Some(bound.span()),
                        format!(
                            "expected \"<factor>x\" and steady, a phase ({}), payment_delay or \
                             email_delay; got {phase:?}",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        for hypothesis in &mut experiment.hypotheses {
            hypothesis.read = Some((
                hypothesis.subject(&at, slos)?,
                hypothesis.during(&at, &names)?,
            ));
        }
        Ok(experiment)
    }

    /// The timeline's length, the steady state's twice (before and after) included.
    pub fn length(&self) -> Duration {
        self.phases
            .iter()
            .map(|p| p.duration.get_ref().0)
            .sum::<Duration>()
            + self.steady.duration.get_ref().0 * 2
    }
}

type At<'a> = dyn Fn(Option<Range<usize>>, String) -> SchemaError + 'a;

fn check_length(at: &At<'_>, length: &Spanned<Length>) -> Result<(), SchemaError> {
    if length.get_ref().0 < Duration::from_secs(1) {
        return Err(at(
            Some(length.span()),
            "expected a duration of a second or more".to_string(),
        ));
    }
    Ok(())
}

fn check_load(at: &At<'_>, load: &Load) -> Result<(), SchemaError> {
    if let Some(scenario) = &load.scenario
        && !SCENARIOS.contains(&scenario.get_ref().as_str())
    {
        return Err(at(
            Some(scenario.span()),
            format!(
                "expected a scenario, one of {}; got {:?}",
                SCENARIOS.join(", "),
                scenario.get_ref()
            ),
        ));
    }
    for (name, value) in [
        ("checkout_ratio", &load.checkout_ratio),
        ("hot_product_share", &load.hot_product_share),
    ] {
        if let Some(value) = value
            && !(0.0..=1.0).contains(value.get_ref())
        {
            return Err(at(
                Some(value.span()),
                format!("expected {name} between 0 and 1, got {}", value.get_ref()),
            ));
        }
    }
    Ok(())
}

/// The fault settings a phase may set, and what each takes.
const FAULTS: [(&str, &str); 7] = [
    ("payment_delay_ms", "a whole number of milliseconds"),
    ("payment_success_rate", "a number from 0 to 1"),
    ("payment_flap_rate", "a number from 0 to 1"),
    (
        "payment_capacity",
        "a whole number of calls a second (0 is unlimited)",
    ),
    ("email_delay_ms", "a whole number of milliseconds"),
    ("email_outage", "true or false"),
    ("email_hang", "true or false"),
];

fn check_settings(at: &At<'_>, settings: &Settings) -> Result<(), SchemaError> {
    if let Some(mode) = &settings.checkout_mode
        && !["blocking", "async"].contains(&mode.get_ref().as_str())
    {
        return Err(at(
            Some(mode.span()),
            format!(
                "expected checkout_mode blocking or async, got {:?}",
                mode.get_ref()
            ),
        ));
    }
    for (name, value) in &settings.faults {
        let Some((_, expected)) = FAULTS.iter().find(|(fault, _)| fault == name) else {
            let known: Vec<&str> = FAULTS.iter().map(|(f, _)| *f).collect();
            return Err(at(
                Some(value.span()),
                format!(
                    "expected a fault setting, one of {}; got {name:?}",
                    known.join(", ")
                ),
            ));
        };
        let fits = match (name.as_str(), value.get_ref()) {
            ("email_outage" | "email_hang", toml::Value::Boolean(_)) => true,
            ("payment_success_rate" | "payment_flap_rate", toml::Value::Float(f)) => {
                (0.0..=1.0).contains(f)
            }
            ("payment_success_rate" | "payment_flap_rate", toml::Value::Integer(i)) => {
                (0..=1).contains(i)
            }
            ("payment_delay_ms" | "email_delay_ms", toml::Value::Integer(i)) => *i >= 0,
            ("payment_capacity", toml::Value::Integer(i)) => (0..=10_000).contains(i),
            _ => false,
        };
        if !fits {
            return Err(at(
                Some(value.span()),
                format!("expected {name} to be {expected}, got {}", value.get_ref()),
            ));
        }
    }
    if let Some(update) = &settings.resilience
        && let Some(problem) = ResilienceSettings::OFF
            .with(update.get_ref())
            .problems()
            .first()
    {
        return Err(at(
            Some(update.span()),
            format!("expected resilience.{}: {}", problem.field, problem.message),
        ));
    }
    Ok(())
}

impl Hypothesis {
    /// What the hypothesis looks at; an error where it says none, or two, or an
    /// unknown one.
    fn subject(&self, at: &At<'_>, slos: &[&str]) -> Result<Subject, SchemaError> {
        let span = Some(self.name.span());
        let said = [
            self.metric.is_some(),
            self.client.is_some(),
            self.slo.is_some(),
            self.alert.is_some(),
            self.ledger.is_some(),
            self.orders.is_some(),
            self.stock.is_some(),
        ];
        if said.iter().filter(|s| **s).count() != 1 {
            return Err(at(
                span,
                format!(
                    "expected exactly one of metric, client, slo, alert, ledger, orders, stock in {:?}",
                    self.name.get_ref()
                ),
            ));
        }
        let bounded = self.at_least.is_some() || self.at_most.is_some();
        let needs_bound = |what: &str| -> Result<(), SchemaError> {
            if bounded {
                Ok(())
            } else {
                Err(at(
                    span.clone(),
                    format!(
                        "expected at_least or at_most for the {what} of {:?}",
                        self.name.get_ref()
                    ),
                ))
            }
        };
        if let Some(metric) = &self.metric {
            needs_bound("metric")?;
            let stat = self.stat.as_ref().ok_or_else(|| {
                at(Some(metric.span()), "expected a stat (p50, p90, p95, p99, rate, increase, max, last) for the metric".to_string())
            })?;
            let parsed = match stat.get_ref().as_str() {
                "p50" => Stat::Quantile(0.5),
                "p90" => Stat::Quantile(0.9),
                "p95" => Stat::Quantile(0.95),
                "p99" => Stat::Quantile(0.99),
                "rate" => Stat::Rate,
                "increase" => Stat::Increase,
                "max" => Stat::Max,
                "last" => Stat::Last,
                other => {
                    return Err(at(
                        Some(stat.span()),
                        format!(
                            "expected a stat, one of p50, p90, p95, p99, rate, increase, max, last; got {other:?}"
                        ),
                    ));
                }
            };
            let at_end = self.during.as_ref().is_some_and(|d| d.get_ref() == "end");
            if at_end && parsed != Stat::Last {
                return Err(at(
                    Some(stat.span()),
                    "expected stat = \"last\" for a metric judged at the end (the state the timeline leaves)".to_string(),
                ));
            }
            return Ok(Subject::Metric {
                name: metric.get_ref().clone(),
                labels: self.labels.clone(),
                stat: parsed,
                within: self.within.map(|l| l.0),
            });
        }
        if let Some(client) = &self.client {
            needs_bound("client figure")?;
            if !CLIENT_FIGURES.contains(&client.get_ref().as_str()) {
                return Err(at(
                    Some(client.span()),
                    format!(
                        "expected a client figure, one of {}; got {:?}",
                        CLIENT_FIGURES.join(", "),
                        client.get_ref()
                    ),
                ));
            }
            return Ok(Subject::Client(client.get_ref().clone()));
        }
        if let Some(slo) = &self.slo {
            if !slos.contains(&slo.get_ref().as_str()) {
                return Err(at(
                    Some(slo.span()),
                    format!(
                        "expected an SLO of slo.yml, one of {}; got {:?}",
                        slos.join(", "),
                        slo.get_ref()
                    ),
                ));
            }
            let verdict = self.verdict.as_ref().ok_or_else(|| {
                at(
                    Some(slo.span()),
                    "expected a verdict, held or broken, for the SLO".to_string(),
                )
            })?;
            let held = match verdict.get_ref().as_str() {
                "held" => true,
                "broken" => false,
                other => {
                    return Err(at(
                        Some(verdict.span()),
                        format!("expected the verdict held or broken, got {other:?}"),
                    ));
                }
            };
            return Ok(Subject::Slo {
                slo: slo.get_ref().clone(),
                held,
            });
        }
        if let Some(alert) = &self.alert {
            let fires = self.fires.ok_or_else(|| {
                at(
                    span.clone(),
                    format!("expected fires = true or false for the alert {alert}"),
                )
            })?;
            return Ok(Subject::Alert {
                name: alert.clone(),
                fires,
                within: self.within.map(|l| l.0),
            });
        }
        if let Some(ledger) = &self.ledger {
            if !LEDGER_FIGURES.contains(&ledger.get_ref().as_str()) {
                return Err(at(
                    Some(ledger.span()),
                    format!(
                        "expected a ledger figure, one of {}; got {:?}",
                        LEDGER_FIGURES.join(", "),
                        ledger.get_ref()
                    ),
                ));
            }
            if ledger.get_ref() != "balanced" {
                needs_bound("ledger figure")?;
            }
            return Ok(Subject::Ledger(ledger.get_ref().clone()));
        }
        if let Some(status) = &self.orders {
            needs_bound("order count")?;
            return Ok(Subject::Orders {
                status: status.get_ref().clone(),
                within: self.within.map(|l| l.0),
            });
        }
        let stock = self.stock.as_ref().map(|s| (s.get_ref().clone(), s.span()));
        match stock {
            Some((kind, _)) if kind == "not_negative" => Ok(Subject::StockNotNegative),
            Some((kind, span)) => Err(at(
                Some(span),
                format!("expected stock = \"not_negative\", got {kind:?}"),
            )),
            None => Err(at(
                span,
                "expected what the hypothesis looks at".to_string(),
            )),
        }
    }

    /// Where it is judged; an error naming the phases when `during` names none.
    fn during(&self, at: &At<'_>, phases: &[&str]) -> Result<During, SchemaError> {
        match &self.during {
            None => Ok(During::Run),
            Some(during) => match during.get_ref().as_str() {
                "run" => Ok(During::Run),
                "end" => Ok(During::End),
                phase if phases.contains(&phase) => Ok(During::Phase(phase.to_string())),
                other => Err(at(
                    Some(during.span()),
                    format!(
                        "expected during to be run, end or a phase ({}); got {other:?}",
                        phases.join(", ")
                    ),
                )),
            },
        }
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
