//! `POST /api/v1/users` and `POST /api/v1/auth/token`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::body::{check_username, Body};
use super::openapi::{Credentials, Problem, TokenIssued, UserCreated};
use crate::error::ApiError;
use crate::limits::AuthAttempt;
use crate::server::AppState;
use crate::service::users;

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = UserCreated),
        (status = 409, description = "Username taken", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over RATE_LIMIT_AUTH_PER_MIN", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a request passes again"))),
        (status = 503, description = "A dependency is down, or password hashing is at capacity (PASSWORD_HASH_QUEUE)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))
    )
)]
pub async fn register(
    _attempt: AuthAttempt,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut b = Body::new(&body)?;
    let username = check_username(&mut b);
    let password = b.string("password", 8, 128, false);
    b.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let user = users::register(&state, username, password).await?;
    Ok(HttpResponse::Created().json(json!({ "id": user.id, "username": user.username })))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/token",
    tag = "users",
    request_body = Credentials,
    responses(
        (status = 200, description = "A signed token", body = TokenIssued),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over RATE_LIMIT_AUTH_PER_MIN", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a request passes again"))),
        (status = 503, description = "A dependency is down, or password hashing is at capacity (PASSWORD_HASH_QUEUE)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))
    )
)]
pub async fn token(
    _attempt: AuthAttempt,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut b = Body::new(&body)?;
    // Shape only: a name or password that could never have been registered still gets the
    // same 401 as a wrong one.
    let username = b.string("username", 1, 128, false);
    let password = b.string("password", 1, 1024, false);
    b.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let token = users::token(&state, &username, password).await?;
    Ok(HttpResponse::Ok().json(json!({
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
    })))
}
