//! Creating and reading posts, with their stats and the caller's own rating.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::auth::AuthUser;
use crate::db::{self, posts::PageKey, posts::PostRow};
use crate::error::ApiError;
use crate::server::AppState;
use crate::stats::{PostStats, PublicStats};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Author {
    pub id: i64,
    pub username: String,
}

/// A post as the API shows it. Stats fields are `null` only when Redis could not be
/// reached and the cache held nothing for the post.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Post {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub created_by: Author,
    pub created_at: DateTime<Utc>,
    pub rating_count: Option<i64>,
    pub average_rating: Option<f64>,
    pub raw_average_rating: Option<f64>,
    pub rating_histogram: Option<[i64; 6]>,
    pub user_rating: Option<i16>,
}

impl Post {
    fn new(row: PostRow, stats: Option<&PostStats>, user_rating: Option<i16>) -> Self {
        let public = stats.map(PublicStats::from);
        Post {
            id: row.id,
            title: row.title,
            content: row.content,
            created_by: Author {
                id: row.author_id,
                username: row.author_username,
            },
            created_at: row.created_at,
            rating_count: public.map(|p| p.rating_count),
            average_rating: public.and_then(|p| p.average_rating),
            raw_average_rating: public.and_then(|p| p.raw_average_rating),
            rating_histogram: public.map(|p| p.rating_histogram),
            user_rating,
        }
    }
}

pub async fn create(
    state: &AppState,
    author: &AuthUser,
    title: String,
    content: String,
) -> Result<Post, ApiError> {
    let mut conn = state.db().await?;
    let (id, created_at) = db::posts::insert(&mut conn, author.id, &title, &content)
        .await
        .map_err(|e| match e {
            // A valid token of a user that no longer exists (the database was reset).
            db::DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => ApiError::Unauthorized("the token's user does not exist"),
            other => other.into(),
        })?;
    let row = PostRow {
        id,
        title,
        content,
        author_id: author.id,
        author_username: author.username.clone(),
        created_at,
    };
    Ok(Post::new(row, Some(&PostStats::default()), None))
}

pub async fn get(state: &AppState, viewer: Option<&AuthUser>, id: i64) -> Result<Post, ApiError> {
    let mut conn = state.db().await?;
    let (row, mine) = db::posts::get(&mut conn, viewer.map(|u| u.id), id)
        .await?
        .ok_or_else(ApiError::post_not_found)?;
    drop(conn);
    let stats = stats_of(state, &[id]).await;
    Ok(Post::new(
        row,
        stats.as_ref().and_then(|s| s.get(&id)),
        mine,
    ))
}

pub struct Page {
    pub posts: Vec<Post>,
    pub next: Option<PageKey>,
}

pub async fn list(
    state: &AppState,
    viewer: Option<&AuthUser>,
    after: Option<PageKey>,
    limit: i64,
) -> Result<Page, ApiError> {
    let mut conn = state.db().await?;
    let mut rows = db::posts::page(&mut conn, viewer.map(|u| u.id), after, limit).await?;
    // The connection goes back to the pool before the stats are read.
    drop(conn);
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = rows.last().filter(|_| has_more).map(|(r, _)| PageKey {
        created_at: r.created_at,
        id: r.id,
    });
    let ids: Vec<i64> = rows.iter().map(|(r, _)| r.id).collect();
    let stats = stats_of(state, &ids).await;
    let posts = rows
        .into_iter()
        .map(|(row, mine)| {
            let id = row.id;
            Post::new(row, stats.as_ref().and_then(|s| s.get(&id)), mine)
        })
        .collect();
    Ok(Page { posts, next })
}

/// The stats of `ids` (cache, then one Redis round trip for the misses), or `None` when
/// Redis cannot be reached: the posts are still served, without stats. A post whose stored
/// stats are impossible is left out, so it too is served without stats until repaired.
async fn stats_of(state: &AppState, ids: &[i64]) -> Option<HashMap<i64, PostStats>> {
    match state.stats.get_many(ids).await {
        Ok(stats) => Some(
            stats
                .into_iter()
                .filter_map(|(id, s)| Some((id, s?)))
                .collect(),
        ),
        Err(e) => {
            log::warn!("stats unavailable, answering without them: {e}");
            state.metrics.redis_errors.inc();
            None
        }
    }
}
