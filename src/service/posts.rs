//! Creating and reading posts, with their stats and the caller's own rating.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Context;
use super::{pages, render, scores};
use crate::auth::AuthUser;
use crate::db::{self, posts::PageKey, posts::PostRow};
use crate::error::ApiError;
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
    pub(crate) fn new(row: PostRow, stats: Option<&PostStats>, user_rating: Option<i16>) -> Self {
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
    state: &Context,
    author: &AuthUser,
    title: String,
    content: String,
) -> Result<Post, ApiError> {
    let mut conn = state.db().await?;
    let (id, created_at) = db::posts::insert(&mut conn, author.id, &title, &content)
        .await
        .map_err(|e| match e {
            // A valid token of a user that no longer exists (the database was reset).
            e if e.is_missing_reference() => {
                ApiError::Unauthorized("the token's user does not exist")
            }
            other => other.into(),
        })?;
    state.pages.created();
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

/// The JSON body of a post, with `viewer`'s own score.
pub async fn get(state: &Context, viewer: Option<&AuthUser>, id: i64) -> Result<Vec<u8>, ApiError> {
    let ids = [id];
    let (post, mine) = tokio::join!(pages::post(state, id), own_scores(state, viewer, &ids));
    // A signed-in caller who no longer exists is told so before anything about the post.
    let mine = mine?;
    let post = post?.ok_or_else(ApiError::post_not_found)?;
    let stats = stats_of(state, &ids).await;
    Ok(render::post(
        &post,
        stats.as_ref().and_then(|s| s.get(&id)),
        mine.get(&id).copied(),
    ))
}

/// The JSON body of a page of posts, newest first, strictly after `after`, with their stats
/// and `viewer`'s own scores: the posts from the page cache, the stats from the stats cache,
/// the scores from PostgreSQL (one statement, the two reads at once). An anonymous page is
/// kept whole for a moment (see [`pages`]).
pub async fn list(
    state: &Context,
    viewer: Option<&AuthUser>,
    after: Option<PageKey>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    match viewer {
        Some(_) => build_page(state, viewer, after, limit)
            .await
            .map(Bytes::from),
        None => {
            pages::anonymous(state, after, limit, || {
                build_page(state, None, after, limit)
            })
            .await
        }
    }
}

async fn build_page(
    state: &Context,
    viewer: Option<&AuthUser>,
    after: Option<PageKey>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let rows = pages::rows(state, after).await?;
    let shown = &rows.posts[..limit.min(rows.posts.len())];
    let next = shown
        .last()
        .filter(|_| rows.posts.len() > limit)
        .map(|p| PageKey {
            created_at: p.created_at,
            id: p.id,
        });
    let ids: Vec<i64> = shown.iter().map(|p| p.id).collect();
    let (mine, stats) = tokio::join!(own_scores(state, viewer, &ids), stats_of(state, &ids));
    let mine = mine?;
    let cursor = next.map(|key| state.cursors.encode(key));
    Ok(render::page(
        shown.iter(),
        cursor.as_deref(),
        |out, post| {
            post.write(
                out,
                stats.as_ref().and_then(|s| s.get(&post.id)),
                mine.get(&post.id).copied(),
            )
        },
    ))
}

/// `viewer`'s scores of `ids` (none for an anonymous reader); 401 when the viewer's user row
/// no longer exists.
async fn own_scores(
    state: &Context,
    viewer: Option<&AuthUser>,
    ids: &[i64],
) -> Result<HashMap<i64, i16>, ApiError> {
    match viewer {
        None => Ok(HashMap::new()),
        Some(viewer) => scores::own(state, viewer.id, ids).await,
    }
}

/// The stats of `ids` (cache, then one Redis round trip for the misses), or `None` when
/// Redis cannot be reached: the posts are still served, without stats. A post whose stored
/// stats are impossible is left out, so it too is served without stats until repaired.
async fn stats_of(state: &Context, ids: &[i64]) -> Option<HashMap<i64, PostStats>> {
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
