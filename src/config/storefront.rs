//! The shop page at `/`: its links, its trace export, its demo customer.

use super::reader::Reader;
use super::reader::{ConfigError, Source};
use crate::domain::{Email, Password};

/// What the shop page at `/` is told at start (`GET /api/storefront/config`): where the
/// observability tools are, where the browser may export its own spans, and the demo
/// customer it signs in with one click.
#[derive(Debug, Clone)]
pub struct StorefrontSettings {
    pub jaeger_url: String,
    pub grafana_url: String,
    /// The tools the page links to, and where the service asks whether each is there:
    /// the page shows a link only to one that answered lately.
    pub tools: Vec<ToolLink>,
    /// OTLP/HTTP traces endpoint for the browser's spans; `None`: the page exports
    /// nothing (it still propagates `traceparent`).
    pub browser_traces_url: Option<String>,
    pub demo_customer: DemoCustomer,
    /// A classroom switch (`STOREFRONT_OPEN_LAB`): any signed-in user may change the
    /// checkout mode, the faults and the rungs, not only the admin. Off by default; on
    /// in the compose demo.
    pub open_lab: bool,
    /// Who may change them otherwise: the admin account, if one is configured (its
    /// e-mail is shown in the page's Lab panel).
    pub lab_keeper: Option<Email>,
}

/// An observability tool the page links to: where a browser opens it (`url`), and where
/// the service checks that it answers (`check_url`: the same, unless set — in the
/// compose stack the browser reaches `localhost`, the service the tool's own name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolLink {
    /// `jaeger`, `grafana`, `prometheus` or `mail`.
    pub name: &'static str,
    pub url: String,
    pub check_url: String,
}

/// The customer `seed` creates for the storefront's one-click sign-in. Its password is
/// public on purpose (README, `.env.example`): it is a demo account.
#[derive(Debug, Clone)]
pub struct DemoCustomer {
    pub email: Email,
    pub password: Password,
}

pub(super) fn read(r: &mut Reader) -> StorefrontSettings {
    let browser_traces_url = r
        .raw("STOREFRONT_OTLP_TRACES_URL")
        .map(|_| r.url("STOREFRONT_OTLP_TRACES_URL", ""));
    let tools: Vec<ToolLink> = [
        ("jaeger", "JAEGER", "http://localhost:16686"),
        ("grafana", "GRAFANA", "http://localhost:3000"),
        ("prometheus", "PROMETHEUS", "http://localhost:9090"),
        ("mail", "MAIL", "http://localhost:8025"),
    ]
    .into_iter()
    .map(|(name, variable, default)| {
        let url = r.url(&format!("STOREFRONT_{variable}_URL"), default);
        let check_url = r.url(&format!("STOREFRONT_{variable}_CHECK_URL"), &url);
        ToolLink {
            name,
            url,
            check_url,
        }
    })
    .collect();
    StorefrontSettings {
        jaeger_url: tools[0].url.clone(),
        grafana_url: tools[1].url.clone(),
        tools,
        browser_traces_url,
        demo_customer: read_demo_customer(r),
        open_lab: r.optional_bool("STOREFRONT_OPEN_LAB").unwrap_or(false),
        // Set from the auth section's admin account by the caller.
        lab_keeper: None,
    }
}

impl DemoCustomer {
    /// Only the demo customer, for `seed`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let customer = read_demo_customer(&mut reader);
        reader.finish(customer)
    }
}

fn read_demo_customer(r: &mut Reader) -> DemoCustomer {
    let email = Email::parse(&r.string("DEMO_CUSTOMER_EMAIL", DEMO_CUSTOMER_EMAIL))
        .map_err(|e| r.problem(format!("DEMO_CUSTOMER_EMAIL: {e}")))
        .ok();
    let password = Password::parse(r.string("DEMO_CUSTOMER_PASSWORD", DEMO_CUSTOMER_PASSWORD))
        .map_err(|e| r.problem(format!("DEMO_CUSTOMER_PASSWORD: {e}")))
        .ok();
    match email.zip(password) {
        Some((email, password)) => DemoCustomer { email, password },
        None => default_demo_customer(),
    }
}

pub const DEMO_CUSTOMER_EMAIL: &str = "demo@example.com";
pub const DEMO_CUSTOMER_PASSWORD: &str = "demo shopper";

fn default_demo_customer() -> DemoCustomer {
    DemoCustomer {
        email: Email::parse(DEMO_CUSTOMER_EMAIL).unwrap_or_else(|e| unreachable!("{e}")),
        password: Password::parse(DEMO_CUSTOMER_PASSWORD.to_string())
            .unwrap_or_else(|e| unreachable!("{e}")),
    }
}
