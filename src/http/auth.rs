//! Registration, login and the current user.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use metrics::counter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, OnConstraint};
use super::extract::{AuthUser, Json};
use super::openapi::{Conflict, TooManyRequests, Unauthorized};
use super::state::AppState;
use crate::auth::users::{self, UserView};
use crate::auth::{Role, hash_password, verify_password};
use crate::domain::{Email, FullName, Password};
use crate::telemetry::metrics::LOGIN_THROTTLED;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: Email,
    pub password: Password,
    pub full_name: FullName,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(format = Password)]
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds until the token expires.
    #[schema(example = 3600)]
    pub expires_in: u64,
}

/// Create a customer account.
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserView),
        (status = 409, response = Conflict),
    )
)]
async fn register(
    State(state): State<AppState>,
    Json(request): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let password_hash = hash_password(request.password).await?;
    let mut conn = state.db.acquire().await?;
    let user = users::insert(
        &mut conn,
        request.email.as_str(),
        &password_hash,
        request.full_name.as_str(),
        Role::Customer,
    )
    .await
    .on_constraint("users_email_key", || {
        ApiError::AlreadyExists(format!("{} is already registered", request.email))
    })?;
    tracing::info!(user.id = user.id, "user registered");
    Ok((StatusCode::CREATED, Json(user)))
}

/// Exchange e-mail and password for a bearer token.
///
/// An unknown e-mail and a wrong password get the same answer, in the same time.
/// Attempts are limited per account and per client address
/// (`LOGIN_ATTEMPTS_PER_ACCOUNT_AND_ADDRESS_PER_MINUTE`, `LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE`);
/// beyond that the answer is 429 with `Retry-After`.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, response = Unauthorized),
        (status = 429, response = TooManyRequests),
    )
)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if let Err(wait) = state.login_throttle.attempt(&request.email, peer.ip()) {
        counter!(LOGIN_THROTTLED).increment(1);
        return Err(ApiError::TooManyRequests(wait));
    }
    let email = Email::parse(&request.email).ok();
    let account = match &email {
        Some(email) => {
            let mut conn = state.db.acquire().await?;
            users::credentials(&mut conn, email.as_str()).await?
        }
        None => None,
    };
    let (user_id, stored_hash, role) = match account {
        Some(account) => (Some(account.id), Some(account.password_hash), account.role),
        None => (None, None, Role::Customer),
    };
    let verified = verify_password(request.password, stored_hash).await;
    let Some(user_id) = user_id.filter(|_| verified) else {
        return Err(ApiError::Unauthorized(
            "wrong e-mail address or password".to_string(),
        ));
    };
    let access_token = state.jwt.issue(user_id, role)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "bearer".to_string(),
        expires_in: state.jwt.ttl().as_secs(),
    }))
}

/// The account the token belongs to.
#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "The current user", body = UserView))
)]
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let found = users::find(&mut conn, user.id).await?;
    // A valid token for an account that no longer exists is as good as no token.
    found
        .map(Json)
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".to_string()))
}
