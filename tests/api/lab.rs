//! The lab as the service sees it: the shipped experiments listed for the storefront, a
//! phase announced by the admin (what `lab run` does) shown to everyone and on the
//! `lab_phase` gauge, ended by `DELETE`; nonsense and non-admins refused.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    expect_json, expect_problem, sample, spawn_app, spawn_app_with, spawn_process,
};

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

/// Everyone may read the live settings in force, and whom to ask to change them; only the
/// admin may change them — unless the classroom switch `STOREFRONT_OPEN_LAB` is on, when
/// any signed-in user may (but still no anonymous caller).
#[tokio::test]
async fn everyone_reads_the_settings_and_the_classroom_switch_opens_them_to_learners() {
    let closed = spawn_app().await;
    let settings =
        expect_json(closed.get("/api/lab", None).await, StatusCode::OK).await["settings"].clone();
    assert_eq!(settings["checkout_mode"], "blocking");
    assert_eq!(settings["faults"]["payment_flap_rate"], json!(0.0));
    assert_eq!(settings["resilience"]["email"]["fallback"], json!(false));
    assert_eq!(settings["open_to_everyone"], json!(false));
    assert_eq!(settings["admin_email"], json!(crate::helpers::ADMIN_EMAIL));
    let learner = closed.customer("learner@example.com").await;
    for (path, body) in [
        ("/api/admin/faults", json!({"email_outage": true})),
        ("/api/admin/checkout-mode", json!({"mode": "async"})),
        (
            "/api/admin/resilience",
            json!({"email": {"fallback": true}}),
        ),
    ] {
        expect_problem(
            closed.put(path, Some(&learner), &body).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }

    let open = spawn_app_with(&[("STOREFRONT_OPEN_LAB", "true")]).await;
    let learner = open.customer("learner@example.com").await;
    expect_json(
        open.put(
            "/api/admin/resilience",
            Some(&learner),
            &json!({"email": {"fallback": true}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        open.put(
            "/api/admin/checkout-mode",
            Some(&learner),
            &json!({"mode": "async"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let settings =
        expect_json(open.get("/api/lab", None).await, StatusCode::OK).await["settings"].clone();
    assert_eq!(settings["open_to_everyone"], json!(true));
    assert_eq!(settings["checkout_mode"], "async");
    assert_eq!(settings["resilience"]["email"]["fallback"], json!(true));
    let anonymous = open
        .put("/api/admin/faults", None, &json!({"email_outage": true}))
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Reading what only the admin reads stays the admin's.
    expect_problem(
        open.get("/api/admin/reconciliation", Some(&learner)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}
