//! Request extractors: the bearer token's user and the rate limits, checked before a handler
//! reads the body, and the JSON body, read here and checked in the handler against its
//! type's rules.

use std::future::{ready, Ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{http::header, web, FromRequest, HttpRequest};
use actix_web_httpauth::extractors::bearer::BearerAuth;
use futures::future::LocalBoxFuture;
use serde_json::Value;

use super::body::{Body, Rules};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::limits::Client;

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// The user of the request's bearer token: 401 when it is missing or bad.
fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let state = state(req)?;
    let bearer = BearerAuth::extract(req)
        .into_inner()
        .map_err(|_| ApiError::Unauthorized("a bearer token is required"))?;
    state.service.tokens.verify(bearer.token())
}

/// The signed-in caller; extracting it answers 401 when the token is missing or bad.
impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// The caller if a token was sent. A token that was sent but is bad is still a 401: a
/// client that believes it is signed in should learn that it is not.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequest for MaybeUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if req.headers().contains_key(header::AUTHORIZATION) {
            ready(authenticate(req).map(|u| MaybeUser(Some(u))))
        } else {
            ready(Ok(MaybeUser(None)))
        }
    }
}

/// The signed-in caller of a write, counted against `RATE_LIMIT_WRITES_PER_MIN`: 401 first
/// for a bad token, then 429 over the limit, before the body is even read.
#[derive(Debug, Clone)]
pub struct Writer(pub AuthUser);

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = authenticate(req).and_then(|user| Ok((user, state(req)?.clone())));
        Box::pin(async move {
            let (user, state) = checked?;
            state.limits.admit_write(user.id).await?;
            Ok(Writer(user))
        })
    }
}

/// A register or token attempt, counted against `RATE_LIMIT_AUTH_PER_MIN`; list it before
/// the body so a flood is refused without parsing or hashing anything.
#[derive(Debug, Clone, Copy)]
pub struct AuthAttempt;

impl FromRequest for AuthAttempt {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?.clone();
            let client = Client {
                peer: req.peer_addr().map(|a| a.ip()),
                forwarded_for: req
                    .headers()
                    .get_all("x-forwarded-for")
                    .last()
                    .map(|v| v.as_bytes()),
            };
            state.limits.admit_auth(client).await?;
            Ok(AuthAttempt)
        })
    }
}

/// A JSON body, read (400 when it is not JSON, 413 over the size limit, 415 for another
/// content type) but not yet checked: [`Fields::check`] gives the `T` or the 422. The check
/// runs in the handler, after every extractor: a 422 must not overtake the rate limit's
/// answer (or its count) while that waits for Redis.
pub struct Fields<T> {
    value: Value,
    kind: PhantomData<T>,
}

impl<T: Rules> Fields<T> {
    /// The body as a `T` when every field passes `T`'s rules (trimmed where a rule trims);
    /// otherwise 422 naming each field that does not.
    pub fn check(self) -> Result<T, ApiError> {
        let mut body = Body::new(&self.value)?;
        T::check(&mut body);
        let passed = body.finish()?;
        serde_json::from_value(Value::Object(passed))
            .map_err(|e| ApiError::Internal(format!("a checked body did not read: {e}")))
    }
}

impl<T: 'static> FromRequest for Fields<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            Ok(Fields {
                value: json.await?.into_inner(),
                kind: PhantomData,
            })
        })
    }
}
