//! Queries on `posts`, always joined with their author.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{posts, users};
use super::DbResult;

#[derive(Debug, Clone, Queryable)]
pub struct PostRow {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub author_id: i64,
    pub author_username: String,
    pub created_at: DateTime<Utc>,
}

/// A position in the newest-first order: the last post of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageKey {
    pub created_at: DateTime<Utc>,
    pub id: i64,
}

type PostColumns = (
    posts::id,
    posts::title,
    posts::content,
    posts::created_by,
    users::username,
    posts::created_at,
);
const POST_COLUMNS: PostColumns = (
    posts::id,
    posts::title,
    posts::content,
    posts::created_by,
    users::username,
    posts::created_at,
);

pub async fn insert(
    conn: &mut AsyncPgConnection,
    author_id: i64,
    title: &str,
    content: &str,
) -> DbResult<(i64, DateTime<Utc>)> {
    Ok(diesel::insert_into(posts::table)
        .values((
            posts::created_by.eq(author_id),
            posts::title.eq(title),
            posts::content.eq(content),
        ))
        .returning((posts::id, posts::created_at))
        .get_result(conn)
        .await?)
}

pub async fn get(conn: &mut AsyncPgConnection, id: i64) -> DbResult<Option<PostRow>> {
    Ok(posts::table
        .inner_join(users::table)
        .filter(posts::id.eq(id))
        .select(POST_COLUMNS)
        .first(conn)
        .await
        .optional()?)
}

/// The author of a post, or `None` when the post does not exist.
pub async fn author_of(conn: &mut AsyncPgConnection, id: i64) -> DbResult<Option<i64>> {
    Ok(posts::table
        .filter(posts::id.eq(id))
        .select(posts::created_by)
        .first(conn)
        .await
        .optional()?)
}

/// One page of posts, newest first, strictly after `after`. Fetches `limit + 1` rows so the
/// caller knows whether another page follows without a count query.
pub async fn page(
    conn: &mut AsyncPgConnection,
    after: Option<PageKey>,
    limit: i64,
) -> DbResult<Vec<PostRow>> {
    let mut query = posts::table
        .inner_join(users::table)
        .select(POST_COLUMNS)
        .order((posts::created_at.desc(), posts::id.desc()))
        .limit(limit + 1)
        .into_boxed();
    if let Some(key) = after {
        // (created_at, id) < (key): the first term lets PostgreSQL walk the
        // (created_at DESC, id DESC) index, the second settles ties. Plain DSL rather than a
        // row-comparison SQL literal, so the statement stays cacheable.
        query = query.filter(
            posts::created_at.le(key.created_at).and(
                posts::created_at
                    .lt(key.created_at)
                    .or(posts::id.lt(key.id)),
            ),
        );
    }
    Ok(query.load(conn).await?)
}
