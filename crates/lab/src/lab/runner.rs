//! Plays an experiment: the steady state, checked; the phases, each with its settings,
//! actions and load, announced to the service and watched on its `/metrics`; the
//! steady state again; then the verdicts. Whatever happens — a hypothesis broken, an
//! error, Ctrl-C — every setting the run touched is put back as it found it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::args::{RunArgs, Scale};
use super::experiment::{Action, Experiment, Hypothesis, Load, Settings};
use super::journal::{self, Journal, PhaseRecord};
use super::judge::{self, Observed};
use super::scrape::Scrape;
use crate::client::ApiClient;
use crate::loadgen::{self, LoadgenArgs, Scenario};
use ecommerce_monolith::domain::ResilienceUpdate;
use toml::Spanned;

/// The longest a phase's end waits for the checkouts still in flight.
const SETTLE_AT_MOST: Duration = Duration::from_secs(30);
/// How often a phase reads the service's `/metrics` (and Prometheus' alerts).
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What the service is, for the run: its client, the admin's token, and the settings as
/// the run found them (to put back).
struct Service {
    client: ApiClient,
    admin: String,
    base_url: String,
    admin_email: String,
    admin_password: String,
    faults_before: Value,
    mode_before: Value,
    resilience_before: Value,
    /// The run's scale: an impatient shopper's patience follows the delays.
    scale: Scale,
}

pub async fn run(experiment: Experiment, args: RunArgs) -> ExitCode {
    let (Some(email), Some(password)) = (args.admin_email.clone(), args.admin_password.clone())
    else {
        eprintln!(
            "error: an experiment changes the service's settings: it needs the admin account \
             (--admin-email/--admin-password or ADMIN_EMAIL/ADMIN_PASSWORD)"
        );
        return ExitCode::from(2);
    };
    let scale = Scale::of(&experiment, args.quick);
    print!("{}", journal::introduce(&experiment, scale, args.quick));
    let service = match Service::connect(&args, email, password, scale).await {
        Ok(service) => service,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(1);
        }
    };
    let (interrupt, interrupted) = watch::channel(false);
    tokio::spawn(async move {
        ecommerce_monolith::shutdown::shutdown_signal().await;
        let _ = interrupt.send(true);
    });
    let started = SystemTime::now();
    let played = play(&experiment, &args, &service, scale, interrupted.clone()).await;
    // Whatever happened, the service goes back to the settings the run found.
    let rolled_back = service.roll_back().await;
    let mut journal = match played {
        Ok(journal) => journal,
        Err(error) => Journal::failed(&experiment, args.quick, started, format!("{error:#}")),
    };
    journal.rolled_back = rolled_back;
    if *interrupted.borrow() {
        journal.interrupted();
    }
    print!("{}", journal.render_text());
    if let Err(error) = journal.write(args.json.as_deref(), args.html.as_deref(), &args) {
        eprintln!("error: {error:#}");
    }
    if journal.all_held() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The run proper: the steady state, the phases, the steady state again, the verdicts.
