//! `POST /api/v1/users` and `POST /api/v1/auth/token`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{check_username, Body, Rules};
use super::extract::{AuthAttempt, Fields};
use super::problem::{AuthLimit, BadBody, Problem};
use crate::app::AppState;
use crate::error::ApiError;
use crate::service::users;

/// Body of `POST /api/v1/users` and `POST /api/v1/auth/token`.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3 to 32 of `A-Z a-z 0-9 _ . -`.
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    pub username: String,
    /// 8 to 128 characters, no NUL.
    #[schema(min_length = 8, max_length = 128, pattern = r"^[^\x00]*$")]
    pub password: String,
}

impl Rules for Credentials {
    fn check(body: &mut Body<'_>) {
        check_username(body);
        body.string("password", 8, 128, false);
    }
}

/// What `POST /api/v1/auth/token` reads: the same fields, checked for shape only, so that a
/// name or password that could never have been registered gets the same 401 as a wrong one.
#[derive(Deserialize)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl Rules for Login {
    fn check(body: &mut Body<'_>) {
        body.string("username", 1, 128, false);
        body.string("password", 1, 1024, false);
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserCreated {
    pub id: i64,
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenIssued {
    pub access_token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: &'static str,
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = UserCreated),
        (status = 409, description = "Username taken", body = Problem, content_type = "application/problem+json"),
        BadBody,
        AuthLimit
    )
)]
pub async fn register(
    _attempt: AuthAttempt,
    state: web::Data<AppState>,
    body: Fields<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let body = body.check()?;
    let user = users::register(&state.service, body.username, body.password).await?;
    Ok(HttpResponse::Created().json(UserCreated {
        id: user.id,
        username: user.username,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/token",
    tag = "users",
    request_body = Credentials,
    responses(
        (status = 200, description = "A signed token", body = TokenIssued),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
        BadBody,
        AuthLimit
    )
)]
pub async fn token(
    _attempt: AuthAttempt,
    state: web::Data<AppState>,
    body: Fields<Login>,
) -> Result<HttpResponse, ApiError> {
    let body = body.check()?;
    let token = users::token(&state.service, &body.username, body.password).await?;
    Ok(HttpResponse::Ok().json(TokenIssued {
        access_token: token.access_token,
        expires_in: token.expires_in,
        token_type: "Bearer",
    }))
}
