//! Settings, read once from the environment (12-factor) into typed values.
//!
//! Every variable is documented in `.env.example` and in the README. A bad value is
//! reported as a start-up error that names the variable; all problems are reported at
//! once so a user fixes their `.env` in one go.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::checkout::CheckoutMode;
use crate::checkout::faults::{FaultSettings, FaultsUpdate};
use crate::domain::{Email, Password};

/// Secrets that must never be used outside a developer's machine.
const WELL_KNOWN_SECRETS: &[&str] = &[
    "secret",
    "changeme",
    "change-me",
    "jwt-secret",
    "your-secret-key",
    "your-secret-key-change-in-production",
    "dev-secret-change-me",
];
const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct Settings {
    pub bind_addr: SocketAddr,
    /// After SIGTERM, requests in flight get this long; what still runs then is rolled
    /// back and counted.
    pub shutdown_timeout: Duration,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub smtp: SmtpSettings,
    /// The live settings this start puts in force (those set in the environment).
    pub live: LiveStart,
    pub workers: WorkerSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub storefront: StorefrontSettings,
}

/// What the shop page at `/` is told at start (`GET /api/storefront/config`): where the
/// observability tools are, where the browser may export its own spans, and the demo
/// customer it signs in with one click.
#[derive(Debug, Clone)]
pub struct StorefrontSettings {
    pub jaeger_url: String,
    pub grafana_url: String,
    /// OTLP/HTTP traces endpoint for the browser's spans; `None`: the page exports
    /// nothing (it still propagates `traceparent`).
    pub browser_traces_url: Option<String>,
    pub demo_customer: DemoCustomer,
}

/// The customer `seed` creates for the storefront's one-click sign-in. Its password is
/// public on purpose (README, `.env.example`): it is a demo account.
#[derive(Debug, Clone)]
pub struct DemoCustomer {
    pub email: Email,
    pub password: Password,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    /// The pool is part of the lesson: checkouts hold a connection for ~3 s.
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub jwt_ttl: Duration,
    pub admin: Option<AdminAccount>,
    pub login_throttle: LoginThrottleSettings,
}

/// Login attempts allowed per minute (bursts included); `None` switches a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottleSettings {
    pub per_account: Option<std::num::NonZeroU32>,
    pub per_address: Option<std::num::NonZeroU32>,
}

#[derive(Debug, Clone)]
pub struct AdminAccount {
    pub email: Email,
    pub password: Password,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub from: String,
    /// Upper bound for one SMTP conversation, so a stuck server cannot hold a
    /// checkout's transaction and row locks forever.
    pub timeout: Duration,
}

/// The live settings (fault injection, checkout mode) named in the environment. Each one
/// set is put in force at start, on every replica (they share the settings through
/// Postgres); each one left unset keeps the shared value (the default on a fresh
/// database), so that a restart does not undo what an admin switched live.
#[derive(Debug, Clone, Default)]
pub struct LiveStart {
    pub faults: FaultsUpdate,
    pub checkout_mode: Option<CheckoutMode>,
}

