//! Passwords (argon2id, on their own threads: [`password`]), signed expiring tokens
//! (JWT HS256) and the bearer extractors built on actix-web-httpauth.

pub mod password;

use std::future::{ready, Ready};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use actix_web_httpauth::extractors::bearer::BearerAuth;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::server::AppState;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (RFC 7519).
    pub sub: String,
    pub name: String,
    pub iat: u64,
    pub exp: u64,
}

/// Token signing and checking; HS256 only, every other algorithm (and `none`) is refused.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        validation.leeway = 0;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn issue(&self, user_id: i64, username: &str) -> Result<String, ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            name: username.to_owned(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        Ok(AuthUser {
            id,
            username: data.claims.name,
        })
    }
}

/// The signed-in caller; extracting it answers 401 when the token is missing or bad.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
}

/// The caller if a token was sent. A token that was sent but is bad is still a 401: a
/// client that believes it is signed in should learn that it is not.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<AuthUser>);

pub(crate) fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let bearer = BearerAuth::extract(req)
        .into_inner()
        .map_err(|_| ApiError::Unauthorized("a bearer token is required"))?;
    state.tokens.verify(bearer.token())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

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
