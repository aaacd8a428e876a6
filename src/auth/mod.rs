//! Who may do what: password hashing (argon2id), access tokens (HS256 JWTs), roles,
//! the admin account named in the configuration, and the login throttle.
//!
//! Hashing is CPU-bound; it runs on a thread of its own so one login does not stall
//! the other requests on its worker thread.

mod throttle;
pub mod users;

use std::sync::LazyLock;
use std::sync::mpsc::TryRecvError;
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, Block, Params, Version};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use self::throttle::LoginThrottle;
pub use self::users::Role;
use crate::config::AdminAccount;
use crate::db::Database;
use crate::domain::Password;

/// Argon2id with OWASP's low-memory profile (7 MiB, 5 passes, 1 lane), which resists
/// GPU cracking as well as the crate's default (19 MiB, 2 passes) at the same CPU cost.
/// Memory is the scarcer resource here: the whole service runs in about 30 MB.
fn argon2() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).expect("constant, valid argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params)
}

/// Argon2's working memory, reused by the hashes of one burst.
type WorkingMemory = Vec<Block>;
type HashJob = Box<dyn FnOnce(&mut WorkingMemory) + Send>;

/// All hashing runs on one dedicated thread with one buffer, reused while hashes queue
/// and released when none waits. Argon2 is CPU-bound
/// and memory-hard: more hashes at once would not finish sooner on a small machine, and
/// a fresh multi-megabyte allocation per hash, spread over the blocking pool's threads,
/// left each malloc arena holding its own copies (the benchmark saw 570 MB after a burst
/// of logins). A burst of logins queues here instead.
static HASHING_THREAD: LazyLock<Option<std::sync::mpsc::Sender<HashJob>>> = LazyLock::new(|| {
    let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
    std::thread::Builder::new()
        .name("password-hashing".into())
        .spawn(move || {
            let mut memory = WorkingMemory::new();
            loop {
                let job = match queue.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => {
                        // Idle: the 7 MiB go back until the next hash, so that a burst
                        // of logins does not leave them resident for good.
                        memory = WorkingMemory::new();
                        match queue.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                    Err(TryRecvError::Disconnected) => return,
                };
                job(&mut memory);
            }
        })
        .ok()
        .map(|_| jobs)
});

/// Runs one argon2 computation on the hashing thread and waits for it without blocking
/// the async runtime.
async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce(&mut WorkingMemory) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move |memory| {
        let _ = answer.send(work(memory));
    });
    HASHING_THREAD
        .as_ref()
        .context("the password-hashing thread could not be started")?
        .send(job)
        .map_err(|_| anyhow::anyhow!("the password-hashing thread has stopped"))?;
    answered
        .await
        .context("the password-hashing thread dropped a job")
}

/// The raw argon2 output for `password` under `hasher`'s parameters.
fn compute(
    hasher: &Argon2<'_>,
    memory: &mut WorkingMemory,
    password: &[u8],
    salt: &[u8],
    output: &mut [u8],
) -> Result<(), argon2::Error> {
    memory.resize(hasher.params().block_count(), Block::default());
    hasher.hash_password_into_with_memory(password, salt, output, &mut memory[..])
}

/// A PHC string (`$argon2id$v=19$m=7168,t=5,p=1$salt$hash`) for a fresh random salt.
fn hash_with(memory: &mut WorkingMemory, password: &[u8]) -> anyhow::Result<String> {
    let hasher = argon2();
    let salt: [u8; 16] = rand::random();
    let mut output = [0u8; 32];
    compute(&hasher, memory, password, &salt, &mut output)
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    let encoding = |e: &dyn std::fmt::Display| anyhow::anyhow!("encoding the password hash: {e}");
    Ok(PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(hasher.params()).map_err(|e| encoding(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| encoding(&e))?),
        hash: Some(Output::new(&output).map_err(|e| encoding(&e))?),
    }
    .to_string())
}

/// Whether `password` matches the PHC string `stored`, with the stored parameters.
fn matches(memory: &mut WorkingMemory, password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let hasher = argon2::Algorithm::new(parsed.algorithm.as_str())
        .ok()
        .zip(parsed.version.and_then(|v| Version::try_from(v).ok()))
        .zip(Params::try_from(&parsed).ok())
        .map(|((algorithm, version), params)| Argon2::new(algorithm, version, params));
    let Some(hasher) = hasher else {
        return false;
    };
    let mut output = vec![0u8; expected.len()];
    if compute(&hasher, memory, password, salt.as_ref(), &mut output).is_err() {
        return false;
    }
    // Constant time: how much of the hash matched must not leak through timing.
    output
        .iter()
        .zip(expected.as_bytes())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Hashes a password with argon2id and a fresh random salt, as a PHC string.
pub async fn hash_password(password: Password) -> anyhow::Result<String> {
    on_hashing_thread(move |memory| hash_with(memory, password.expose().as_bytes())).await?
}

/// A hash of a password nobody knows. Verifying against it when the e-mail is unknown
/// makes a failed login take as long as a wrong password, so timing does not tell
/// an attacker which addresses have accounts.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_with(&mut WorkingMemory::new(), b"no account has this password").unwrap_or_default()
});

/// Whether `candidate` matches `stored_hash`; `None` verifies against a dummy hash
/// and always answers `false`. The parameters come from the stored hash.
pub async fn verify_password(candidate: String, stored_hash: Option<String>) -> bool {
    on_hashing_thread(move |memory| {
        let known = stored_hash.is_some();
        let hash = stored_hash.unwrap_or_else(|| DUMMY_HASH.clone());
        matches(memory, candidate.as_bytes(), &hash) && known
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

/// Creates the admin account named in the configuration, or makes sure the existing
/// account has the admin role and the configured password.
pub async fn ensure_admin(db: &Database, admin: &AdminAccount) -> anyhow::Result<()> {
    let mut conn = db.acquire().await?;
    let existing = users::credentials(&mut conn, admin.email.as_str())
        .await?
        .map(|account| account.password_hash);
    let password_matches = match existing.clone() {
        Some(hash) => verify_password(admin.password.expose().to_string(), Some(hash)).await,
        None => false,
    };
    let password_hash = match (existing, password_matches) {
        (Some(hash), true) => hash,
        _ => hash_password(admin.password.clone()).await?,
    };
    users::put(
        &mut conn,
        admin.email.as_str(),
        &password_hash,
        "Administrator",
        Role::Admin,
    )
    .await?;
    tracing::info!(email = %admin.email, "admin account ready");
    Ok(())
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
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(verify_password("correct horse".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong horse".into(), Some(hash)).await);
        assert!(!verify_password("correct horse".into(), None).await);
    }

    #[tokio::test]
    async fn hashes_from_the_argon2_crate_itself_verify_too() {
        use argon2::PasswordHasher;
        // The crate's default parameters (19 MiB, 2 passes), as older records may have.
        let standard = Argon2::default()
            .hash_password(b"legacy password")
            .unwrap()
            .to_string();
        assert!(verify_password("legacy password".into(), Some(standard.clone())).await);
        assert!(!verify_password("wrong".into(), Some(standard)).await);
        assert!(!verify_password("x".into(), Some("not a phc string".into())).await);
    }
}
