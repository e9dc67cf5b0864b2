//! Rating a post and withdrawing a rating (DESIGN §3).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use crate::auth::AuthUser;
use crate::db;
use crate::db::ratings::{Noop, StoredRating, Withdrawn};
use crate::error::ApiError;
use crate::server::AppState;

pub struct Rated {
    pub post_id: i64,
    pub score: i16,
    pub updated_at: DateTime<Utc>,
}

impl From<StoredRating> for Rated {
    fn from(r: StoredRating) -> Self {
        Rated {
            post_id: r.post_id,
            score: r.score,
            updated_at: r.updated_at,
        }
    }
}

/// Sets the caller's score for a post. The burst weight costs one Redis round trip (full
/// weight when Redis is down); the rating and its outbox row are one SQL statement. An
/// unknown post or the caller's own is refused first, so a refused request leaves no trace,
/// not even in the post's burst baseline.
pub async fn rate(
    state: &AppState,
    user: &AuthUser,
    post_id: i64,
    score: i16,
) -> Result<Rated, ApiError> {
    match author_of(state, post_id).await? {
        // The slow path says it, and whether the caller still exists too.
        None => {
            let mut conn = state.db().await?;
            return refusal(db::ratings::explain_noop(&mut conn, post_id, user.id).await?);
        }
        Some(author) if author == user.id => {
            return Err(ApiError::Forbidden("you cannot rate your own post"))
        }
        Some(_) => {}
    }
    let weight = burst_weight(state, post_id).await;
    // Taken only now: no pooled connection waits on the Redis round trip above.
    let mut conn = state.db().await?;
    // Two passes at most: the second only if the rating was withdrawn between statements.
    for _ in 0..2 {
        if let Some(r) = db::ratings::upsert(&mut conn, post_id, user.id, score, weight).await? {
            state.metrics.ratings_written.inc();
            return Ok(Rated::from(r));
        }
        match db::ratings::explain_noop(&mut conn, post_id, user.id).await? {
            Noop::Raced => continue,
            noop => return refusal(noop),
        }
    }
    refusal(Noop::Raced)
}

/// The answer when the upsert wrote nothing.
fn refusal(noop: Noop) -> Result<Rated, ApiError> {
    match noop {
        Noop::NoSuchUser => Err(ApiError::user_gone()),
        Noop::NoSuchPost => Err(ApiError::post_not_found()),
        Noop::OwnPost => Err(ApiError::Forbidden("you cannot rate your own post")),
        Noop::Unchanged(r) => Ok(Rated::from(r)),
        Noop::Raced => Err(ApiError::Internal(
            "rating kept changing while being written".into(),
        )),
    }
}

/// A post's author. Posts are never deleted nor change author, so a cached answer is always
/// right and the hot path costs no query once a post has been rated here.
async fn author_of(state: &AppState, post_id: i64) -> Result<Option<i64>, ApiError> {
    if let Some(author) = state.authors.get(&post_id).await {
        return Ok(Some(author));
    }
    let mut conn = state.db().await?;
    let author = db::posts::author_of(&mut conn, post_id).await?;
    if let Some(author) = author {
        state.authors.insert(post_id, author).await;
    }
    Ok(author)
}

/// The weight of a new rating in thousandths; full weight, logged and counted, when Redis
/// cannot say.
async fn burst_weight(state: &AppState, post_id: i64) -> i32 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let key = state.stats.store().burst_key(post_id);
    let burst = &state.burst;
    let result = state
        .stats
        .store()
        .with_conn(|mut conn| async move { Ok(burst.weight(&mut conn, &key, now_ms).await?) })
        .await;
    match result {
        Ok(w) => {
            if w < 1000 {
                state.metrics.burst_damped.inc();
            }
            w.clamp(0, 1000)
        }
        Err(e) => {
            log::warn!("burst weight unavailable, using full weight: {e}");
            state.metrics.redis_errors.inc();
            1000
        }
    }
}

/// Withdraws the caller's rating. Withdrawing a rating that does not exist is not an error
/// (the request is idempotent); an unknown post is. One statement says which.
pub async fn withdraw(state: &AppState, user: &AuthUser, post_id: i64) -> Result<(), ApiError> {
    let mut conn = state.db().await?;
    match db::ratings::delete(&mut conn, post_id, user.id).await? {
        Withdrawn::Deleted | Withdrawn::NothingToDelete => Ok(()),
        Withdrawn::NoSuchPost => Err(ApiError::post_not_found()),
        Withdrawn::NoSuchUser => Err(ApiError::user_gone()),
    }
}
