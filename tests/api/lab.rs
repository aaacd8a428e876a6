//! The lab as the service sees it: the shipped experiments listed for the storefront, a
//! phase announced by the admin (what `lab run` does) shown to everyone and on the
//! `lab_phase` gauge, ended by `DELETE`; nonsense and non-admins refused.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_json, expect_problem, sample, spawn_app, spawn_process};

fn phase(experiment: &str, phase: &str, position: u16, seconds: f64) -> Value {
    json!({
        "experiment": experiment,
        "title": "A test of the banner",
        "phase": phase,
        "position": position,
        "phases": 3,
        "seconds": seconds,
    })
}

#[tokio::test]
async fn the_shipped_experiments_are_listed_with_their_questions_and_commands() {
    let app = spawn_app().await;
    let lab = expect_json(app.get("/api/lab", None).await, StatusCode::OK).await;
    assert_eq!(lab["running"], Value::Null);
    let experiments = lab["experiments"].as_array().expect("a list");
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/lab"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".toml"))
        })
        .count();
    assert_eq!(experiments.len(), shipped, "{lab:#}");
    for experiment in experiments {
        let name = experiment["name"].as_str().expect("a name");
        assert!(experiment["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            experiment["question"]
                .as_str()
                .is_some_and(|q| q.ends_with('?')),
            "{experiment}"
        );
        assert_eq!(
            experiment["command"],
            format!("ecommerce-monolith lab run {name}")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_announced_phase_shows_to_everyone_and_on_the_gauge_until_it_ends() {
    // A process of its own: its /metrics are its alone.
    let app = spawn_process(&[]).await;
    let admin = app.admin_token().await;
    let running = expect_json(
        app.put(
            "/api/admin/lab",
            Some(&admin),
            &phase("gauge-test", "storm", 1, 80.0),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(running["phase"], "storm");
    let left = running["seconds_left"].as_u64().expect("seconds left");
    assert!((78..=80).contains(&left), "{running}");

    // Anyone sees it: the shop's banner asks without a token.
    let lab = expect_json(app.get("/api/lab", None).await, StatusCode::OK).await;
    assert_eq!(lab["running"]["experiment"], "gauge-test");
    assert_eq!(lab["running"]["title"], "A test of the banner");
    assert_eq!(lab["running"]["position"], 1);
    assert_eq!(lab["running"]["phases"], 3);
    let labels = |phase| [("experiment", "gauge-test"), ("phase", phase)];
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "lab_phase", &labels("storm")), Some(1.0));

    // The next phase takes its place on the gauge.
    expect_json(
        app.put(
            "/api/admin/lab",
            Some(&admin),
            &phase("gauge-test", "calm", 2, 30.0),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "lab_phase", &labels("storm")), Some(0.0));
    assert_eq!(sample(&metrics, "lab_phase", &labels("calm")), Some(1.0));

    let ended = app.delete("/api/admin/lab", Some(&admin)).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let lab = expect_json(app.get("/api/lab", None).await, StatusCode::OK).await;
    assert_eq!(lab["running"], Value::Null);
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "lab_phase", &labels("calm")), Some(0.0));
}

#[tokio::test]
async fn only_an_admin_announces_and_an_impossible_phase_is_refused() {
    let app = spawn_app().await;
    let customer = app.customer("curious@shop.test").await;
    let valid = phase("refusals", "storm", 0, 10.0);
    expect_problem(
        app.put("/api/admin/lab", Some(&customer), &valid).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.put("/api/admin/lab", None, &valid).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_problem(
        app.delete("/api/admin/lab", Some(&customer)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let admin = app.admin_token().await;
    for (change, field) in [
        (json!({"position": 3}), "position"),
        (json!({"seconds": 0}), "seconds"),
        (json!({"seconds": 90000}), "seconds"),
        (json!({"experiment": "  "}), "experiment"),
        (json!({"phase": "x".repeat(101)}), "phase"),
    ] {
        let mut body = valid.clone();
        for (key, value) in change.as_object().expect("an object") {
            body[key] = value.clone();
        }
        let problem = expect_problem(
            app.put("/api/admin/lab", Some(&admin), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let lab = expect_json(app.get("/api/lab", None).await, StatusCode::OK).await;
    assert_eq!(lab["running"], Value::Null, "nothing refused was announced");
}
