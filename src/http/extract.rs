//! Request extractors whose failures are problem details: a JSON body and query string
//! that name the offending field, path parameters, and the authenticated caller.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, FieldError};
use crate::auth::{JwtKeys, Role, TokenError};
use crate::config::StorefrontSettings;
use crate::domain::IdempotencyKey;
use crate::telemetry;

/// A JSON request body. Malformed JSON is a 400; a well-formed body with a missing,
/// mistyped or invalid field is a 422 whose `errors` name the field.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".to_string(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::PayloadTooLarge
        }
        other => ApiError::BadRequest(format!(
            "could not read the request body: {}",
            other.body_text()
        )),
    }
}

/// Deserializes a JSON body, naming the field that failed. The body must be an object:
/// serde would otherwise also fill a struct from an array of its fields in order.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(bytes);
        return Err(match parsed {
            Ok(_) => ApiError::validation("body", "must be a JSON object"),
            Err(error) => ApiError::BadRequest(format!("the body is not valid JSON: {error}")),
        });
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::BadRequest(format!("the body is not valid JSON: {inner}"))
            }
            serde_json::error::Category::Data | serde_json::error::Category::Io => {
                ApiError::Validation(vec![field_error(path, &inner.to_string())])
            }
        }
    })
}

fn field_error(path: String, message: &str) -> FieldError {
    // serde's messages end with "at line 1 column 12", which helps nobody here.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    // A missing field is reported at its parent; name the field itself.
    let field = match message.strip_prefix("missing field `") {
        Some(rest) => {
            let name = rest.trim_end_matches('`');
            if path == "." || path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        }
        None if path == "." => "body".to_string(),
        None => path,
    };
    FieldError { field, message }
}

/// A query string; a bad parameter is a 422 naming it.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::Validation(vec![field_error(path, &error.into_inner().to_string())])
            })
    }
}

/// Which page of a list: `limit` and `offset` in the query string, the same rules for
/// every list. Read next to the list's own filters, from the same query string.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

impl Page {
    pub const DEFAULT_LIMIT: i64 = 20;
    pub const MAX_LIMIT: i64 = 100;

    /// The limit and offset to use, or a 422 naming the parameter out of range.
    pub fn bounds(self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(Self::DEFAULT_LIMIT);
        let offset = self.offset.unwrap_or(0);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(ApiError::validation(
                "limit",
                format!("must be from 1 to {}", Self::MAX_LIMIT),
            ));
        }
        if offset < 0 {
            return Err(ApiError::validation("offset", "must not be negative"));
        }
        Ok((limit, offset))
    }
}

/// A page of a list, with how many items there are on all pages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// How many items match the filters, on all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// The `Idempotency-Key` header, if the client sent one (see `crate::idempotency`).
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(Self(None));
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
        IdempotencyKey::parse(text)
            .map(|key| Self(Some(key)))
            .map_err(|problem| ApiError::BadRequest(format!("Idempotency-Key {problem}")))
    }
}

/// A path parameter such as `{id}`; a non-numeric id is a 400, not a 500.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| {
                ApiError::BadRequest(format!("invalid path parameter: {}", rejection.body_text()))
            })
    }
}

/// The caller, from a valid `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: i64,
    pub role: Role,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".to_string()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        let keys = Arc::<JwtKeys>::from_ref(state);
        let (id, role) = keys.verify(token).map_err(|error| match error {
            TokenError::Expired => ApiError::Unauthorized("the access token has expired".into()),
            TokenError::Invalid => ApiError::Unauthorized("the access token is invalid".into()),
        })?;
        telemetry::http::record_end_user(id);
        Ok(AuthUser { id, role })
    }
}

/// An authenticated caller with the admin role; anyone else gets 403.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub AuthUser);

impl<S> FromRequestParts<S> for AdminUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(AdminUser(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Who may change the live settings — the checkout mode, the faults, the rungs: the
/// admin, or, with the classroom switch `STOREFRONT_OPEN_LAB` on, any signed-in user.
#[derive(Debug, Clone, Copy)]
pub struct LabKeeper(pub AuthUser);

impl<S> FromRequestParts<S> for LabKeeper
where
    Arc<JwtKeys>: FromRef<S>,
    Arc<StorefrontSettings>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.is_admin() || Arc::<StorefrontSettings>::from_ref(state).open_lab {
            Ok(LabKeeper(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: crate::domain::Email,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: crate::domain::Quantity,
    }

    fn problem_of(json: &str) -> ApiError {
        parse_json::<Body>(json.as_bytes()).expect_err("must fail")
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            problem_of("{\"email\": "),
            ApiError::BadRequest(_)
        ));
    }

    #[test]
    fn field_errors_name_the_field() {
        let ApiError::Validation(errors) =
            problem_of(r#"{"email":"a@b.example","items":[{"quantity":0}]}"#)
        else {
            panic!("expected a validation error")
        };
        assert_eq!(errors[0].field, "items[0].quantity");
        assert!(errors[0].message.contains("at least 1"));
    }

    #[test]
    fn missing_fields_are_named() {
        let ApiError::Validation(errors) = problem_of(r#"{"items":[]}"#) else {
            panic!("expected a validation error")
        };
        assert_eq!(errors[0].field, "email");
    }
}
