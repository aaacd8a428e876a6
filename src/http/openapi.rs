//! The OpenAPI document's frame: title, security scheme, tags. The paths and schemas
//! come from the `#[utoipa::path]` annotations on the handlers.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{FieldError, Problem, StockShortage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ecommerce-monolith",
        description = "A deliberately monolithic, thoroughly instrumented shop for learning \
                       system design. Errors are RFC 9457 problem details; every response \
                       carries its trace id in `X-Trace-Id`. Money is a decimal string such \
                       as \"19.99\".",
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem, FieldError, StockShortage)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Categories and products"),
        (name = "reviews", description = "Product reviews"),
        (name = "cart", description = "The shopping cart"),
        (name = "orders", description = "Checkout and orders"),
        (name = "notifications", description = "The in-app inbox"),
        (name = "admin", description = "Fault injection"),
        (name = "ops", description = "Health and readiness"),
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
