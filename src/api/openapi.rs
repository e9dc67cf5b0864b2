//! The OpenAPI 3 document (generated from the handlers' annotations) and Swagger UI, both
//! served from the binary: `/api/v1/openapi.json` and `/docs`.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Body of `POST /api/v1/users` and `POST /api/v1/auth/token`.
#[derive(Serialize, ToSchema)]
pub struct Credentials {
    /// 3 to 32 of `A-Z a-z 0-9 _ . -`.
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    pub username: String,
    /// 8 to 128 characters, no NUL.
    #[schema(min_length = 8, max_length = 128, pattern = r"^[^\x00]*$")]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserCreated {
    pub id: i64,
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenIssued {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Body of `POST /api/v1/posts`. Both fields are trimmed and may not be blank or hold NUL.
#[derive(Serialize, ToSchema)]
pub struct NewPost {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub title: String,
    #[schema(
        min_length = 1,
        max_length = 20000,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub content: String,
}

/// Body of `PUT /api/v1/posts/{id}/rating`.
#[derive(Serialize, ToSchema)]
pub struct NewRating {
    #[schema(minimum = 0, maximum = 5)]
    pub score: i16,
}

#[derive(Serialize, ToSchema)]
pub struct RatingSaved {
    pub post_id: i64,
    #[schema(minimum = 0, maximum = 5)]
    pub score: i16,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct PostPage {
    pub results: Vec<crate::service::posts::Post>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// An RFC 9457 problem document, the body of every error.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/validation-error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Present for 422: one entry per invalid field.
    pub errors: Option<Vec<crate::error::FieldError>>,
}

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
        super::health::metrics,
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
