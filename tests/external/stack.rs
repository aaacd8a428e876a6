//! The observability stack, proven with the files the compose stack uses: the compose
//! file validates, promtool accepts the config, rules and their unit tests, the
//! dashboards are well formed, and — against a real Prometheus scraping the real
//! binary — every dashboard query returns data and every alert fires when provoked.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use yaml_serde::Value as Yaml;

use crate::helpers::{TestApp, checkout_body, eventually, expect_json, spawn_process};
use crate::prometheus::{Holding, Prometheus, compose_prometheus_features};
use crate::require::{PROMETHEUS_PACKAGE, tool_available};

/// The latency histograms whose buckets carry exemplars (trace ids).
pub(crate) const EXEMPLAR_HISTOGRAMS: [&str; 3] = [
    "http_server_request_duration_seconds",
    "checkout_duration_seconds",
    "order_time_to_confirmed_seconds",
];

pub(crate) fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub(crate) fn read_yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn dashboards() -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(repo_file("grafana/dashboards"))
        .expect("grafana/dashboards")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (path.display().to_string(), json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every panel, including those nested in rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Every PromQL expression of a dashboard (panel targets and annotation queries),
/// with a description of where it is.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                found.push((format!("panel {:?}", panel["title"]), expr.to_string()));
            }
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let expr = annotation["expr"]
            .as_str()
            .or_else(|| annotation["target"]["expr"].as_str());
        if let Some(expr) = expr {
            found.push((
                format!("annotation {:?}", annotation["name"]),
                expr.to_string(),
            ));
        }
    }
    found
}

/// Grafana's interval macros, as Grafana would expand them for a short time range.
fn expand_macros(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
}

#[tokio::test]
async fn the_compose_file_validates_and_the_stack_is_light() {
    if !tool_available("docker-compose", "apt-get install docker-compose") {
        return;
    }
    let output = tokio::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("docker-compose (Debian package) must be installed; .ci/run installs it");
    assert!(output.status.success(), "docker-compose config: {output:?}");

    let compose = read_yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for required in [
        "postgres",
        "mailhog",
        "jaeger",
        "app",
        "prometheus",
        "grafana",
        "loadgen",
    ] {
        assert!(names.contains(required), "service {required} missing");
    }
    let mut memory_mib = 0.0;
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        if let Some(image) = service["image"].as_str()
            && service.get("build").is_none()
        {
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest",
                "{name}: image {image} is not pinned"
            );
        }
        let limit = service["deploy"]["resources"]["limits"]["memory"]
            .as_str()
            .or_else(|| service["mem_limit"].as_str())
            .unwrap_or_else(|| panic!("{name} has no memory limit"));
        memory_mib += mebibytes(limit);
    }
    assert!(
        memory_mib <= 1024.0,
        "memory limits add up to {memory_mib} MiB"
    );

    assert_eq!(
        compose["services"]["mailhog"]["platform"].as_str(),
        Some("linux/amd64")
    );
    assert!(compose["services"]["loadgen"]["profiles"].is_sequence());
    assert!(
        compose_prometheus_features()
            .iter()
            .any(|flag| flag.contains("exemplar-storage")),
        "Prometheus keeps exemplars"
    );
    let app = &compose["services"]["app"];
    assert!(
        app["healthcheck"]["test"].is_sequence(),
        "the app has a health check"
    );
    assert_eq!(
        app["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    let app_command: Vec<&str> = app["command"]
        .as_sequence()
        .expect("app command")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        app_command,
        ["serve", "--seed"],
        "the demo catalog is seeded at start"
    );
    // The shop page's spans go from the browser to Jaeger, which lets its origin in.
    let browser_traces = app["environment"]["STOREFRONT_OTLP_TRACES_URL"]
        .as_str()
        .expect("the storefront exports its spans in the stack");
    let published: Vec<&str> = compose["services"]["jaeger"]["ports"]
        .as_sequence()
        .expect("jaeger ports")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        browser_traces.starts_with("http://localhost:4318/")
            && published.iter().any(|p| p.contains(":4318:4318")),
        "{browser_traces} reaches Jaeger's published OTLP/HTTP port: {published:?}"
    );
    let jaeger = read_yaml("jaeger/config.yaml");
    let origins: Vec<&str> =
        jaeger["receivers"]["otlp"]["protocols"]["http"]["cors"]["allowed_origins"]
            .as_sequence()
            .expect("CORS for the storefront")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
    assert!(origins.contains(&"http://localhost:8000"), "{origins:?}");
    // Everything the stack mounts from the repository exists.
    for service in services.values() {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            if let Some(source) = volume.as_str().and_then(|v| v.split(':').next())
                && source.starts_with("./")
            {
                assert!(
                    repo_file(source).exists(),
                    "{source} is mounted but missing"
                );
            }
        }
    }
}

