//! A small HTTP client for the service's own API, used by the command-line tools
//! `loadgen`, `faults` and `mode`. Each request is a client span whose context travels in a W3C
//! `traceparent`, so the service's spans hang under it in Jaeger.

use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
}

/// A response: its status, its body as JSON (`Null` when empty or not JSON), and how
/// long a 429 or 503 asks to wait.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<Duration>,
}

impl ApiClient {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .build()?,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one request; its span is named after the method and the path without the
    /// query string (`GET /api/products`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Result<ApiResponse> {
        let span = tracing::info_span!(
            "client.request",
            otel.name = %format!("{method} {}", path.split('?').next().unwrap_or(path)),
            otel.kind = "client",
            http.request.method = %method,
            url.full = %format!("{}{path}", self.base_url),
            http.response.status_code = Empty,
        );
        let mut headers = HeaderMap::new();
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut HeaderInjector(&mut headers));
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .headers(headers);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        async {
            let response = request.send().await?;
            let status = response.status();
            tracing::Span::current().record("http.response.status_code", status.as_u16());
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = response.bytes().await?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(ApiResponse {
                status,
                body,
                retry_after,
            })
        }
        .instrument(span)
        .await
    }

    /// A checkout-like `POST` with a deadline of its own (the impatient shopper's), and
    /// an `Idempotency-Key` if given; an error when the deadline passes first.
    pub async fn send_within(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &Value,
        idempotency_key: Option<&str>,
        within: Duration,
    ) -> anyhow::Result<ApiResponse> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .timeout(within)
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok(ApiResponse {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry_after: None,
        })
    }

    /// A plain text resource (`/metrics`), asked for as `accept` if given.
    pub async fn text(&self, path: &str, accept: Option<&str>) -> anyhow::Result<String> {
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {path} answered {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let response = self
            .send(
                Method::POST,
                "/api/auth/login",
                None,
                Some(&serde_json::json!({"email": email, "password": password})),
            )
            .await?;
        if response.status != StatusCode::OK {
            anyhow::bail!(
                "login as {email} failed ({}): {}",
                response.status,
                response.body["detail"].as_str().unwrap_or("no detail")
            );
        }
        response.body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("the login answer has no access_token"))
    }
}
