//! The lab, played as a learner plays it: every shipped experiment in its quick form
//! against the real binary, judged by its own hypotheses; a lesson the service does not
//! teach (a pool too large to starve) fails, with the figure that says so; Ctrl-C in
//! the middle of a fault puts the service back as the run found it.
//!
//! The experiments measure the service, so they take the machine one at a time (a lock)
//! in a test binary of their own (cargo runs test binaries one after another).

#[path = "../api/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../api/otlp.rs"]
#[allow(dead_code)]
mod otlp;

use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, eventually, expect_json, spawn_process};

/// One experiment at a time: each measures latencies.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A shop of its own, seeded, on the real binary.
async fn shop(overrides: &[(&str, &str)]) -> TestApp {
    let app = spawn_process(overrides).await;
    app.seed().await;
    app
}

/// `ecommerce-monolith lab run …` against `app`, as its admin, with the journal
/// written as JSON.
fn lab_run(app: &TestApp, experiment: &str, extra: &[&str]) -> tokio::process::Command {
    let journal = journal_path(experiment);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecommerce-monolith"));
    command
        .args(["lab", "run", experiment, "--base-url", &app.address])
        .arg("--json")
        .arg(&journal)
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OTEL_SDK_DISABLED", "true")
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn journal_path(experiment: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lab-{experiment}-{}.json", std::process::id()))
}

fn journal_of(experiment: &str) -> Value {
    let text = std::fs::read_to_string(journal_path(experiment)).expect("the journal was written");
    serde_json::from_str(&text).expect("the journal is JSON")
}

fn said(output: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The faults, the checkout mode and the resilience rungs in force (asked with the
/// admin's token: logging in at every poll would meet the login throttle).
async fn settings(app: &TestApp, admin: &str) -> (Value, Value, Value) {
    let faults = expect_json(
        app.get("/api/admin/faults", Some(admin)).await,
        StatusCode::OK,
    )
    .await;
    let mode = expect_json(
        app.get("/api/admin/checkout-mode", Some(admin)).await,
        StatusCode::OK,
    )
    .await;
    let resilience = expect_json(
        app.get("/api/admin/resilience", Some(admin)).await,
        StatusCode::OK,
    )
    .await;
    (faults, mode["mode"].clone(), resilience)
}

async fn running_phase(app: &TestApp) -> Value {
    expect_json(app.get("/api/lab", None).await, StatusCode::OK).await["running"].clone()
}

/// The quick form of `experiment`, played and judged: exit 0, every hypothesis held or
/// skipped (an alert, which --quick cannot judge), the service put back as found.
async fn plays_and_holds(experiment: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = shop(&[]).await;
    let admin = app.admin_token().await;
    let found = settings(&app, &admin).await;
    let output = lab_run(&app, experiment, &["--quick"])
        .output()
        .await
        .expect("the lab runs");
    assert!(output.status.success(), "{experiment}:\n{}", said(&output));

    let journal = journal_of(experiment);
    assert_eq!(journal["experiment"]["name"], experiment);
    assert_eq!(journal["experiment"]["quick"], true);
    let hypotheses = journal["hypotheses"].as_array().expect("hypotheses");
    let held = hypotheses.iter().filter(|h| h["held"] == true).count();
    assert!(
        held >= 2,
        "{experiment}: judged on something: {hypotheses:#?}"
    );
    for hypothesis in hypotheses {
        assert!(hypothesis["name"].is_string() && hypothesis["observed"].is_string());
        assert_ne!(hypothesis["held"], false, "{experiment}: {hypothesis:#}");
        if hypothesis["held"].is_null() {
            // Only what the quick form cannot judge is skipped: an alert's `for:`.
            assert!(
                hypothesis["observed"]
                    .as_str()
                    .is_some_and(|o| o.contains("not judged in --quick")),
                "{experiment}: {hypothesis:#}"
            );
        }
    }
    let phases: Vec<&str> = journal["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(phases.first(), Some(&"steady (before)"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"steady (after)"), "{phases:?}");
    assert!(phases.len() >= 3, "{phases:?}");

    assert_eq!(
        settings(&app, &admin).await,
        found,
        "{experiment} put the service back"
    );
    assert_eq!(running_phase(&app).await, Value::Null, "the banner is gone");
}

macro_rules! every_shipped_experiment {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                plays_and_holds($name).await;
            }
        )*

        /// The experiments played above.
        const PLAYED: &[&str] = &[$($name),*];
    };
}

every_shipped_experiment! {
    where_the_time_goes_holds => "where-the-time-goes",
    row_locks_holds => "row-locks",
    pool_exhaustion_holds => "pool-exhaustion",
    payment_failures_hold => "payment-failures",
    mail_outage_holds => "mail-outage",
    the_cure_holds => "the-cure",
    slo_burn_holds => "slo-burn",
    impatient_retries_hold => "impatient-retries",
    hot_product_sellout_holds => "hot-product-sellout",
    mail_hang_timeout_holds => "mail-hang-timeout",
    mail_outage_breaker_holds => "mail-outage-breaker",
    payment_flap_retry_holds => "payment-flap-retry",
    payment_overload_retry_budget_holds => "payment-overload-retry-budget",
    mail_outage_fallback_holds => "mail-outage-fallback",
}

#[test]
fn every_shipped_experiment_is_played_here() {
    let mut shipped: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/lab"))
        .expect("lab/")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    shipped.sort();
    let mut played: Vec<&str> = PLAYED.to_vec();
    played.sort();
    assert_eq!(
        shipped, played,
        "a new experiment needs its line in every_shipped_experiment!"
    );
}

/// Against a pool large enough for every shopper, pool exhaustion does not happen: the
/// experiment says so (exit 1) with the figure that did not reach its bound.
#[tokio::test(flavor = "multi_thread")]
async fn a_lesson_the_service_does_not_teach_fails_with_the_figure() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = shop(&[("DB_MAX_CONNECTIONS", "80")]).await;
    let output = lab_run(&app, "pool-exhaustion", &["--quick"])
        .output()
        .await
        .expect("the lab runs");
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    let journal = journal_of("pool-exhaustion");
    let waited = journal["hypotheses"]
        .as_array()
        .expect("hypotheses")
        .iter()
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("requests wait longer"))
        })
        .expect("the pool's hypothesis")
        .clone();
    assert_eq!(waited["held"], false, "{waited:#}");
    let observed: f64 = waited["observed"]
        .as_str()
        .and_then(|o| o.trim_end_matches(" s").parse().ok())
        .expect("a figure in seconds");
    assert!(observed < 0.75, "{waited:#}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("a hypothesis did not hold") && stdout.contains("✗ requests wait longer"),
        "{stdout}"
    );
}

