//! `promtool check metrics` accepts what `/metrics` exposes.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;

use crate::helpers::{expect_json, spawn_process};
use crate::require::{PROMETHEUS_PACKAGE, tool_available};

#[tokio::test(flavor = "multi_thread")]
async fn promtool_finds_nothing_to_complain_about() {
    let app = spawn_process(&[("PAYMENT_SUCCESS_RATE", "0.5")]).await;
    let admin = app.admin_token().await;
    let alice = app.customer("alice@example.com").await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 50).await;
    for _ in 0..4 {
        expect_json(
            app.add_to_cart(&alice, kettle, 1).await,
            StatusCode::CREATED,
        )
        .await;
        let _ = app.checkout(&alice).await;
    }
    let text = app.metrics().await;
    if !tool_available("promtool", PROMETHEUS_PACKAGE) {
        return;
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed; .ci/run installs it");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let output = promtool.wait_with_output().expect("promtool ran");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {complaints}");
    assert!(complaints.trim().is_empty(), "promtool: {complaints}");
}