async fn play(
    experiment: &Experiment,
    args: &RunArgs,
    service: &Service,
    scale: Scale,
    interrupted: watch::Receiver<bool>,
) -> anyhow::Result<Journal> {
    let mut journal = Journal::new(experiment, args.quick, SystemTime::now());
    let watched: Vec<&Hypothesis> = experiment.hypotheses.iter().collect();
    let steady_settings = service.steady_settings(&experiment.steady.settings, scale);

    // The steady state, before.
    let steady_delays = service
        .apply(&steady_settings, &Settings::default(), scale)
        .await?;
    let mut before = watch_phase(
        service,
        args,
        experiment,
        "steady (before)",
        scale.duration(experiment.steady.duration.get_ref().0),
        &experiment.steady.load,
        &experiment.steady.checks.iter().collect::<Vec<_>>(),
        (0, experiment.phases.len() + 2),
        interrupted.clone(),
    )
    .await?;
    before.delays = steady_delays;
    before.settings = describe_settings(&experiment.steady.settings, scale);
    journal.steady_before = judge::steady(&experiment.steady.checks, &before, None);
    let steady_holds = journal.steady_before.iter().all(|v| v.held != Some(false));
    journal.phases.push(before.clone());
    if !steady_holds || *interrupted.borrow() {
        journal.steady_broken = !steady_holds;
        service.announce(None).await;
        return Ok(journal);
    }

    // The timeline.
    for (index, phase) in experiment.phases.iter().enumerate() {
        if *interrupted.borrow() {
            break;
        }
        let delays = service
            .apply(&steady_settings, &phase.settings, scale)
            .await?;
        for action in &phase.actions {
            service.act(*action.get_ref()).await?;
        }
        let watching: Vec<&Hypothesis> = watched
            .iter()
            .copied()
            .filter(|h| {
                h.during.as_ref().map(|d| d.get_ref().as_str())
                    == Some(phase.name.get_ref().as_str())
            })
            .collect();
        let mut record = watch_phase(
            service,
            args,
            experiment,
            phase.name.get_ref(),
            scale.duration(phase.duration.get_ref().0),
            &phase.load,
            &watching,
            (index + 1, experiment.phases.len() + 2),
            interrupted.clone(),
        )
        .await?;
        record.settings = describe_settings(&phase.settings, scale);
        record.delays = delays;
        record.actions = phase
            .actions
            .iter()
            .map(|a| format!("{:?}", a.get_ref()).to_lowercase())
            .collect();
        journal.phases.push(record);
    }
    let end = service.observe_end().await;

    // Judged now, before the steady state after changes what the service holds.
    let observed = Observed {
        steady: &before,
        phases: &journal.phases[1..],
        end: &end,
        scale,
    };
    let mut verdicts = Vec::new();
    for hypothesis in &experiment.hypotheses {
        verdicts.push(
            judge::hypothesis(hypothesis, &observed, service.probe(), &interrupted, args).await,
        );
    }
    journal.hypotheses = verdicts;

    // The steady state, after: the service recovered.
    if !*interrupted.borrow() {
        let delays = service
            .apply(&steady_settings, &Settings::default(), scale)
            .await?;
        let mut after = watch_phase(
            service,
            args,
            experiment,
            "steady (after)",
            scale.duration(experiment.steady.duration.get_ref().0),
            &experiment.steady.load,
            &experiment.steady.checks.iter().collect::<Vec<_>>(),
            (experiment.phases.len() + 1, experiment.phases.len() + 2),
            interrupted.clone(),
        )
        .await?;
        after.delays = delays;
        after.settings = describe_settings(&experiment.steady.settings, scale);
        journal.steady_after = judge::steady(&experiment.steady.checks, &after, Some(&before));
        journal.phases.push(after);
    }
    service.announce(None).await;
    journal.ended_at = SystemTime::now();
    Ok(journal)
}

/// One stretch of the run under one load: announced, loaded, and watched — the
/// service's `/metrics` (and Prometheus' alerts) read every few seconds, a progress bar
/// with the time left and the figures the hypotheses watch.
#[allow(clippy::too_many_arguments)]
async fn watch_phase(
    service: &Service,
    args: &RunArgs,
    experiment: &Experiment,
    name: &str,
    duration: Duration,
    load: &Load,
    watching: &[&Hypothesis],
    (position, of): (usize, usize),
    mut interrupted: watch::Receiver<bool>,
) -> anyhow::Result<PhaseRecord> {
    let started_at = SystemTime::now();
    service
        .announce(Some((experiment, name, position, of, duration)))
        .await;
    let ledger_before = service.ledger().await.ok();
    let exemplars_before = service.checkout_exemplars().await;
    let signed_up = Arc::new(Notify::new());
    let mut load_task = (load.shoppers > 0).then(|| {
        let mut args = service.loadgen_args(load, duration);
        args.interrupt = Some(interrupted.clone());
        args.signed_up = Some(signed_up.clone());
        tokio::spawn(async move { loadgen::measure(&args).await })
    });
    // The phase is watched from when its shoppers have signed up: thirty sign-ups are
    // sixty password hashes, a second of CPU that is no part of the lesson.
    let mut ended_early = None;
    if let Some(task) = &mut load_task {
        tokio::select! {
            () = signed_up.notified() => {}
            _ = interrupted.changed() => {}
            // A load that ended before it began (the service unreachable) says why below.
            ended = task => ended_early = Some(ended),
        }
    }
    let mut scrapes = vec![service.scrape().await?];
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>18.bold} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    let started = Instant::now();
    let mut alerts_fired: BTreeMap<String, Duration> = BTreeMap::new();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= duration || *interrupted.borrow() {
            break;
        }
        bar.set_position(elapsed.as_millis() as u64);
        let left = duration - elapsed;
        let figures = judge::watched_figures(watching, &scrapes, started.elapsed().as_secs_f64());
        bar.set_message(format!("{} left  {figures}", clock(left)));
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY.min(left)) => {}
            _ = interrupted.changed() => break,
        }
        if let Ok(scrape) = service.scrape().await {
            scrapes.push(scrape);
        }
        if let Some(prometheus) = &args.prometheus_url {
            let since = chrono::DateTime::<chrono::Utc>::from(started_at);
            for alert in judge::firing_alerts(prometheus, since).await {
                alerts_fired
                    .entry(alert)
                    .or_insert_with(|| started.elapsed());
            }
        }
    }
    bar.finish_and_clear();
    let report = match (ended_early, load_task) {
        (Some(ended), _) => Some(ended??),
        (None, Some(task)) => Some(task.await??),
        (None, None) => None,
    };
    // Checkouts a shopper gave up on still run: the ledger is read once they are done.
    service.settle().await;
    scrapes.push(service.scrape().await?);
    let ledger_after = service.ledger().await.ok();
    let slowest_checkout = service.slowest_checkout_trace(&exemplars_before).await;
    let ended_at = SystemTime::now();
    println!(
        "  {name}: {} — {}",
        clock(started.elapsed()),
        journal::phase_summary(report.as_ref())
    );
    Ok(PhaseRecord {
        name: name.to_string(),
        started_at,
        ended_at,
        seconds: started.elapsed().as_secs_f64(),
        scrapes: Arc::new(scrapes),
        report,
        ledger_before,
        ledger_after,
        alerts_fired,
        slowest_checkout,
        settings: Vec::new(),
        actions: Vec::new(),
        delays: (0.0, 0.0),
    })
}