fn mebibytes(limit: &str) -> f64 {
    let limit = limit.trim().to_ascii_lowercase();
    let digits: String = limit
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let number: f64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("memory limit {limit:?}"));
    match limit
        .trim_start_matches(&digits)
        .trim_end_matches(['b', 'i'])
    {
        "g" => number * 1024.0,
        "m" => number,
        "k" => number / 1024.0,
        other => panic!("unknown unit {other:?} in {limit:?}"),
    }
}

#[tokio::test]
async fn promtool_accepts_the_config_the_rules_and_their_unit_tests() {
    if !tool_available("promtool", PROMETHEUS_PACKAGE) {
        return;
    }
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["check", "rules", "slo.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["test", "rules", "slo.test.yml"],
    ] {
        let output = tokio::process::Command::new("promtool")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .await
            .expect("promtool (Debian package `prometheus`) must be installed");
        assert!(
            output.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_alert_rules_tell_what_is_wrong_and_where_to_look() {
    let rules = alert_rules();
    assert!(
        rules.len() >= 7,
        "slow checkouts, declines, e-mail, orphans, 5xx, pool, down"
    );
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or_default();
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity"
        );
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        let description = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(!summary.is_empty(), "{name}: summary");
        assert!(
            description.contains("localhost:3000/d/") || description.contains("localhost:16686"),
            "{name}: the description names a dashboard or a Jaeger search"
        );
    }
    let every_expr: String = rules
        .iter()
        .filter_map(|rule| rule["expr"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for series in [
        "checkout_duration_seconds",
        "payment_declined",
        "email_failed",
        "payments_orphaned_total",
        "status=~\"5..\"",
        "db_pool_",
        "up{",
    ] {
        assert!(every_expr.contains(series), "no alert looks at {series}");
    }
}

pub(crate) fn alert_rules() -> Vec<Yaml> {
    let alerts = read_yaml("alerts.yml");
    alerts["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

#[test]
fn dashboards_are_well_formed_and_use_the_provisioned_datasources() {
    let datasources = read_yaml("grafana/provisioning/datasources/datasources.yml");
    let provisioned: HashSet<String> = datasources["datasources"]
        .as_sequence()
        .expect("datasources")
        .iter()
        .filter_map(|ds| ds["uid"].as_str().map(str::to_string))
        .collect();
    assert!(provisioned.contains("prometheus") && provisioned.contains("jaeger"));
    // An exemplar's trace_id opens the trace in the Jaeger datasource.
    let by_type = |kind: &str| {
        datasources["datasources"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|ds| ds["type"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("a {kind} datasource"))
            .clone()
    };
    let destinations = by_type("prometheus")["jsonData"]["exemplarTraceIdDestinations"].clone();
    let destination = &destinations[0];
    assert_eq!(
        destination["name"].as_str(),
        Some("trace_id"),
        "{destinations:?}"
    );
    assert_eq!(
        destination["datasourceUid"].as_str(),
        by_type("jaeger")["uid"].as_str()
    );
    let provider = read_yaml("grafana/provisioning/dashboards/dashboards.yml");
    assert!(
        provider["providers"]
            .as_sequence()
            .is_some_and(|p| !p.is_empty())
    );

    let dashboards = dashboards();
    let uids: Vec<&str> = dashboards
        .iter()
        .filter_map(|(_, d)| d["uid"].as_str())
        .collect();
    assert_eq!(uids.len(), dashboards.len(), "every dashboard has a uid");
    assert_eq!(
        uids.iter().collect::<HashSet<_>>().len(),
        uids.len(),
        "uids are unique"
    );
    for uid in ["checkout-anatomy", "http-red", "blocking-vs-async"] {
        assert!(uids.contains(&uid), "dashboard {uid} missing");
    }

    for (path, dashboard) in &dashboards {
        let mut ids = HashSet::new();
        for panel in panels(dashboard) {
            let id = panel["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{path}: panel without id"));
            assert!(ids.insert(id), "{path}: panel id {id} twice");
            if panel["type"] == "row" {
                continue;
            }
            let mut used = vec![&panel["datasource"]];
            used.extend(
                panel["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["datasource"]),
            );
            for datasource in used.into_iter().filter(|d| !d.is_null()) {
                let uid = datasource["uid"].as_str().unwrap_or_default();
                assert!(
                    provisioned.contains(uid) || uid.starts_with("-- "),
                    "{path}: panel {:?} uses datasource {uid:?}",
                    panel["title"]
                );
            }
        }
        assert!(!expressions(dashboard).is_empty(), "{path} has queries");
        for panel in panels(dashboard)
            .into_iter()
            .filter(|p| p["type"] == "timeseries")
        {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                if EXEMPLAR_HISTOGRAMS
                    .iter()
                    .any(|h| expr.contains(&format!("{h}_bucket")))
                {
                    assert_eq!(
                        target["exemplar"], true,
                        "{path}: panel {:?} shows the exemplars of {expr}",
                        panel["title"]
                    );
                }
            }
        }
        let text = dashboard.to_string();
        assert!(
            text.contains("16686/search"),
            "{path} links latency to a Jaeger search"
        );
        assert!(text.contains("fault_"), "{path} draws the fault settings");
    }
    let checkout = &dashboards
        .iter()
        .find(|(_, d)| d["uid"] == "checkout-anatomy")
        .expect("checkout dashboard")
        .1;
    let exprs: String = expressions(checkout).into_iter().map(|(_, e)| e).collect();
    for series in [
        "checkouts_total",
        "checkout_duration_seconds_bucket",
        "checkout_step_duration_seconds",
        "payment_gateway_duration_seconds",
        "email_send_duration_seconds",
        "payments_orphaned",
        "db_pool_connections_in_use",
        "db_pool_connections_max",
        "db_pool_acquire_duration_seconds",
        "checkout_inventory_lock_wait_seconds",
    ] {
        assert!(
            exprs.contains(series),
            "the checkout dashboard does not chart {series}"
        );
    }
}

#[test]
fn the_dockerfile_builds_a_small_non_root_image() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    for stage in &stages {
        let image = stage.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{stage} is not pinned"
        );
    }
    let upper = dockerfile.to_ascii_uppercase();
    assert!(
        upper.contains("\nUSER ") && !upper.contains("\nUSER ROOT"),
        "non-root user"
    );
    assert!(upper.contains("HEALTHCHECK"), "health check");
    assert!(dockerfile.contains("--locked"), "builds from Cargo.lock");
    let ignore = std::fs::read_to_string(repo_file(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim_matches('/') == "target"));
}

/// A release build embeds what rust-embed's `#[folder]` names (debug builds read it from
/// the tree, so only the image would miss it): the Dockerfile copies every such folder,
/// and .dockerignore keeps none of them out.
#[test]
fn the_image_gets_every_folder_the_binaries_embed() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    let ignored = std::fs::read_to_string(repo_file(".dockerignore")).expect(".dockerignore");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|line| !line.starts_with("--from"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let mut embedded = Vec::new();
    for (crate_dir, source) in [("", "src"), ("crates/lab/", "crates/lab/src")] {
        let mut stack = vec![repo_file(source)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("#[folder = \"") else {
                    continue;
                };
                let folder = rest.split('"').next().unwrap();
                // Relative to the crate's manifest: the repository's path of it.
                let mut from_root = std::path::PathBuf::from(crate_dir);
                for part in folder.trim_end_matches('/').split('/') {
                    if part == ".." {
                        from_root.pop();
                    } else {
                        from_root.push(part);
                    }
                }
                embedded.push((path.display().to_string(), from_root.display().to_string()));
            }
        }
    }
    assert!(
        embedded.len() >= 3,
        "the storefront and the experiments: {embedded:?}"
    );
    for (file, folder) in embedded {
        assert!(
            copied.contains(&folder.as_str()),
            "{file} embeds {folder}/, which the Dockerfile does not copy ({copied:?})"
        );
        assert!(
            !ignored
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == folder),
            ".dockerignore keeps {folder}/ out of the image"
        );
    }
}

/// The alert whose expression mentions `series`.
fn alert_on(series: &str) -> String {
    let names: Vec<String> = alert_rules()
        .iter()
        .filter(|rule| rule["expr"].as_str().is_some_and(|e| e.contains(series)))
        .filter_map(|rule| rule["alert"].as_str().map(str::to_string))
        .collect();
    assert!(!names.is_empty(), "no alert on {series}");
    names[0].clone()
}

async fn set_faults(app: &TestApp, admin: &str, faults: Value) {
    expect_json(
        app.put("/api/admin/faults", Some(admin), &faults).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_returns_data_and_every_alert_fires_when_provoked() {
    if !tool_available("prometheus", PROMETHEUS_PACKAGE) {
        return;
    }
    let mut app = spawn_process(&[
        ("PAYMENT_DELAY_MS", "20"),
        ("EMAIL_DELAY_MS", "20"),
        ("DB_MAX_CONNECTIONS", "2"),
        ("DB_ACQUIRE_TIMEOUT_SECONDS", "1"),
        // One failed e-mail is enough for a dead letter.
        ("OUTBOX_MAX_ATTEMPTS", "1"),
    ])
    .await;
    // Every alert's `for:` cut to a second in Prometheus' copy of the rules, so that
    // each provoked alert is seen firing, not merely pending.
    let prometheus = Prometheus::start_with(
        app.address.trim_start_matches("http://"),
        Holding::Shortened,
    )
    .await;
    app.seed().await;
    let admin = app.admin_token().await;
    let kettle = app.create_product(&admin, "Kettle", "19.99", 1000).await;
    let scarce = app.create_product(&admin, "Scarce", "5.00", 1).await;
    // What `lab run` announces, for the dashboards' "Lab experiment phase" annotation.
    let announced = app
        .put(
            "/api/admin/lab",
            Some(&admin),
            &json!({"experiment": "stack", "title": "The stack test", "phase": "provoke",
                    "position": 0, "phases": 1, "seconds": 600}),
        )
        .await;
    assert_eq!(announced.status(), StatusCode::OK);
    let customers: Vec<String> = join_all((0..6).map(|i| {
        let app = &app;
        async move { app.customer(&format!("stack{i}@example.com")).await }
    }))
    .await;
    let buy = |token: &str, product: i64| {
        let app = &app;
        let token = token.to_string();
        async move {
            let added = app.add_to_cart(&token, product, 1).await.status();
            let status = app.checkout(&token).await.status();
            (added, status)
        }
    };

    // Successful checkouts, then declined ones (enough gateway calls for the ratio alert).
    for token in &customers {
        assert_eq!(buy(token, kettle).await.1, StatusCode::CREATED);
    }
    set_faults(
        &app,
        &admin,
        json!({"payment_success_rate": 0.0, "payment_delay_ms": 30}),
    )
    .await;
    for token in customers.iter().chain(&customers) {
        assert_eq!(buy(token, kettle).await.1, StatusCode::PAYMENT_REQUIRED);
    }
    // A mail outage: the payment is taken and orphaned.
    set_faults(
        &app,
        &admin,
        json!({"payment_success_rate": 1.0, "email_outage": true, "email_delay_ms": 30}),
    )
    .await;
    assert_eq!(buy(&customers[0], kettle).await.1, StatusCode::BAD_GATEWAY);
    set_faults(&app, &admin, json!({"email_outage": false})).await;
    // A hung mail server, given up by the first rung of the ladder: the mail server's
    // timeout (the resilience panels and annotations).
    let set_email_timeout = |ms: u64| {
        let (app, admin) = (&app, &admin);
        async move {
            let body = json!({"email": {"timeout_ms": ms}});
            let answer = app.put("/api/admin/resilience", Some(admin), &body).await;
            assert_eq!(answer.status(), StatusCode::OK);
        }
    };
    set_email_timeout(100).await;
    set_faults(&app, &admin, json!({"email_hang": true})).await;
    assert_eq!(buy(&customers[1], kettle).await.1, StatusCode::BAD_GATEWAY);
    set_faults(&app, &admin, json!({"email_hang": false})).await;
    set_email_timeout(0).await;
    // Empty carts, a sold-out product, a missing one.
    let window_shopper = app.customer("window-shopper@example.com").await;
    assert_eq!(
        app.checkout(&window_shopper).await.status(),
        StatusCode::BAD_REQUEST
    );
    let (_, first) = buy(&customers[2], scarce).await;
    assert_eq!(first, StatusCode::CREATED);
    sqlx::query("UPDATE inventory SET quantity = 1 WHERE product_id = $1")
        .bind(scarce)
        .execute(&app.db)
        .await
        .unwrap();
    expect_json(
        app.add_to_cart(&customers[3], scarce, 1).await,
        StatusCode::CREATED,
    )
    .await;
    sqlx::query("UPDATE inventory SET quantity = 0 WHERE product_id = $1")
        .bind(scarce)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        app.checkout(&customers[3]).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.get("/api/products/999999", None).await.status(),
        StatusCode::NOT_FOUND
    );

    // The asynchronous checkout: 202s confirmed by the workers, then one e-mail through
    // an outage (dead-lettered after its single attempt), and a stuck job (the queue
    // lags).
    app.set_checkout_mode(&admin, "async").await;
    // The switch is on the charts (annotations) once a scrape has seen it.
    prometheus.wait_for_scrapes(2).await;
    for token in &customers[..2] {
        assert_eq!(buy(token, kettle).await.1, StatusCode::ACCEPTED);
    }
    set_faults(&app, &admin, json!({"email_outage": true})).await;
    assert_eq!(buy(&customers[2], kettle).await.1, StatusCode::ACCEPTED);
    // (The e-mails of the first two may die in the outage too.)
    eventually(
        Duration::from_secs(10),
        "an e-mail dead-lettered",
        || async {
            let dead: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox_jobs WHERE status = 'dead'")
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
            (dead >= 1).then_some(())
        },
    )
    .await;
    set_faults(&app, &admin, json!({"email_outage": false})).await;
    sqlx::query(
        "INSERT INTO outbox_jobs (kind, order_id, created_at, run_after) \
         SELECT 'send_confirmation', id, now() - interval '10 minutes', now() + interval '1 hour' \
         FROM orders LIMIT 1",
    )
    .execute(&app.db)
    .await
    .unwrap();
    app.set_checkout_mode(&admin, "blocking").await;
    prometheus.wait_for_scrapes(3).await;

    // Saturate the pool of two: slow checkouts (over 5 s: the slow-checkout alert) hold
    // both connections, and catalog reads time out with 503 — in two waves, because a
    // new series' first value does not count towards rate().
    set_faults(&app, &admin, json!({"payment_delay_ms": 5000})).await;
    let long = join_all(customers[4..6].iter().map(|t| buy(t, kettle)));
    let pool_held = || app.wait_for_checkouts_in_flight(2);
    let read_wave = |reads: usize| {
        join_all((0..reads).map(|_| async { app.get("/api/products", None).await.status() }))
    };
    let waves = async {
        pool_held().await;
        let first = read_wave(3).await;
        // The first wave's series has been scraped before the second one moves it.
        prometheus.wait_for_scrapes(1).await;
        let second = read_wave(20).await;
        (first, second)
    };
    let saturated = async {
        pool_held().await;
        prometheus
            .wait_for_firing("pool saturation", |firing| {
                firing.contains(&alert_on("db_pool_"))
            })
            .await
    };
    let (long, (first_wave, second_wave), _) = tokio::join!(long, waves, saturated);
    assert!(
        long.iter().all(|(_, s)| *s == StatusCode::CREATED),
        "{long:?}"
    );
    for wave in [first_wave, second_wave] {
        assert!(
            wave.iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
            "{wave:?}"
        );
    }

    // Turn every fault knob once more, and keep the mail outage on while the dashboards
    // are read: their annotations mark fault changes of the last minute and the outage.
    set_faults(
        &app,
        &admin,
        json!({"payment_delay_ms": 25, "email_delay_ms": 25, "payment_success_rate": 0.9, "email_outage": true, "email_hang": true}),
    )
    .await;
    set_email_timeout(250).await;
    // The gateway flaps on every call and its client retries twice: the attempts, their
    // backoff, the gateway's calls in flight, the flap and capacity annotation, the
    // rungs' annotation.
    set_faults(
        &app,
        &admin,
        json!({"payment_flap_rate": 1.0, "payment_capacity": 1000}),
    )
    .await;
    let retries = json!({"payment": {"retries": 2, "retry_backoff_ms": 10}});
    let answer = app
        .put("/api/admin/resilience", Some(&admin), &retries)
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        buy(&customers[4], kettle).await.1,
        StatusCode::SERVICE_UNAVAILABLE
    );
    set_faults(&app, &admin, json!({"payment_flap_rate": 0.0})).await;
    // The mail server's breaker opens on the next failure (its annotation).
    let breaker = json!({"email": {"breaker_failures": 1}});
    let answer = app
        .put("/api/admin/resilience", Some(&admin), &breaker)
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    // (customers[3]'s cart still holds the sold-out product.) The 10 % decline rate
    // stays in force for its annotation: a declined card (402) rolls back before the
    // mail server is reached, the cart kept, so the checkout is tried again.
    let mut status = buy(&customers[2], kettle).await.1;
    for _ in 0..10 {
        if status != StatusCode::PAYMENT_REQUIRED {
            break;
        }
        status = app.checkout(&customers[2]).await.status();
    }
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    prometheus.wait_for_scrapes(3).await;

    // Every dashboard query returns data.
    let mut failures = Vec::new();
    for (path, dashboard) in dashboards() {
        for (place, expr) in expressions(&dashboard) {
            let answer = prometheus.query(&expand_macros(&expr)).await;
            if answer["status"] != "success" {
                failures.push(format!(
                    "{path} {place}: invalid: {}\n    {expr}",
                    answer["error"]
                ));
            } else if answer["data"]["result"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                failures.push(format!("{path} {place}: no data\n    {expr}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries failing:\n{}",
        failures.join("\n")
    );

    // Every rule evaluates cleanly, and the provoked alerts fire.
    let rules: Value = reqwest::get(format!("{}/api/v1/rules", prometheus.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut health = BTreeMap::new();
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            health.insert(rule["name"].to_string(), rule["health"].to_string());
        }
    }
    assert!(
        health.len() >= alert_rules().len(),
        "every rule is loaded: {health:?}"
    );
    assert!(
        health.values().all(|h| h == "\"ok\""),
        "rule health: {health:?}"
    );
    let provoked = [
        alert_on("payments_orphaned_total"),
        alert_on("email_failed"),
        alert_on("payment_declined"),
        alert_on("status=~\"5..\""),
        alert_on("checkout_duration_seconds_bucket"),
        alert_on("db_pool_acquire_duration_seconds"),
        alert_on("outbox_oldest_job_age_seconds"),
        alert_on("outbox_jobs_dead"),
    ];
    prometheus
        .wait_for_firing(
            "orphans, e-mail, declines, 5xx, slow checkouts, slow pool, outbox lag, dead letters",
            |firing| provoked.iter().all(|alert| firing.contains(alert)),
        )
        .await;

    // A crash after a charge: the process that took the money never counts it, the
    // gateway's ledger still shows it. SIGKILL in the e-mail step, then the service
    // again (on the same address: Prometheus keeps scraping it).
    let without_order = alert_on("payments_without_order");
    // No breaker for what follows: an open one would refuse the charge it needs.
    let off = json!({"email": {"breaker_failures": 0, "timeout_ms": 0}});
    let answer = app.put("/api/admin/resilience", Some(&admin), &off).await;
    assert_eq!(answer.status(), StatusCode::OK);
    set_faults(
        &app,
        &admin,
        json!({"email_outage": false, "email_hang": false, "email_delay_ms": 60000, "payment_success_rate": 1.0}),
    )
    .await;
    let charged_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gateway_charges WHERE status <> 'declined'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    expect_json(
        app.add_to_cart(&customers[5], kettle, 1).await,
        StatusCode::CREATED,
    )
    .await;
    // The answer never comes: the process dies first.
    let _doomed = tokio::spawn(
        app.client
            .post(format!("{}/api/orders/checkout", app.address))
            .bearer_auth(&customers[5])
            .json(&checkout_body())
            .send(),
    );
    eventually(Duration::from_secs(10), "the charge", || async {
        let charged: i64 =
            sqlx::query_scalar("SELECT count(*) FROM gateway_charges WHERE status <> 'declined'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        (charged > charged_before).then_some(())
    })
    .await;
    app.kill_and_restart().await;
    prometheus
        .wait_for_firing("a charge without an order after a crash", |firing| {
            firing.contains(&without_order)
        })
        .await;

    // The app goes away: the down alert follows (once the restart's gap has resolved).
    let down = alert_on("up{");
    eventually(Duration::from_secs(30), "the app up again", || async {
        (!prometheus.active_alerts().await.contains(&down)).then_some(())
    })
    .await;
    app.terminate().await;
    prometheus
        .wait_for_firing("app down", |firing| firing.contains(&down))
        .await;
}
