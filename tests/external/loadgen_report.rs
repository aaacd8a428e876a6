//! The load generator's HTML report is a page people can look at: headless Chromium
//! opens the file from disk (no network), and every chart is there and has lines.

use std::path::PathBuf;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, run_tool, spawn_process};
use crate::require::tool_available;

const CHARTS: [&str; 5] = [
    "latency-over-time",
    "latency-distribution",
    "outcomes-over-time",
    "checkouts-per-second",
    "response-vs-confirmed",
];

/// Headless Chromium as a user's browser, with nothing that reaches the network.
fn chromium(args: &[&str]) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4()));
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(profile);
    output
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compare_report_renders_every_chart_in_a_browser() {
    if !tool_available("chromium", "apt-get install chromium") {
        return;
    }
    let app = spawn_process(&[("PAYMENT_DELAY_MS", "100"), ("EMAIL_DELAY_MS", "100")]).await;
    app.seed().await;
    let html = std::env::temp_dir().join(format!("report-{}.html", uuid::Uuid::new_v4()));
    let output = run_tool(
        &[
            "loadgen",
            "--base-url",
            &app.address,
            "--users",
            "4",
            "--duration",
            "3s",
            "--think-time",
            "20ms",
            "--checkout-ratio",
            "1",
            "--compare",
            "--html",
            html.to_str().unwrap(),
        ],
        &[
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    for fetches in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(
            !page.contains(fetches),
            "the page fetches nothing ({fetches})"
        );
    }

    // The DOM as the browser built it from the file.
    let url = format!("file://{}", html.display());
    let dumped = chromium(&["--dump-dom", &url]);
    assert!(dumped.status.success(), "{dumped:?}");
    let dom = String::from_utf8_lossy(&dumped.stdout);
    // The verdicts come first, as k6 puts its thresholds: every SLO, judged in both runs.
    let slos = dom.find("data-table=\"slos\"").expect("the SLO table");
    assert!(
        slos < dom.find("data-chart=").expect("charts"),
        "SLOs before charts"
    );
    assert_eq!(dom.matches("<tr data-slo=").count(), 4, "four SLOs");
    assert_eq!(
        dom.matches("data-verdict=").count(),
        8,
        "each judged in both runs"
    );
    assert!(dom.contains("data-table=\"comparison\""));
    assert_eq!(dom.matches("<p data-run=").count(), 2, "blocking and async");
    for chart in CHARTS {
        let figures: Vec<&str> = dom
            .split(&format!("data-chart=\"{chart}\""))
            .skip(1)
            .map(|rest| rest.split("</figure>").next().unwrap_or_default())
            .collect();
        assert_eq!(figures.len(), 2, "{chart} in both runs");
        for figure in figures {
            assert!(figure.contains("<svg"), "{chart} has its SVG");
            assert!(
                figure.contains("<polyline"),
                "{chart} has lines: {figure:.300}"
            );
        }
    }

    // A screenshot, kept as the test's artifact.
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loadgen-report.png");
    let shot = chromium(&[
        &format!("--screenshot={}", screenshot.display()),
        "--window-size=1400,2600",
        &url,
    ]);
    assert!(shot.status.success(), "{shot:?}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000));
    println!("screenshot: {}", screenshot.display());
    let _ = std::fs::remove_file(html);
}
