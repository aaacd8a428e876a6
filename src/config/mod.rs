//! Settings, read once from the environment (12-factor) into typed values, one section
//! per part of the service.
//!
//! Every variable is documented in `.env.example` and in the README. A bad value is
//! reported as a start-up error that names the variable; all problems are reported at
//! once so a user fixes their `.env` in one go (see [`reader`]).

mod auth;
mod checkout;
mod database;
mod reader;
mod storefront;
mod telemetry;

use std::net::SocketAddr;
use std::time::Duration;

pub use self::auth::{AdminAccount, AuthSettings, LoginThrottleSettings};
pub use self::checkout::{LiveStart, SmtpSettings, WorkerSettings};
pub use self::database::{DEFAULT_DATABASE_URL, DatabaseSettings};
use self::reader::Reader;
pub use self::reader::{ConfigError, ProcessEnv, Source};
pub use self::storefront::{
    DEMO_CUSTOMER_EMAIL, DEMO_CUSTOMER_PASSWORD, DemoCustomer, StorefrontSettings, ToolLink,
};
pub use self::telemetry::{
    DEFAULT_LOG_FILTER, DEFAULT_LOG_FORMAT_CLI, LogFormat, OtlpCompression, OtlpProtocol,
    SERVICE_NAME, SpanBatchSettings, TelemetrySettings, TraceSampler,
};

#[derive(Debug, Clone)]
pub struct Settings {
    pub bind_addr: SocketAddr,
    /// After SIGTERM, requests in flight get this long; what still runs then is rolled
    /// back and counted.
    pub shutdown_timeout: Duration,
    /// After that deadline, how long `/metrics` still answers, for a last scrape.
    pub shutdown_metrics_linger: Duration,
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

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub body_limit_bytes: usize,
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
        let shutdown_metrics_linger =
            Duration::from_secs(r.parse("SHUTDOWN_METRICS_LINGER_SECONDS", 5u64, "whole seconds"));
        let database = DatabaseSettings::read(&mut r);
        let auth = auth::read(&mut r);
        let smtp = SmtpSettings::read(&mut r);
        let live = LiveStart::read(&mut r);
        let workers = WorkerSettings::read(&mut r);
        let http = HttpSettings {
            body_limit_bytes: r.parse("HTTP_BODY_LIMIT_BYTES", 64 * 1024, "a number of bytes"),
        };
        let telemetry = telemetry::read(&mut r, SERVICE_NAME);
        let mut storefront = storefront::read(&mut r);
        storefront.lab_keeper = auth.admin.as_ref().map(|admin| admin.email.clone());

        r.finish(Settings {
            bind_addr,
            shutdown_timeout,
            shutdown_metrics_linger,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FaultSettings;

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
        let example = include_str!("../../.env.example");
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
}
