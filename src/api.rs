//! The HTTP API: routes, JSON and error plumbing; one file per resource.

pub mod body;
pub mod connection;
pub mod edges;
pub mod extract;
pub mod health;
mod metrics;
pub mod observe;
pub mod openapi;
mod posts;
pub mod problem;
mod ratings;
mod users;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use utoipa::OpenApi;

use crate::error::{ApiError, PROBLEM_JSON};

/// The largest request body accepted (DESIGN §6).
pub const BODY_LIMIT: usize = 256 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(BODY_LIMIT)
            .error_handler(json_error),
    )
    // Registered before the /api/v1 scope, which would otherwise claim the document's path.
    // Swagger UI's assets are compiled in (the `vendored` feature): nothing is fetched.
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url("/api/v1/openapi.json", openapi::ApiDoc::openapi()),
    )
    .service(
        web::scope("/api/v1")
            .service(
                web::resource("/users")
                    .route(web::post().to(users::register))
                    .default_service(allow("POST")),
            )
            .service(
                web::resource("/auth/token")
                    .route(web::post().to(users::token))
                    .default_service(allow("POST")),
            )
            .service(
                web::resource("/posts")
                    .route(web::get().to(posts::list))
                    .route(web::post().to(posts::create))
                    .default_service(allow("GET, POST")),
            )
            .service(
                web::resource("/posts/{id}")
                    .route(web::get().to(posts::get))
                    .default_service(allow("GET")),
            )
            .service(
                web::resource("/posts/{id}/rating")
                    .route(web::put().to(ratings::put))
                    .route(web::delete().to(ratings::delete))
                    .default_service(allow("PUT, DELETE")),
            ),
    )
    .route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/docs/"))
                .finish()
        }),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(allow("GET")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics::metrics))
            .default_service(allow("GET")),
    )
    .default_service(web::to(not_found));
}

/// Turns every error answer that is not already problem+json (actix's own, from any layer)
/// into one, so that clients only ever parse one error shape.
pub fn problem_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        // Ours already: a problem, or a JSON document of its own (the 503 of /readyz).
        let is_ours = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(PROBLEM_JSON.as_bytes()) || v.starts_with(b"application/json")
        });
        if is_ours {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let error = match status.as_u16() {
            400 => ApiError::BadRequest("the request is malformed".into()),
            401 => ApiError::Unauthorized("authentication is required"),
            404 => ApiError::NotFound("no such resource".into()),
            405 => ApiError::MethodNotAllowed("method not allowed on this resource".into()),
            408 => ApiError::RequestTimeout,
            413 => ApiError::PayloadTooLarge,
            415 => ApiError::UnsupportedMediaType("expected application/json".into()),
            431 => ApiError::HeadersTooLarge,
            s if s >= 500 => ApiError::Internal(format!("unhandled {status} answer")),
            _ => ApiError::BadRequest(
                status
                    .canonical_reason()
                    .unwrap_or("the request was refused")
                    .into(),
            ),
        };
        let mut problem: HttpResponse<BoxBody> = error.error_response();
        *problem.status_mut() = status;
        let (req, _) = res.into_parts();
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, problem)
                .map_into_right_body::<B>()
                .map_body(|_, b| match b {
                    EitherBody::Left { body } => EitherBody::left(body),
                    EitherBody::Right { body } => EitherBody::right(body),
                }),
        ))
    })
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("the body must be application/json".into())
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::BadRequest(format!("the body is not valid JSON: {e}"))
        }
        JsonPayloadError::Payload(e) if edges::is_body_timeout(&e) => ApiError::RequestTimeout,
        other => ApiError::BadRequest(format!("the body could not be read: {other}")),
    }
    .into()
}

async fn not_found() -> HttpResponse {
    ApiError::NotFound("no such resource".into()).error_response()
}

/// The answer to a method a resource does not have: 405 with the `Allow` header.
fn allow(methods: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut res =
            ApiError::MethodNotAllowed(format!("this resource allows {methods}")).error_response();
        res.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(methods));
        res
    })
}

/// Post ids are positive integers; anything else names no post.
pub fn post_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(ApiError::post_not_found)
}
