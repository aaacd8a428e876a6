//! The OpenAPI document is the contract: schemathesis (from PyPI) generates requests
//! from it — examples, boundary values, fuzzing, and stateful sequences through its
//! links — runs every check on the answers, and must find nothing.

use reqwest::StatusCode;

use crate::helpers::{TestApp, expect_json, spawn_process};
use crate::require::tool_available;

const CONFIG: &str = "tests/contract/schemathesis.toml";

/// Whether schemathesis.toml's stateful phase should run (sequences through the
/// document's links) or is turned off for this selection.
#[derive(PartialEq)]
enum Stateful {
    Runs,
    Off,
}

/// How many scenarios the stateful phase ran, from schemathesis' report (`✅  Stateful
/// (in 1.68s)` and then `Scenarios:    46`); `None` when it did not run ("Stateful (not
/// applicable)", "(disabled)", "(skipped)").
fn stateful_scenarios(report: &str) -> Option<u32> {
    let mut lines = report
        .lines()
        .skip_while(|line| !line.contains("Stateful (in "));
    lines.next()?;
    lines
        .take(4)
        .find_map(|line| line.trim().strip_prefix("Scenarios:"))
        .and_then(|count| count.trim().parse().ok())
}

/// Runs schemathesis on some operations of `app` as the admin; panics with its report
/// if it finds anything, or if the stateful phase that should run did not.
async fn schemathesis(app: &TestApp, token: &str, selection: &[&str], stateful: Stateful) {
    let output = tokio::process::Command::new("st")
        .args(["--config-file", CONFIG, "run"])
        .arg(format!("{}/openapi.json", app.address))
        .args(["--checks", "all", "--seed", "1", "--no-color"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(selection)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis {selection:?} found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if stateful == Stateful::Runs {
        let scenarios = stateful_scenarios(&report);
        assert!(
            scenarios.is_some_and(|count| count > 0),
            "the stateful phase ran scenarios ({scenarios:?}):\n{report}"
        );
    }
    println!(
        "{}",
        report.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_against_the_openapi_document() {
    if !tool_available("st", "pip install schemathesis") {
        return;
    }
    // Every payment approved and a mail server that answers: a 5xx is a defect here.
    let app = spawn_process(&[("PAYMENT_SUCCESS_RATE", "1"), ("EMAIL_DELAY_MS", "0")]).await;
    app.seed().await;
    let admin = app.admin_token().await;
    // Something to follow the document's links from: an order and a notification.
    let product = app
        .create_product(&admin, "Fuzzed Kettle", "19.99", 1000)
        .await;
    expect_json(
        app.add_to_cart(&admin, product, 1).await,
        StatusCode::CREATED,
    )
    .await;
    expect_json(app.checkout(&admin).await, StatusCode::CREATED).await;

    // Changing the faults would make the next checkouts fail or wait for a minute, so
    // they are exercised in a run of their own, after everything else.
    schemathesis(
        &app,
        &admin,
        &["--exclude-path", "/api/admin/faults"],
        Stateful::Runs,
    )
    .await;
    // No link leads to or from them: the stateful phase has nothing to follow.
    schemathesis(
        &app,
        &admin,
        &[
            "--include-path",
            "/api/admin/faults",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        Stateful::Off,
    )
    .await;
}

#[test]
fn the_stateful_phase_is_told_from_its_report() {
    let ran = " ✅  Fuzzing (in 10.42s)\n     ✅ 33 passed\n ✅  Stateful (in 1.68s)\n     \
               Scenarios:    46\n     API Links:    5 covered\n";
    assert_eq!(stateful_scenarios(ran), Some(46));
    let not_applicable = " ✅  Fuzzing (in 1s)\n ⏭  Stateful (not applicable)\n\
                          Test Phases:\n  ⏭  Stateful\n";
    assert_eq!(stateful_scenarios(not_applicable), None);
    let none = " ✅  Stateful (in 0.01s)\n     Scenarios:    0\n";
    assert_eq!(stateful_scenarios(none), Some(0));
}