/// `into` with the fields of `update` that are set: an object merged into an object.
fn merge(into: &mut Value, update: Option<&ResilienceUpdate>) {
    let Some(Value::Object(update)) = update.and_then(|u| serde_json::to_value(u).ok()) else {
        return;
    };
    for (dependency, policy) in update {
        let Value::Object(policy) = policy else {
            continue;
        };
        for (field, value) in policy.into_iter().filter(|(_, v)| !v.is_null()) {
            into[&dependency][field] = value;
        }
    }
}

fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

impl Service {
    async fn connect(
        args: &RunArgs,
        email: String,
        password: String,
        scale: Scale,
    ) -> anyhow::Result<Self> {
        let client = ApiClient::new(&args.base_url, Duration::from_secs(30))?;
        let admin = client.login(&email, &password).await?;
        let faults_before = client
            .send(Method::GET, "/api/admin/faults", Some(&admin), None)
            .await?
            .body;
        let mode_before = client
            .send(Method::GET, "/api/admin/checkout-mode", Some(&admin), None)
            .await?
            .body;
        let resilience_before = client
            .send(Method::GET, "/api/admin/resilience", Some(&admin), None)
            .await?
            .body;
        anyhow::ensure!(
            faults_before.is_object()
                && mode_before["mode"].is_string()
                && resilience_before.is_object(),
            "the service at {} did not tell its settings",
            args.base_url
        );
        Ok(Self {
            client,
            admin,
            base_url: args.base_url.clone(),
            admin_email: email,
            admin_password: password,
            faults_before,
            mode_before,
            resilience_before,
            scale,
        })
    }

    /// The faults and mode the steady state runs with: the file's, the rest as the run
    /// found them; delays scaled (`--quick`).
    fn steady_settings(&self, settings: &Settings, scale: Scale) -> Value {
        let mut faults = self.faults_before.clone();
        for (name, value) in &settings.faults {
            faults[name] = toml_to_json(value.get_ref());
        }
        for delay in ["payment_delay_ms", "email_delay_ms"] {
            if let Some(ms) = faults[delay].as_f64() {
                faults[delay] = json!((ms * scale.delays).round() as u64);
            }
        }
        let mode = settings
            .checkout_mode
            .as_ref()
            .map_or(self.mode_before["mode"].clone(), |m| json!(m.get_ref()));
        let mut resilience = self.resilience_before.clone();
        merge(
            &mut resilience,
            settings.resilience.as_ref().map(Spanned::get_ref),
        );
        json!({"faults": faults, "mode": mode, "resilience": resilience})
    }

