//! Which of the observability tools the page links to (Jaeger, Grafana, Prometheus, the
//! mail catcher) answered lately: the page shows a link only to those, so a shop run
//! without the compose stack offers no dead links. Each is asked every
//! [`CHECK_EVERY`]; any HTTP answer counts (a login page is still the tool).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ToolLink;

pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// Longer than a tool on the same machine or network takes to answer anything.
const PATIENCE: Duration = Duration::from_secs(2);

/// The tools that answered at the last check, shared with the handlers.
#[derive(Clone, Default)]
pub struct ToolLinks {
    tools: Vec<ToolLink>,
    answered: Arc<RwLock<BTreeSet<&'static str>>>,
}

impl ToolLinks {
    /// Checks `tools` now and every [`CHECK_EVERY`] until `stop`.
    pub fn watch(tools: Vec<ToolLink>, stop: CancellationToken) -> Self {
        let links = Self {
            tools,
            answered: Arc::default(),
        };
        let watcher = links.clone();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder().timeout(PATIENCE).build() {
                Ok(client) => client,
                Err(error) => {
                    tracing::warn!(%error, "cannot check the storefront's tool links");
                    return;
                }
            };
            loop {
                watcher.check(&client).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(CHECK_EVERY) => {}
                }
            }
        });
        links
    }

    async fn check(&self, client: &reqwest::Client) {
        let mut answered = BTreeSet::new();
        for tool in &self.tools {
            if client.get(&tool.check_url).send().await.is_ok() {
                answered.insert(tool.name);
            }
        }
        *self.answered.write().unwrap_or_else(|p| p.into_inner()) = answered;
    }

    /// The browser's URL of each tool that answered at the last check.
    pub fn answering(&self) -> Vec<(&'static str, String)> {
        let answered = self.answered.read().unwrap_or_else(|p| p.into_inner());
        self.tools
            .iter()
            .filter(|tool| answered.contains(tool.name))
            .map(|tool| (tool.name, tool.url.clone()))
            .collect()
    }
}
