//! Registering users and issuing tokens.

use super::Context;
use crate::db;
use crate::error::ApiError;

pub struct Registered {
    pub id: i64,
    pub username: String,
}

pub async fn register(
    state: &Context,
    username: String,
    password: String,
) -> Result<Registered, ApiError> {
    let hash = state.passwords.hash(password).await?;
    let mut conn = state.db().await?;
    let user = db::users::insert(&mut conn, &username, &hash)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("username {username:?} is taken")))?;
    Ok(Registered {
        id: user.id,
        username: user.username,
    })
}

pub struct Token {
    pub access_token: String,
    pub expires_in: u64,
}

/// One answer for an unknown user and a wrong password, in about the same time.
pub async fn token(state: &Context, username: &str, password: String) -> Result<Token, ApiError> {
    let user = {
        let mut conn = state.db().await?;
        db::users::find_by_username(&mut conn, username).await?
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // An unknown user is checked against a decoy hash: the same work and the same answer.
    let ok = state.passwords.verify(password, hash).await?;
    match user {
        Some(user) if ok => Ok(Token {
            access_token: state.tokens.issue(user.id, &user.username)?,
            expires_in: state.tokens.ttl_secs,
        }),
        _ => Err(ApiError::Unauthorized("invalid username or password")),
    }
}