    /// Puts the steady state's settings in force, with `phase`'s on top (delays scaled);
    /// returns the delays now in force, in seconds.
    async fn apply(
        &self,
        steady: &Value,
        phase: &Settings,
        scale: Scale,
    ) -> anyhow::Result<(f64, f64)> {
        let mut faults = steady["faults"].clone();
        for (name, value) in &phase.faults {
            let mut value = toml_to_json(value.get_ref());
            if name.ends_with("_delay_ms")
                && let Some(ms) = value.as_f64()
            {
                value = json!((ms * scale.delays).round() as u64);
            }
            faults[name] = value;
        }
        self.put("/api/admin/faults", &faults).await?;
        let mut resilience = steady["resilience"].clone();
        merge(
            &mut resilience,
            phase.resilience.as_ref().map(Spanned::get_ref),
        );
        self.put("/api/admin/resilience", &resilience).await?;
        let mode = phase
            .checkout_mode
            .as_ref()
            .map_or(steady["mode"].clone(), |m| json!(m.get_ref()));
        self.put("/api/admin/checkout-mode", &json!({"mode": mode}))
            .await?;
        let seconds = |name: &str| faults[name].as_f64().unwrap_or(0.0) / 1000.0;
        Ok((seconds("payment_delay_ms"), seconds("email_delay_ms")))
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let answer = self
            .client
            .send(Method::PUT, path, Some(&self.admin), Some(body))
            .await?;
        anyhow::ensure!(
            answer.status == StatusCode::OK,
            "PUT {path} answered {}: {}",
            answer.status,
            answer.body["detail"].as_str().unwrap_or("no detail")
        );
        Ok(())
    }

