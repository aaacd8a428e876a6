//! Password hashing (argon2id) and access tokens (HS256 JWTs).
//!
//! Both are CPU-bound; hashing runs on the blocking pool so one login does not stall
//! the other requests on its worker thread.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::domain::Password;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    pub fn from_db(value: &str) -> Self {
        if value == "admin" {
            Role::Admin
        } else {
            Role::Customer
        }
    }
}

/// Argon2id needs 19 MiB and a core's worth of CPU per hash. More hashes at once than
/// there are cores would not finish sooner, only use more memory: a burst of logins
/// queues here instead.
static HASHING_SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Runs one argon2 computation on the blocking pool, within the hashing slots.
async fn with_hashing_slot<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _slot = HASHING_SLOTS
        .acquire()
        .await
        .context("the hashing semaphore is closed")?;
    tokio::task::spawn_blocking(work)
        .await
        .context("password hashing task panicked")
}

/// Hashes a password with argon2id and a fresh random salt, as a PHC string.
pub async fn hash_password(password: Password) -> anyhow::Result<String> {
    with_hashing_slot(move || {
        Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
    })
    .await?
}

/// A hash of a password nobody knows. Verifying against it when the e-mail is unknown
/// makes a failed login take as long as a wrong password, so timing does not tell
/// an attacker which addresses have accounts.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(b"no account has this password")
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

/// Whether `candidate` matches `stored_hash`; `None` verifies against a dummy hash
/// and always answers `false`.
pub async fn verify_password(candidate: String, stored_hash: Option<String>) -> bool {
    with_hashing_slot(move || {
        let known = stored_hash.is_some();
        let hash = stored_hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let matches = PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(candidate.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        known && matches
    })
    .await
    .unwrap_or(false)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
}

/// Signs and checks access tokens. The algorithm is pinned to HS256: a token that
/// claims any other algorithm (including `none`) is rejected.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

impl JwtKeys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Expiry is exact: a token is dead the second its `exp` passes.
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: i64, role: Role) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("signing an access token")
    }

    /// The user id and role of a valid token.
    pub fn verify(&self, token: &str) -> Result<(i64, Role), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user_id = data.claims.sub.parse().map_err(|_| TokenError::Invalid)?;
        Ok((user_id, data.claims.role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ttl: u64) -> JwtKeys {
        JwtKeys::new(
            &SecretString::from("a test secret that is long enough!!"),
            Duration::from_secs(ttl),
        )
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = keys(60);
        let token = keys.issue(42, Role::Admin).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), (42, Role::Admin));
    }

    #[test]
    fn tampered_and_foreign_tokens_are_invalid() {
        let keys = keys(60);
        let token = keys.issue(42, Role::Customer).unwrap();
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(keys.verify(&tampered), Err(TokenError::Invalid)));

        let other = JwtKeys::new(
            &SecretString::from("another secret, also long enough!!"),
            Duration::from_secs(60),
        );
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid)));
        assert!(matches!(keys.verify("not.a.jwt"), Err(TokenError::Invalid)));
    }

    #[test]
    fn expired_tokens_are_reported_as_expired() {
        let keys = keys(60);
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "1".into(),
            role: Role::Customer,
            iat: now - 120,
            exp: now - 60,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
    }

    #[test]
    fn unsigned_tokens_are_rejected() {
        // {"alg":"none"} header with valid-looking claims and no signature.
        let keys = keys(60);
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                     eyJzdWIiOiIxIiwicm9sZSI6ImFkbWluIiwiaWF0IjoxLCJleHAiOjk5OTk5OTk5OTl9.";
        assert!(matches!(keys.verify(token), Err(TokenError::Invalid)));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password(Password::parse("correct horse".into()).unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong horse".into(), Some(hash)).await);
        assert!(!verify_password("correct horse".into(), None).await);
    }
}
