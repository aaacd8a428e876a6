//! The app's `/metrics`, read as Prometheus text.

use std::time::Duration;

use reqwest::StatusCode;

use super::{TestApp, eventually};

impl TestApp {
    /// Waits until at least `count` checkouts run in the app at once (its
    /// `checkouts_in_flight` gauge): to act while they are in the gateway, the mail
    /// server or a queue.
    pub async fn wait_for_checkouts_in_flight(&self, count: u32) {
        eventually(Duration::from_secs(10), "checkouts in flight", || async {
            let metrics = self.metrics().await;
            (sample(&metrics, "checkouts_in_flight", &[]) >= Some(f64::from(count))).then_some(())
        })
        .await;
    }

    /// Waits until exactly `count` outbox jobs of `kind` run at once (the
    /// `outbox_jobs_in_flight` gauge): to act while they wait on the gateway.
    pub async fn wait_for_jobs_in_flight(&self, kind: &str, count: u32, within: Duration) {
        eventually(within, "outbox jobs in flight", || async {
            let metrics = self.metrics().await;
            let running = sample(&metrics, "outbox_jobs_in_flight", &[("kind", kind)]);
            (running == Some(f64::from(count))).then_some(())
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics body")
    }
}

/// The value of a metric in Prometheus text format over the series that carry `labels`
/// (summed, like PromQL's `sum`; `None` if there is no such series), e.g.
/// `sample(&text, "checkouts_total", &[("outcome", "success")])`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels.iter().all(|(k, v)| {
                    series_labels
                        .split(',')
                        .any(|l| l == format!("{k}=\"{v}\""))
                });
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The sum of every series of one metric (all label values).
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
