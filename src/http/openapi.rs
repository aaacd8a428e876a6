//! The OpenAPI document's frame: title, security scheme, tags, and the problem
//! responses. Paths and schemas come from the `#[utoipa::path]` annotations on the
//! handlers.
//!
//! Every problem response is defined once here, as a component, and referenced: a
//! handler names only the statuses of its own (`(status = 404, response = NotFound)`),
//! and [`add_common_responses`] adds what any operation of its shape can answer.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::{FieldError, Problem};
use crate::domain::StockShortage;

/// One reusable problem response per status; the doc comment is its description.
macro_rules! problem_responses {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        $(
            $(#[doc = $doc])+
            #[derive(ToResponse)]
            #[response(content_type = "application/problem+json")]
            #[allow(dead_code)]
            pub struct $name(Problem);
        )+
    };
}

problem_responses! {
    /// Malformed request: the body is not JSON, or a path parameter is not a number.
    BadRequest,
    /// Missing, invalid or expired bearer token.
    Unauthorized,
    /// The payment was declined.
    PaymentRequired,
    /// The token is valid but lacks the admin role.
    Forbidden,
    /// No such resource (someone else's looks the same: ids reveal nothing).
    NotFound,
    /// A conflict with the current state: a duplicate, a transition not allowed, not enough stock (`products` lists what is short), or a request with the same `Idempotency-Key` still running (`Retry-After` says when its lease lapses).
    Conflict,
    /// The request body is larger than `HTTP_BODY_LIMIT_BYTES`.
    PayloadTooLarge,
    /// The body must be JSON with `Content-Type: application/json`.
    UnsupportedMediaType,
    /// A field or parameter is invalid (`errors` names each one), an `Idempotency-Key` was used with another request, or a cart's total would be more than an order can hold: 9999999999.99 (`total-too-large`).
    UnprocessableEntity,
    /// Too many attempts: wait the seconds in `Retry-After`.
    TooManyRequests,
    /// A dependency failed: the confirmation e-mail could not be sent.
    BadGateway,
    /// The database is unreachable or no connection became free in time; retry later.
    ServiceUnavailable,
}

/// The request's headers are too large (answered by the HTTP server itself, without a
/// body).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct RequestHeaderFieldsTooLarge;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ecommerce-monolith",
        description = "A deliberately monolithic, thoroughly instrumented shop for learning \
                       system design. Errors are RFC 9457 problem details; every response \
                       carries its trace id in `X-Trace-Id` and its span in `traceresponse` (W3C Trace Context 2). Money is a decimal string such \
                       as \"19.99\".",
    ),
    modifiers(&BearerAuth),
    components(
        schemas(Problem, FieldError, StockShortage),
        responses(
            BadRequest, Unauthorized, PaymentRequired, Forbidden, NotFound, Conflict,
            PayloadTooLarge, UnsupportedMediaType, UnprocessableEntity, TooManyRequests,
            RequestHeaderFieldsTooLarge, BadGateway,
            ServiceUnavailable,
        ),
    ),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Categories and products"),
        (name = "reviews", description = "Product reviews"),
        (name = "cart", description = "The shopping cart"),
        (name = "orders", description = "Checkout and orders"),
        (name = "notifications", description = "The in-app inbox"),
        (name = "admin", description = "Fault injection and reconciliation"),
        (name = "lab", description = "The experiment running now, and the shipped ones"),
        (name = "ops", description = "Health and readiness"),
        (name = "storefront", description = "What the shop page at / reads at start"),
    )
)]
pub struct ApiDoc;

/// `Authorization: Bearer <token>` from `POST /api/auth/login`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds the answers an operation can give because of its shape rather than its purpose,
/// once the handlers' paths are in the document: any operation can answer 431, a
/// protected one 401, an admin-only one (security scope `admin`) 403; one with a JSON
/// body 400, 413, 415 and 422; one with a path parameter 400 and 404; one with query
/// parameters 422; and everything under `/api/` needs the database, so 503.
pub fn add_common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, name) in common_responses(path, operation) {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

fn common_responses(path: &str, operation: &Operation) -> Vec<(&'static str, &'static str)> {
    let has_parameter_in = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
    };
    let security = operation.security.as_deref().unwrap_or_default();
    let mut common = vec![("431", "RequestHeaderFieldsTooLarge")];
    if !security.is_empty() {
        common.push(("401", "Unauthorized"));
    }
    if security.contains(&SecurityRequirement::new("bearer", ["admin"])) {
        common.push(("403", "Forbidden"));
    }
    if operation.request_body.is_some() {
        common.extend([
            ("400", "BadRequest"),
            ("413", "PayloadTooLarge"),
            ("415", "UnsupportedMediaType"),
            ("422", "UnprocessableEntity"),
        ]);
    }
    if has_parameter_in(ParameterIn::Path) {
        common.extend([("400", "BadRequest"), ("404", "NotFound")]);
    }
    if has_parameter_in(ParameterIn::Query) {
        common.push(("422", "UnprocessableEntity"));
    }
    if path.starts_with("/api/") {
        common.push(("503", "ServiceUnavailable"));
    }
    common
}
