//! The OpenAPI 3 document (generated from the handlers' annotations) and Swagger UI, both
//! served from the binary: `/api/v1/openapi.json` and `/docs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::posts::{NewPost, PostPage};
use super::problem::Problem;
use super::ratings::{NewRating, RatingSaved};
use super::users::{Credentials, TokenIssued, UserCreated};

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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "post-rate",
        description = "Rate posts from 0 to 5: exact, burst-damped stats at scale."
    ),
    paths(
        super::users::register,
        super::users::token,
        super::posts::list,
        super::posts::create,
        super::posts::get,
        super::ratings::put,
        super::ratings::delete,
        super::health::healthz,
        super::health::readyz,
        super::metrics::metrics,
    ),
    components(schemas(
        Credentials,
        UserCreated,
        TokenIssued,
        NewPost,
        NewRating,
        RatingSaved,
        PostPage,
        Problem,
        crate::error::FieldError,
        crate::service::posts::Post,
        crate::service::posts::Author,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
