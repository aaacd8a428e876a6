//! The database: where it is, and the pool that is part of the lesson.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::reader::Reader;
use super::reader::{ConfigError, Source};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    /// The pool is part of the lesson: checkouts hold a connection for ~3 s.
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// A round trip to test a pooled connection before a request uses it. On by
    /// default: without it, every pooled connection a restarted server (or a killed
    /// backend) has cut fails one request; with it, none does.
    pub ping_before_acquire: bool,
    /// Only a connection idle at least this long is tested, or one idle through a lost
    /// connection the process saw (0: every one, sqlx's `test_before_acquire`). A
    /// connection cut while the pool held it has been idle since the cut; one in steady
    /// use is trusted, which saves a round trip per request under load (BENCHMARKS.md,
    /// "The pool's ping only when a connection may be dead").
    pub ping_idle_after: Duration,
}

/// Works against the compose stack's Postgres (postgres/postgres) and a local one with
/// trust authentication, which ignores the password.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/ecommerce";

impl DatabaseSettings {
    /// Only what `migrate` and `seed` need: they must work without a JWT secret.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mut reader = Reader::new(source);
        let settings = Self::read(&mut reader);
        reader.finish(settings)
    }

    pub(super) fn read(r: &mut Reader) -> Self {
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
        let ping_before_acquire = r.bool("DB_PING_BEFORE_ACQUIRE", true);
        let ping_idle_after = r.millis("DB_PING_IDLE_AFTER_MS", 1000);
        Self {
            url: SecretString::from(url),
            max_connections,
            acquire_timeout,
            ping_before_acquire,
            ping_idle_after,
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

#[cfg(test)]
mod tests {
    use super::*;

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
