//! A real Prometheus (Debian's package) for the tests that prove the dashboards, the
//! alerts, the SLOs and the exemplars against the real binary.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use yaml_serde::Value as Yaml;

use crate::helpers::{closed_port, eventually, poll_until};
use crate::stack::{alert_rules, read_yaml, repo_file};

/// A real Prometheus (Debian's package) with the repository's config and rules and the
/// compose file's feature flags (exemplar storage), scraping one address every second.
/// Killed when dropped.
pub(crate) struct Prometheus {
    pub(crate) url: String,
    _child: tokio::process::Child,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long an alert's condition must hold before it fires, in the rules Prometheus
/// loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    /// As the repository's rules say (minutes, some of them).
    AsWritten,
    /// Every alert's `for:` cut to a second, in a copy of the rules: a test that
    /// provokes every alert can wait for each to fire, not only to be pending.
    Shortened,
}

impl Prometheus {
    pub(crate) async fn start(target: &str) -> Self {
        Self::start_with(target, Holding::AsWritten).await
    }

    pub(crate) async fn start_with(target: &str, holding: Holding) -> Self {
        let dir = TempDir(std::env::temp_dir().join(format!("prom-{}", uuid::Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let mut config = read_yaml("prometheus.yml");
        config["global"]["scrape_interval"] = Yaml::from("1s");
        config["global"]["evaluation_interval"] = Yaml::from("1s");
        // The rule files prometheus.yml names, from the repository (or shortened copies).
        let rule_files: Vec<Yaml> = config["rule_files"]
            .as_sequence()
            .expect("rule_files")
            .iter()
            .filter_map(Yaml::as_str)
            .map(|file| match holding {
                Holding::AsWritten => repo_file(file),
                Holding::Shortened => shortened_copy(file, &dir.0),
            })
            .map(|path| Yaml::from(path.display().to_string()))
            .collect();
        config["rule_files"] = Yaml::Sequence(rule_files);
        let jobs = config["scrape_configs"]
            .as_sequence_mut()
            .expect("scrape_configs");
        assert_eq!(jobs.len(), 1, "one scrape job");
        assert_eq!(jobs[0]["job_name"].as_str(), Some("ecommerce-monolith"));
        jobs[0]["static_configs"][0]["targets"] = Yaml::Sequence(vec![Yaml::from(target)]);
        let config_path = dir.0.join("prometheus.yml");
        std::fs::write(&config_path, yaml_serde::to_string(&config).expect("yaml")).unwrap();

        let port = closed_port().await;
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(compose_prometheus_features())
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (Debian package) must be installed");
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
            _dir: dir,
        };
        // Ready is not enough: Prometheus applies new targets on a 5 s tick, and the
        // counters' starting values must be scraped before the test moves them.
        eventually(
            Duration::from_secs(30),
            "Prometheus scraping the app",
            || async {
                let ready = reqwest::get(format!("{}/-/ready", prometheus.url))
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ready {
                    return None;
                }
                let up = prometheus
                    .query("up{job=\"ecommerce-monolith\"} == 1")
                    .await;
                up["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
                    .then_some(())
            },
        )
        .await;
        prometheus
    }

    pub(crate) async fn query(&self, expr: &str) -> Value {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let response = reqwest::get(format!("{}/api/v1/query?{query}", self.url))
            .await
            .expect("query prometheus");
        response.json().await.expect("prometheus answers JSON")
    }

    /// Alerts pending or firing now, by name.
    pub(crate) async fn active_alerts(&self) -> BTreeSet<String> {
        self.alerts_in(&["pending", "firing"]).await
    }

    /// Alerts firing now (not merely pending), by name.
    pub(crate) async fn firing_alerts(&self) -> BTreeSet<String> {
        self.alerts_in(&["firing"]).await
    }

    async fn alerts_in(&self, states: &[&str]) -> BTreeSet<String> {
        let alerts: Value = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .expect("alerts")
            .json()
            .await
            .expect("alerts JSON");
        alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                a["state"]
                    .as_str()
                    .is_some_and(|state| states.contains(&state))
            })
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
            .collect()
    }

    /// When Prometheus last scraped the app, as it reports it.
    async fn last_scrape(&self) -> Option<String> {
        let targets: Value = reqwest::get(format!("{}/api/v1/targets", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        targets["data"]["activeTargets"][0]["lastScrape"]
            .as_str()
            .map(str::to_string)
    }

    /// Waits until Prometheus has scraped the app `scrapes` more times (it says when it
    /// last did), so that what the test just did is in the series.
    pub(crate) async fn wait_for_scrapes(&self, scrapes: usize) {
        for _ in 0..scrapes {
            let before = self.last_scrape().await;
            eventually(Duration::from_secs(10), "another scrape", || async {
                let now = self.last_scrape().await;
                (now.is_some() && now != before).then_some(())
            })
            .await;
        }
    }

    /// Until `condition` holds for the firing alerts (or 30 s pass).
    pub(crate) async fn wait_for_firing(
        &self,
        what: &str,
        condition: impl Fn(&BTreeSet<String>) -> bool,
    ) -> BTreeSet<String> {
        let condition = &condition;
        let active = poll_until(Duration::from_secs(30), || async {
            let firing = self.firing_alerts().await;
            condition(&firing).then_some(firing)
        })
        .await;
        if let Some(active) = active {
            return active;
        }
        let mut values = String::new();
        for rule in alert_rules() {
            let expr = rule["expr"].as_str().unwrap_or_default();
            let answer = self.query(expr).await;
            values.push_str(&format!(
                "\n  {}: {}",
                rule["alert"].as_str().unwrap_or_default(),
                answer["data"]["result"]
            ));
        }
        panic!(
            "{what}: alerts firing: {:?}, pending or firing: {:?}; rule expressions now:{values}",
            self.firing_alerts().await,
            self.active_alerts().await
        );
    }
}

/// A copy of the rule file `file` in `dir`, every alert's `for:` cut to one second.
fn shortened_copy(file: &str, dir: &std::path::Path) -> PathBuf {
    let mut rules = read_yaml(file);
    for group in rules["groups"].as_sequence_mut().into_iter().flatten() {
        for rule in group["rules"].as_sequence_mut().into_iter().flatten() {
            if rule.get("alert").is_some() && rule.get("for").is_some() {
                rule["for"] = Yaml::from("1s");
            }
        }
    }
    let copy = dir.join(
        std::path::Path::new(file)
            .file_name()
            .expect("a rule file's name"),
    );
    std::fs::write(&copy, yaml_serde::to_string(&rules).expect("yaml")).expect("rule copy");
    copy
}

/// The `--enable-feature` flags the compose stack starts Prometheus with.
pub(crate) fn compose_prometheus_features() -> Vec<String> {
    read_yaml("docker-compose.yml")["services"]["prometheus"]["command"]
        .as_sequence()
        .expect("prometheus command")
        .iter()
        .filter_map(Yaml::as_str)
        .filter(|arg| arg.starts_with("--enable-feature="))
        .map(str::to_string)
        .collect()
}
