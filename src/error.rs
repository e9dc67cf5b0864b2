//! The one API error type, rendered as `application/problem+json` (RFC 9457).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// One invalid field of a request body or query string.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the 256 KiB limit")]
    PayloadTooLarge,
    /// The body did not arrive within HTTP_BODY_TIMEOUT_MS or below its minimum rate.
    #[error("the request did not arrive in time")]
    RequestTimeout,
    /// Target and headers over HTTP_MAX_HEADER_BYTES.
    #[error("the request's target and headers are larger than the limit")]
    HeadersTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request has invalid fields")]
    Validation(Vec<FieldError>),
    /// Over a RATE_LIMIT_*; answered with `Retry-After`.
    #[error("too many requests; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// A dependency (PostgreSQL, Redis) is down; the cause is logged, never sent.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Expensive work (password hashing) is at capacity: refused at once, not queued.
    #[error("{0} is at capacity; retry shortly")]
    Busy(&'static str),
    /// A bug: logged with its cause, answered without detail.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn post_not_found() -> Self {
        ApiError::NotFound("post not found".into())
    }

    /// A valid token whose user row no longer exists: the caller is not signed in.
    pub fn user_gone() -> Self {
        ApiError::Unauthorized("the token's user does not exist")
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("bad-request", "Bad Request"),
            ApiError::Unauthorized(_) => ("unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => ("forbidden", "Forbidden"),
            ApiError::NotFound(_) => ("not-found", "Not Found"),
            ApiError::MethodNotAllowed(_) => ("method-not-allowed", "Method Not Allowed"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::PayloadTooLarge => ("payload-too-large", "Payload Too Large"),
            ApiError::RequestTimeout => ("request-timeout", "Request Timeout"),
            ApiError::HeadersTooLarge => ("headers-too-large", "Request Header Fields Too Large"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported Media Type")
            }
            ApiError::Validation(_) => ("validation-error", "Unprocessable Content"),
            ApiError::TooManyRequests { .. } => ("too-many-requests", "Too Many Requests"),
            ApiError::Unavailable(_) => ("service-unavailable", "Service Unavailable"),
            ApiError::Busy(_) => ("overloaded", "Service Unavailable"),
            ApiError::Internal(_) => ("internal-error", "Internal Server Error"),
        }
    }
}

/// The problem document; `errors` only for invalid fields.
#[derive(Debug, Serialize)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<&'a [FieldError]>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            ApiError::Internal(cause) => {
                log::error!("internal error: {cause}");
                "the server could not complete the request".to_owned()
            }
            ApiError::Unavailable(_) => {
                "a dependency of the service is unavailable; retry later".to_owned()
            }
            ApiError::Validation(errors) if errors.len() == 1 => {
                format!("{}: {}", errors[0].field, errors[0].message)
            }
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Validation(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let problem = Problem {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut builder = HttpResponse::build(status);
        builder.content_type(PROBLEM_JSON);
        match self {
            ApiError::Unauthorized(_) => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                builder.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Unavailable(_) | ApiError::Busy(_) => {
                builder.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        builder.json(problem)
    }
}