/// Ctrl-C while the mail server is down: the run stops, says so (exit 1), and leaves the
/// faults and the mode as they were before it began — not the steady state's.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_a_fault_phase_puts_the_service_back_as_it_was() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = shop(&[]).await;
    let admin = app.admin_token().await;
    let found = json!({
        "payment_delay_ms": 150,
        "payment_success_rate": 0.9,
        "email_delay_ms": 250,
        "email_outage": false,
    });
    expect_json(
        app.put("/api/admin/faults", Some(&admin), &found).await,
        StatusCode::OK,
    )
    .await;
    app.set_checkout_mode(&admin, "async").await;
    let before = settings(&app, &admin).await;

    let child = lab_run(&app, "mail-outage", &[])
        .spawn()
        .expect("the lab runs");
    // The fault phase: announced, and the mail server down.
    eventually(Duration::from_secs(90), "the outage phase", || async {
        let phase = running_phase(&app).await;
        let (faults, mode, _) = settings(&app, &admin).await;
        (phase["phase"] == "outage" && faults["email_outage"] == true && mode == "blocking")
            .then_some(())
    })
    .await;
    let pid = child.id().expect("running").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the lab stops promptly on Ctrl-C")
        .expect("output");
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("interrupted"),
        "{}",
        said(&output)
    );

    assert_eq!(settings(&app, &admin).await, before, "{}", said(&output));
    assert_eq!(running_phase(&app).await, Value::Null);
    let journal = journal_of("mail-outage");
    assert_eq!(journal["experiment"]["outcome"], "interrupted");
    assert!(
        journal["hypotheses"]
            .as_array()
            .expect("hypotheses")
            .iter()
            .all(|h| h["held"].is_null()),
        "nothing is judged on half a run: {journal:#}"
    );
}

/// The journal names each phase's slowest checkout by its trace (from the exemplars of
/// `checkout_duration_seconds`), and that trace is one the collector received: the HTML
/// report's Jaeger link leads somewhere.
#[tokio::test(flavor = "multi_thread")]
async fn each_phase_names_its_slowest_checkout_by_a_trace_the_collector_has() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let receiver = otlp::OtlpReceiver::start().await;
    let app = helpers::traced_app(&receiver, &[]).await;
    app.seed().await;
    let output = lab_run(&app, "where-the-time-goes", &["--quick"])
        .output()
        .await
        .expect("the lab runs");
    assert!(output.status.success(), "{}", said(&output));
    let journal = journal_of("where-the-time-goes");
    let shopping = journal["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|phase| phase["name"] == "shopping")
        .expect("the shopping phase")
        .clone();
    let trace = shopping["slowest_checkout_trace"]
        .as_str()
        .unwrap_or_else(|| panic!("no slowest checkout: {shopping:#}"))
        .to_string();
    assert_eq!(trace.len(), 32, "{trace}");
    let spans = receiver
        .wait_for_trace(&trace, "checkout.process_payment")
        .await;
    assert!(
        spans.iter().any(|span| span.name == "checkout.send_email"),
        "the slowest checkout's trace is whole: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}