/// The workers of the asynchronous checkout and their outbox.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Jobs processed at once (in this process).
    pub count: usize,
    /// How long a claimed job is a worker's own; after that another may take it. Must
    /// exceed the slowest job (the payment delay; the e-mail delay plus the SMTP timeout).
    pub lease: Duration,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
    /// How often idle workers look for jobs when no notification woke them.
    pub poll_every: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub body_limit_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG`; only the console/JSON log output obeys it, never the exported spans.
    pub log_filter: String,
    pub service_name: String,
    /// `false` when `OTEL_SDK_DISABLED=true`: no spans are built or exported.
    pub traces_enabled: bool,
    pub otlp_endpoint: String,
    pub otlp_protocol: OtlpProtocol,
    pub sampler: TraceSampler,
    /// `false` when `METRICS_ENABLED=false`: no recorder, `/metrics` answers 404.
    pub metrics_enabled: bool,
}

/// Everything wrong with the environment, one line per variable.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        write!(f, "(see .env.example for every variable and its default)")
    }
}

impl std::error::Error for ConfigError {}

/// Where settings are read from: the process environment, or a fixed list in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for &[(&str, &str)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_string())
    }
}

/// Reads variables and collects problems instead of stopping at the first one.
struct Reader<'a> {
    source: &'a dyn Source,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    fn new(source: &'a dyn Source) -> Self {
        Self {
            source,
            problems: Vec::new(),
        }
    }

    /// The raw value; an empty string counts as unset.
    fn raw(&self, name: &str) -> Option<String> {
        self.source
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn string(&mut self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        match self.raw(name) {
            None => default,
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                self.problems
                    .push(format!("{name}: expected {expected}, got {raw:?}"));
                default
            }),
        }
    }

    /// The value if the variable is set (and valid), else `None`.
    fn optional<T: FromStr>(&mut self, name: &str, expected: &str) -> Option<T> {
        let raw = self.raw(name)?;
        match raw.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problems
                    .push(format!("{name}: expected {expected}, got {raw:?}"));
                None
            }
        }
    }

    fn optional_bool(&mut self, name: &str) -> Option<bool> {
        self.raw(name).map(|_| self.bool(name, false))
    }

    fn millis(&mut self, name: &str, default_ms: u64) -> Duration {
        Duration::from_millis(self.parse(name, default_ms, "a whole number of milliseconds"))
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problems
                    .push(format!("{name}: expected true or false, got {v:?}"));
                default
            }
        }
    }

    fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(self.problems))
        }
    }
}

/// The OpenTelemetry SDK logs its own housekeeping at INFO; keep that out of the way.
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn,opentelemetry_sdk=warn";

/// Log format of the short-lived commands (`migrate`, `seed`).
pub const DEFAULT_LOG_FORMAT_CLI: LogFormat = LogFormat::Pretty;

/// The service name in traces, unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "ecommerce-monolith";

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/ecommerce";

impl DatabaseSettings {
    /// Only what `migrate` and `seed` need: they must work without a JWT secret.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let settings = Self::read(&mut reader);
        reader.finish(settings)
    }

    fn read(r: &mut Reader) -> Self {
        let url = r.string("DATABASE_URL", DEFAULT_DATABASE_URL);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            r.problem("DATABASE_URL: expected a postgres:// URL".to_string());
        }
        let max_connections = r.parse("DB_MAX_CONNECTIONS", 10u32, "a positive whole number");
        if max_connections == 0 {
            r.problem("DB_MAX_CONNECTIONS: must be at least 1".to_string());
        }
        let acquire_timeout =
            Duration::from_secs(r.parse("DB_ACQUIRE_TIMEOUT_SECONDS", 30u64, "whole seconds"));
        Self {
            url: SecretString::from(url),
            max_connections,
            acquire_timeout,
        }
    }

    /// The database URL with any password masked, for log lines.
    pub fn redacted_url(&self) -> String {
        redact_url_password(self.url.expose_secret())
    }
}

fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl TelemetrySettings {
    /// Telemetry alone, for the tools that are not the service (`loadgen`).
    pub fn from_source(
        source: &dyn Source,
        default_service_name: &str,
    ) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let settings = read_telemetry(&mut reader, default_service_name);
        reader.finish(settings)
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut r = Reader::new(source);

        let bind_addr = r.parse(
            "BIND_ADDR",
            SocketAddr::from(([0, 0, 0, 0], 8000)),
            "host:port such as 0.0.0.0:8000",
        );
        let shutdown_timeout =
            Duration::from_secs(r.parse("SHUTDOWN_TIMEOUT_SECONDS", 20u64, "whole seconds"));
        let database = DatabaseSettings::read(&mut r);
        let auth = read_auth(&mut r);
        let smtp = SmtpSettings {
            host: r.string("SMTP_HOST", "localhost"),
            port: r.parse("SMTP_PORT", 1025u16, "a port number"),
            from: r.string("MAIL_FROM", "Monolith Shop <shop@example.com>"),
            timeout: r.millis("SMTP_TIMEOUT_MS", 10_000),
        };
        if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            r.problem(format!(
                "MAIL_FROM: expected a mailbox such as \"Shop <shop@example.com>\", got {:?}",
                smtp.from
            ));
        }
        let live = LiveStart {
            faults: read_faults(&mut r),
            checkout_mode: r.optional("CHECKOUT_MODE", "blocking or async"),
        };
        let workers = WorkerSettings {
            count: r.parse("CHECKOUT_WORKERS", 16usize, "a whole number of workers"),
            lease: Duration::from_secs(r.parse("OUTBOX_LEASE_SECONDS", 60u64, "whole seconds")),
            max_attempts: r.parse("OUTBOX_MAX_ATTEMPTS", 10u32, "a whole number"),
            poll_every: r.millis("OUTBOX_POLL_MS", 1000),
        };
        if workers.count == 0 {
            r.problem("CHECKOUT_WORKERS: at least 1 (the outbox must drain)".to_string());
        }
        if workers.max_attempts == 0 {
            r.problem("OUTBOX_MAX_ATTEMPTS: at least 1".to_string());
        }
        let http = HttpSettings {
            body_limit_bytes: r.parse("HTTP_BODY_LIMIT_BYTES", 64 * 1024, "a number of bytes"),
        };
        let telemetry = read_telemetry(&mut r, SERVICE_NAME);
        let storefront = read_storefront(&mut r);

        r.finish(Settings {
            bind_addr,
            shutdown_timeout,
            database,
            auth,
            smtp,
            live,
            workers,
            http,
            telemetry,
            storefront,
        })
    }
}

fn read_url(r: &mut Reader, name: &str, default: &str) -> String {
    let url = r.string(name, default);
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        r.problem(format!(
            "{name}: expected an http:// or https:// URL, got {url:?}"
        ));
    }
    url.trim_end_matches('/').to_string()
}

fn read_storefront(r: &mut Reader) -> StorefrontSettings {
    let browser_traces_url = r
        .raw("STOREFRONT_OTLP_TRACES_URL")
        .map(|_| read_url(r, "STOREFRONT_OTLP_TRACES_URL", ""));
    StorefrontSettings {
        jaeger_url: read_url(r, "STOREFRONT_JAEGER_URL", "http://localhost:16686"),
        grafana_url: read_url(r, "STOREFRONT_GRAFANA_URL", "http://localhost:3000"),
        browser_traces_url,
        demo_customer: read_demo_customer(r),
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

/// The fault settings named in the environment; each variable is the admin API's field
/// name in capitals, and both are checked by the same rules.
fn read_faults(r: &mut Reader) -> FaultsUpdate {
    let whole_ms = "a whole number of milliseconds";
    let faults = FaultsUpdate {
        payment_delay_ms: r.optional("PAYMENT_DELAY_MS", whole_ms),
        payment_success_rate: r.optional("PAYMENT_SUCCESS_RATE", "a number from 0 to 1"),
        email_delay_ms: r.optional("EMAIL_DELAY_MS", whole_ms),
        email_outage: r.optional_bool("EMAIL_OUTAGE"),
    };
    for problem in FaultSettings::DEFAULT.with(&faults).problems() {
        r.problem(format!(
            "{}: {}",
            problem.field.to_ascii_uppercase(),
            problem.message
        ));
    }
    faults
}

fn read_auth(r: &mut Reader) -> AuthSettings {
    let secret = r.string("JWT_SECRET", "");
    let allow_insecure = r.bool("ALLOW_INSECURE_JWT_SECRET", false);
    if !allow_insecure {
        if secret.is_empty() {
            r.problem(
                "JWT_SECRET: must be set (generate one with `openssl rand -hex 32`; \
                 for local experiments only, ALLOW_INSECURE_JWT_SECRET=true accepts a weak one)"
                    .to_string(),
            );
        } else if WELL_KNOWN_SECRETS.contains(&secret.to_ascii_lowercase().as_str()) {
            r.problem(
                "JWT_SECRET: is a well-known example value; generate one with \
                 `openssl rand -hex 32` (or set ALLOW_INSECURE_JWT_SECRET=true on a dev machine)"
                    .to_string(),
            );
        } else if secret.len() < MIN_JWT_SECRET_BYTES {
            r.problem(format!(
                "JWT_SECRET: must be at least {MIN_JWT_SECRET_BYTES} bytes long \
                 (or set ALLOW_INSECURE_JWT_SECRET=true on a dev machine)"
            ));
        }
    }
    let secret = if secret.is_empty() {
        // Only reachable with the explicit dev flag.
        "insecure-development-secret".to_string()
    } else {
        secret
    };
    let ttl_seconds = r.parse("JWT_TTL_SECONDS", 3600u64, "whole seconds");
    if ttl_seconds == 0 {
        r.problem("JWT_TTL_SECONDS: must be at least 1".to_string());
    }

    let admin = match (r.raw("ADMIN_EMAIL"), r.raw("ADMIN_PASSWORD")) {
        (None, None) => None,
        (Some(email), Some(password)) => {
            let email = Email::parse(&email)
                .map_err(|e| r.problem(format!("ADMIN_EMAIL: {e}")))
                .ok();
            let password = Password::parse(password)
                .map_err(|e| r.problem(format!("ADMIN_PASSWORD: {e}")))
                .ok();
            email
                .zip(password)
                .map(|(email, password)| AdminAccount { email, password })
        }
        _ => {
            r.problem("ADMIN_EMAIL and ADMIN_PASSWORD: set both or neither".to_string());
            None
        }
    };

    let login_throttle = LoginThrottleSettings {
        per_account: std::num::NonZeroU32::new(r.parse(
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
            10u32,
            "a whole number (0 switches the limit off)",
        )),
        per_address: std::num::NonZeroU32::new(r.parse(
            "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
            100u32,
            "a whole number (0 switches the limit off)",
        )),
    };

    AuthSettings {
        jwt_secret: SecretString::from(secret),
        jwt_ttl: Duration::from_secs(ttl_seconds),
        admin,
        login_throttle,
    }
}

fn read_telemetry(r: &mut Reader, default_service_name: &str) -> TelemetrySettings {
    let log_format = match r
        .string("LOG_FORMAT", "pretty")
        .to_ascii_lowercase()
        .as_str()
    {
        "json" => LogFormat::Json,
        "pretty" | "text" => LogFormat::Pretty,
        other => {
            r.problem(format!(
                "LOG_FORMAT: expected json or pretty, got {other:?}"
            ));
            LogFormat::Pretty
        }
    };
    let otlp_protocol = match r
        .string("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .to_ascii_lowercase()
        .as_str()
    {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => {
            r.problem(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got {other:?}"
            ));
            OtlpProtocol::Grpc
        }
    };
    let default_endpoint = match otlp_protocol {
        OtlpProtocol::Grpc => "http://localhost:4317",
        OtlpProtocol::HttpProtobuf => "http://localhost:4318",
    };
    let otlp_endpoint = r.string("OTEL_EXPORTER_OTLP_ENDPOINT", default_endpoint);
    if !(otlp_endpoint.starts_with("http://") || otlp_endpoint.starts_with("https://")) {
        r.problem(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT: expected an http:// or https:// URL, got {otlp_endpoint:?}"
        ));
    }
    let sampler = read_sampler(r);

    TelemetrySettings {
        log_format,
        log_filter: r.string("RUST_LOG", DEFAULT_LOG_FILTER),
        service_name: r.string("OTEL_SERVICE_NAME", default_service_name),
        traces_enabled: !r.bool("OTEL_SDK_DISABLED", false),
        otlp_endpoint,
        otlp_protocol,
        sampler,
        metrics_enabled: r.bool("METRICS_ENABLED", true),
    }
}

fn read_sampler(r: &mut Reader) -> TraceSampler {
    let name = r
        .string("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .to_ascii_lowercase();
    let mut ratio = || {
        let ratio = r.parse("OTEL_TRACES_SAMPLER_ARG", 1.0f64, "a number from 0 to 1");
        if !(0.0..=1.0).contains(&ratio) {
            r.problem(format!(
                "OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1, got {ratio}"
            ));
        }
        ratio
    };
    match name.as_str() {
        "always_on" => TraceSampler::AlwaysOn,
        "always_off" => TraceSampler::AlwaysOff,
        "traceidratio" => TraceSampler::TraceIdRatio(ratio()),
        "parentbased_always_on" => TraceSampler::ParentBasedAlwaysOn,
        "parentbased_always_off" => TraceSampler::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => TraceSampler::ParentBasedTraceIdRatio(ratio()),
        other => {
            r.problem(format!(
                "OTEL_TRACES_SAMPLER: expected one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio; got {other:?}"
            ));
            TraceSampler::ParentBasedAlwaysOn
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "0123456789abcdef0123456789abcdef-strong";

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_source(&vars)
    }

    /// Answers as a minimal valid environment and remembers every name asked for.
    struct RecordingSource(std::cell::RefCell<Vec<String>>);

    impl Source for RecordingSource {
        fn get(&self, name: &str) -> Option<String> {
            self.0.borrow_mut().push(name.to_string());
            (name == "JWT_SECRET").then(|| STRONG.to_string())
        }
    }

    #[test]
    fn every_variable_read_is_documented_in_the_env_example() {
        let source = RecordingSource(Default::default());
        Settings::from_source(&source).expect("valid");
        let example = include_str!("../.env.example");
        let documented: Vec<&str> = example
            .lines()
            .map(|line| line.trim_start_matches('#').trim())
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        let read = source.0.into_inner();
        assert!(read.len() > 30, "{read:?}");
        for name in read {
            assert!(
                documented.contains(&name.as_str()),
                "{name} is not in .env.example"
            );
        }
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = settings(&[("JWT_SECRET", STRONG)]).expect("valid");
        assert_eq!(s.bind_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.database.max_connections, 10);
        let faults = FaultSettings::DEFAULT.with(&s.live.faults);
        assert_eq!(faults.payment_delay, Duration::from_millis(1000));
        assert_eq!(faults.email_delay, Duration::from_millis(2000));
        assert!((faults.payment_success_rate - 0.95).abs() < f64::EPSILON);
        assert!(s.live.checkout_mode.is_none(), "the shared settings decide");
        assert_eq!(s.telemetry.service_name, "ecommerce-monolith");
        assert!(s.telemetry.traces_enabled);
        assert_eq!(s.telemetry.sampler, TraceSampler::ParentBasedAlwaysOn);
        assert!(s.auth.admin.is_none());
    }

    #[test]
    fn every_bad_variable_is_named_in_one_error() {
        let err = settings(&[
            ("JWT_SECRET", STRONG),
            ("DB_MAX_CONNECTIONS", "many"),
            ("PAYMENT_SUCCESS_RATE", "1.5"),
            ("LOG_FORMAT", "xml"),
            ("BIND_ADDR", "nowhere"),
        ])
        .expect_err("invalid");
        let text = err.to_string();
        for name in [
            "DB_MAX_CONNECTIONS",
            "PAYMENT_SUCCESS_RATE",
            "LOG_FORMAT",
            "BIND_ADDR",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    #[test]
    fn empty_short_or_well_known_secrets_are_refused() {
        for secret in ["", "secret", "short-but-unknown"] {
            let err = settings(&[("JWT_SECRET", secret)]).expect_err("refused");
            assert!(err.to_string().contains("JWT_SECRET"));
        }
    }

    #[test]
    fn the_dev_flag_accepts_a_weak_secret() {
        let s = settings(&[
            ("JWT_SECRET", "secret"),
            ("ALLOW_INSECURE_JWT_SECRET", "true"),
        ]);
        assert!(s.is_ok());
    }

    #[test]
    fn admin_needs_both_variables_and_valid_values() {
        let err = settings(&[("JWT_SECRET", STRONG), ("ADMIN_EMAIL", "a@b.example")])
            .expect_err("only one");
        assert!(err.to_string().contains("ADMIN_PASSWORD"));
        let err = settings(&[
            ("JWT_SECRET", STRONG),
            ("ADMIN_EMAIL", "not-an-email"),
            ("ADMIN_PASSWORD", "long enough password"),
        ])
        .expect_err("bad email");
        assert!(err.to_string().contains("ADMIN_EMAIL"));
    }

    #[test]
    fn sampler_ratio_is_checked() {
        let err = settings(&[
            ("JWT_SECRET", STRONG),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .expect_err("ratio > 1");
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG"));
    }

    #[test]
    fn passwords_are_masked_in_database_urls() {
        assert_eq!(
            redact_url_password("postgres://app:hunter2@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        assert_eq!(
            redact_url_password("postgres://postgres@127.0.0.1/shop"),
            "postgres://postgres@127.0.0.1/shop"
        );
    }
}
