//! The storefront: the shop page at `/` and its scripts and styles, from `web/`, and
//! the settings the page reads when it starts (`GET /api/storefront/config`).
//!
//! Release builds embed `web/` in the binary (rust-embed); debug builds read it from
//! the source tree, so an edit shows on the next reload. Every asset is answered with
//! an `ETag` (its SHA-256) and `Cache-Control: no-cache`: browsers keep it and ask
//! again cheaply (304), and a new build is never hidden behind a stale copy. The page
//! runs no inline script: the `Content-Security-Policy` allows scripts from this origin
//! only, and connections to this origin and the configured OTLP endpoint.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::{Json, Path};
use super::state::AppState;
use crate::domain::CheckoutMode;

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(config))
        .route("/", axum::routing::get(page))
        .route("/assets/{*path}", axum::routing::get(asset))
}

/// What the shop page needs to know at start.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorefrontConfig {
    /// The checkout mode in force now (it may change while the page is open).
    pub checkout_mode: CheckoutMode,
    /// Jaeger's UI, for "open this checkout in Jaeger".
    #[schema(example = "http://localhost:16686")]
    pub jaeger_url: String,
    /// Grafana's UI, for the dashboards.
    #[schema(example = "http://localhost:3000")]
    pub grafana_url: String,
    /// The tools the page may link to, by name (`jaeger`, `grafana`, `prometheus`,
    /// `mail`): only those that answered the service lately, so that no link is dead.
    #[schema(example = json!({"jaeger": "http://localhost:16686", "grafana": "http://localhost:3000"}))]
    pub tools: std::collections::BTreeMap<String, String>,
    /// Where the page exports its own spans (OTLP/HTTP JSON); absent: it exports none.
    #[schema(example = "http://localhost:4318/v1/traces")]
    pub browser_traces_url: Option<String>,
    /// The demo customer's credentials (public on purpose: a demo account).
    pub demo_customer: DemoCustomerView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DemoCustomerView {
    #[schema(example = "demo@example.com")]
    pub email: String,
    #[schema(example = "demo shopper")]
    pub password: String,
}

/// The storefront's settings: observability links, the browser's trace export, the
/// demo customer, the checkout mode.
#[utoipa::path(
    get, path = "/api/storefront/config", tag = "storefront",
    responses((status = 200, description = "The page's settings", body = StorefrontConfig))
)]
async fn config(State(state): State<AppState>) -> Json<StorefrontConfig> {
    let settings = &state.storefront;
    Json(StorefrontConfig {
        checkout_mode: state.live.checkout_mode(),
        jaeger_url: settings.jaeger_url.clone(),
        grafana_url: settings.grafana_url.clone(),
        tools: state
            .tool_links
            .answering()
            .into_iter()
            .map(|(name, url)| (name.to_string(), url))
            .collect(),
        browser_traces_url: settings.browser_traces_url.clone(),
        demo_customer: DemoCustomerView {
            email: settings.demo_customer.email.as_str().to_string(),
            password: settings.demo_customer.password.expose().to_string(),
        },
    })
}

async fn page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&state, "index.html", &headers)
}

async fn asset(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &path, &headers)
}

fn serve(state: &AppState, path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let file = Assets::get(path).ok_or_else(|| ApiError::not_found(format!("asset {path}")))?;
    // Weak: the same content may go out gzipped or not (the compression layer), and a
    // strong tag promises the same bytes.
    let etag = format!("W/\"{}\"", hex(&file.metadata.sha256_hash()));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, file.metadata.mimetype().to_string())],
            file.data,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(
        state.storefront.browser_traces_url.as_deref(),
    )) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// Scripts, styles and connections from this origin only — plus the OTLP endpoint the
/// browser exports its spans to, if one is configured.
fn content_security_policy(browser_traces_url: Option<&str>) -> String {
    let export_origin = browser_traces_url.map(origin_of).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{export_origin}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// ` scheme://host:port` of a URL, for a CSP source list.
fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    format!(" {scheme}://{authority}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_export_origin_and_no_inline_script() {
        let policy = content_security_policy(Some("http://localhost:4318/v1/traces"));
        assert!(
            policy.contains("connect-src 'self' http://localhost:4318;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"));
        assert!(!policy.contains("unsafe-inline"));
        assert!(content_security_policy(None).contains("connect-src 'self';"));
    }
}