    async fn act(&self, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Restock => {
                let output = loadgen::restock_now(&self.client, &self.admin).await;
                println!("  restocked {output} products");
            }
            Action::ReplayDeadLetters => {
                let answer = self
                    .client
                    .send(
                        Method::POST,
                        "/api/admin/outbox/replay",
                        Some(&self.admin),
                        Some(&json!({})),
                    )
                    .await?;
                println!(
                    "  replayed {} dead-lettered jobs",
                    answer.body["total"].as_i64().unwrap_or(0)
                );
            }
        }
        Ok(())
    }

    /// Tells the service which experiment and phase run now (`None`: none), for its
    /// charts and its shop. A service without the endpoint is not an error.
    async fn announce(&self, now: Option<(&Experiment, &str, usize, usize, Duration)>) {
        let result = match now {
            Some((experiment, phase, position, of, duration)) => {
                let body = json!({
                    "experiment": experiment.name.get_ref(),
                    "title": experiment.title,
                    "phase": phase,
                    "position": position,
                    "phases": of,
                    "seconds": duration.as_secs_f64(),
                });
                self.client
                    .send(
                        Method::PUT,
                        "/api/admin/lab",
                        Some(&self.admin),
                        Some(&body),
                    )
                    .await
            }
            None => {
                self.client
                    .send(Method::DELETE, "/api/admin/lab", Some(&self.admin), None)
                    .await
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "could not announce the phase");
        }
    }

    /// Puts back the faults, the rungs and the checkout mode as the run found them, and
    /// clears the announcement; says what it put back.
    async fn roll_back(&self) -> Vec<String> {
        let mut done = Vec::new();
        for (what, path, before) in [
            ("faults", "/api/admin/faults", &self.faults_before),
            (
                "resilience",
                "/api/admin/resilience",
                &self.resilience_before,
            ),
        ] {
            match self.put(path, before).await {
                Ok(()) => done.push(format!("{what} {before}")),
                Err(error) => done.push(format!("{what} NOT restored: {error}")),
            }
        }
        let mode = json!({"mode": self.mode_before["mode"]});
        match self.put("/api/admin/checkout-mode", &mode).await {
            Ok(()) => done.push(format!(
                "checkout mode {}",
                self.mode_before["mode"].as_str().unwrap_or("?")
            )),
            Err(error) => done.push(format!("checkout mode NOT restored: {error}")),
        }
        self.announce(None).await;
        done
    }

    async fn scrape(&self) -> anyhow::Result<Scrape> {
        let text = self.client.text("/metrics", None).await?;
        Ok(Scrape::parse(&text))
    }

    /// The gateway's ledger against the orders, as the admin's reconciliation says.
    async fn ledger(&self) -> anyhow::Result<Value> {
        Ok(self
            .client
            .send(
                Method::GET,
                "/api/admin/reconciliation",
                Some(&self.admin),
                None,
            )
            .await?
            .body)
    }

    /// Waits (up to [`SETTLE_AT_MOST`]) until no checkout request is in flight in the
    /// service: one a shopper stopped waiting for still takes its payment and writes its
    /// order, and the ledger read before that would count its charge as one without an
    /// order.
    async fn settle(&self) {
        let started = Instant::now();
        while started.elapsed() < SETTLE_AT_MOST {
            let in_flight = self
                .scrape()
                .await
                .ok()
                .and_then(|scrape| scrape.total("checkouts_in_flight"));
            if in_flight.is_none_or(|n| n < 0.5) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the timeline left, once the checkouts in flight are done: the ledger, and
    /// the stock of every product.
    async fn observe_end(&self) -> judge::End {
        self.settle().await;
        let ledger = self.ledger().await.ok();
        let mut stock = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .client
                .send(
                    Method::GET,
                    &format!("/api/products?limit=100&offset={offset}"),
                    None,
                    None,
                )
                .await;
            let Ok(page) = page else { break };
            let items = page.body["items"].as_array().cloned().unwrap_or_default();
            stock.extend(items.iter().filter_map(|item| {
                Some((item["name"].as_str()?.to_string(), item["stock"].as_i64()?))
            }));
            offset += 100;
            if items.len() < 100 {
                break;
            }
        }
        judge::End { ledger, stock }
    }

    /// How to look at the service after the timeline (orders, metrics), polled.
    fn probe(&self) -> judge::Probe<'_> {
        judge::Probe {
            client: &self.client,
            admin: &self.admin,
        }
    }

    /// The exemplars of `checkout_duration_seconds` (OpenMetrics): per bucket, the
    /// latest checkout that fell into it — its duration and its trace.
    async fn checkout_exemplars(&self) -> BTreeMap<String, (f64, String)> {
        let Ok(text) = self
            .client
            .text("/metrics", Some("application/openmetrics-text"))
            .await
        else {
            return BTreeMap::new();
        };
        text.lines()
            .filter(|line| line.starts_with("checkout_duration_seconds_bucket"))
            .filter_map(|line| {
                let (series, exemplar) = line.split_once(" # ")?;
                let (bucket, _count) = series.rsplit_once(' ')?;
                let trace = exemplar.split("trace_id=\"").nth(1)?.split('"').next()?;
                let value: f64 = exemplar
                    .rsplit('}')
                    .next()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((bucket.to_string(), (value, trace.to_string())))
            })
            .collect()
    }

    /// The trace of the slowest checkout of a phase: of the buckets whose exemplar is new
    /// since `before` (the phase's start), the highest value's. (The exemplars carry no
    /// timestamp, so what changed is what the phase did.)
    async fn slowest_checkout_trace(
        &self,
        before: &BTreeMap<String, (f64, String)>,
    ) -> Option<String> {
        self.checkout_exemplars()
            .await
            .into_iter()
            .filter(|(bucket, (_, trace))| before.get(bucket).is_none_or(|(_, old)| old != trace))
            .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
            .map(|(_, (_, trace))| trace)
    }

    /// The load generator's settings for one phase's load.
    fn loadgen_args(&self, load: &Load, duration: Duration) -> LoadgenArgs {
        let scenario = match load.scenario.as_ref().map(|s| s.get_ref().as_str()) {
            Some("checkout") => Scenario::Checkout,
            Some("burst") => Scenario::Burst,
            Some("impatient") => Scenario::Impatient,
            _ => Scenario::Browse,
        };
        let mut args = LoadgenArgs::quiet(&self.base_url, scenario, load.shoppers, duration);
        args.rate = load.rate.unwrap_or(0.0);
        args.checkout_ratio = load
            .checkout_ratio
            .as_ref()
            .map_or(args.checkout_ratio, |r| *r.get_ref());
        args.hot_product_share = load
            .hot_product_share
            .as_ref()
            .map_or(args.hot_product_share, |s| *s.get_ref());
        // Accepted orders are followed to their end: the order-confirmation SLO needs it.
        args.no_follow = false;
        args.think_time = load.think_time.map_or(args.think_time, |t| t.0);
        args.patience = load
            .patience
            .map_or(args.patience, |t| t.0.mul_f64(self.scale.delays));
        args.idempotency_key = load.idempotency_key.unwrap_or(false);
        args.admin_email = Some(self.admin_email.clone());
        args.admin_password = Some(self.admin_password.clone());
        args
    }
}

fn describe_settings(settings: &Settings, scale: Scale) -> Vec<String> {
    let mut said = Vec::new();
    if let Some(mode) = &settings.checkout_mode {
        said.push(format!("checkout mode {}", mode.get_ref()));
    }
    for (name, value) in &settings.faults {
        let value = match (name.ends_with("_delay_ms"), value.get_ref()) {
            (true, toml::Value::Integer(ms)) => {
                format!("{}", ((*ms as f64) * scale.delays).round() as i64)
            }
            (_, other) => other.to_string(),
        };
        said.push(format!("{name} = {value}"));
    }
    said
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::Boolean(b) => json!(b),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}
