//! Accounts and tokens: the JWT secret (refused when weak), the admin account, the login
//! throttle.

use std::time::Duration;

use secrecy::SecretString;

use super::reader::Reader;
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
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub jwt_ttl: Duration,
    pub admin: Option<AdminAccount>,
    pub login_throttle: LoginThrottleSettings,
}

/// Login attempts allowed per minute (bursts included); `None` switches a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottleSettings {
    /// For one account from one client address.
    pub per_account_and_address: Option<std::num::NonZeroU32>,
    pub per_address: Option<std::num::NonZeroU32>,
}

#[derive(Debug, Clone)]
pub struct AdminAccount {
    pub email: Email,
    pub password: Password,
}

pub(super) fn read(r: &mut Reader) -> AuthSettings {
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
        per_account_and_address: std::num::NonZeroU32::new(r.parse(
            "LOGIN_ATTEMPTS_PER_ACCOUNT_AND_ADDRESS_PER_MINUTE",
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
