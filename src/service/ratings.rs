//! Rating a post and withdrawing a rating (DESIGN §3).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use super::Context;
use crate::auth::AuthUser;
use crate::db;
use crate::db::ratings::{Noop, StoredRating, Withdrawn};
use crate::error::ApiError;
use crate::stats::burst::Arrival;

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
/// not even in the post's burst baseline; a write that turns out to be a no-op (an unchanged
/// score) takes its arrival back with a second round trip (`stats::burst`).
pub async fn rate(
    state: &Context,
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
    let arrival = burst_arrival(state, post_id, user.id).await;
    let weight = arrival.map_or(1000, |a| a.weight_milli);
    // Taken only now: no pooled connection waits on the Redis round trip above.
    let mut conn = state.db().await?;
    // Two passes at most: the second only if the rating was withdrawn between statements.
    for _ in 0..2 {
        if let Some(r) = db::ratings::upsert(&mut conn, post_id, user.id, score, weight).await? {
            state.metrics.ratings_written.inc();
            if weight < 1000 {
                state.metrics.burst_damped.inc();
            }
            return Ok(Rated::from(r));
        }
        let noop = db::ratings::explain_noop(&mut conn, post_id, user.id).await?;
        if !matches!(noop, Noop::Raced) {
            undo_arrival(state, post_id, user.id, arrival).await;
        }
        match noop {
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
async fn author_of(state: &Context, post_id: i64) -> Result<Option<i64>, ApiError> {
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

/// Records the caller's call in the post's burst detector and returns its weight; `None`
/// (full weight, logged and counted) when Redis cannot say.
async fn burst_arrival(state: &Context, post_id: i64, user_id: i64) -> Option<Arrival> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let result = state
        .stats
        .store()
        .burst_weight(&state.burst, post_id, user_id, now_ms)
        .await;
    match result {
        Ok(a) => Some(Arrival {
            weight_milli: a.weight_milli.clamp(0, 1000),
            ..a
        }),
        Err(e) => {
            log::warn!("burst weight unavailable, using full weight: {e}");
            state.metrics.redis_errors.inc();
            None
        }
    }
}

/// Takes back a recorded call whose write was a no-op, so an unchanged score counts nothing.
/// A failure only leaves one arrival too many in one bucket: logged and counted.
async fn undo_arrival(state: &Context, post_id: i64, user_id: i64, arrival: Option<Arrival>) {
    let Some(arrival) = arrival else { return };
    let result = state
        .stats
        .store()
        .burst_undo(&state.burst, post_id, user_id, arrival.bucket)
        .await;
    if let Err(e) = result {
        log::warn!("burst arrival of a no-op rating not taken back: {e}");
        state.metrics.redis_errors.inc();
    }
}

/// Withdraws the caller's rating. Withdrawing a rating that does not exist is not an error
/// (the request is idempotent); an unknown post is. One statement says which.
pub async fn withdraw(state: &Context, user: &AuthUser, post_id: i64) -> Result<(), ApiError> {
    let mut conn = state.db().await?;
    match db::ratings::delete(&mut conn, post_id, user.id).await? {
        Withdrawn::Deleted | Withdrawn::NothingToDelete => Ok(()),
        Withdrawn::NoSuchPost => Err(ApiError::post_not_found()),
        Withdrawn::NoSuchUser => Err(ApiError::user_gone()),
    }
}
