//! Passwords (argon2id, hashed off the async workers), signed expiring tokens (JWT HS256)
//! and the bearer extractors built on actix-web-httpauth.

use std::future::{ready, Ready};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use actix_web_httpauth::extractors::bearer::BearerAuth;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::server::AppState;

/// argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1), the OWASP baseline.
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

/// At most one hash per core at a time: each takes 19 MiB and a core for tens of
/// milliseconds, so unbounded sign-ups would only queue blocking threads and memory. Callers
/// beyond it wait their turn.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

/// Runs one argon2 computation on the blocking pool, within the permits.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

pub async fn hash_password(password: String) -> Result<String, ApiError> {
    hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// A hash of a random password, checked against when the user does not exist so that an
/// unknown user and a wrong password take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        let password: [u8; 16] = rand::random();
        argon2()
            .hash_password(&password, &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Checks a password against a stored hash (or the decoy when `hash` is `None`).
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    hashing(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| decoy_hash().to_owned());
        let ok = PasswordHash::new(&hash)
            .map(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        known && ok
    })
    .await
}

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
