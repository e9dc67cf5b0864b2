//! Queries on `posts`, always joined with their author.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, SmallInt, Text, Timestamptz};

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

/// The posts page (DESIGN §4) up to its keyset condition: the posts with their author and
/// the caller's own score, which a subquery per returned row reads through the
/// `(user_id, post_id)` index (an index-only probe; an anonymous caller binds NULL, which
/// matches nothing). Correlated per row, it costs at most `limit + 1` probes however many
/// posts the caller has rated, where a join would read all of them.
const PAGE_HEAD: &str = "SELECT p.id, p.title, p.content, p.created_by, u.username, p.created_at, \
     (SELECT r.score FROM ratings r WHERE r.user_id = ";
/// Follows the viewer's bind.
const PAGE_FROM: &str = " AND r.post_id = p.id) FROM posts p JOIN users u ON u.id = p.created_by";
const PAGE_ORDER: &str = " ORDER BY p.created_at DESC, p.id DESC LIMIT ";

/// One page, newest first, strictly after `after` (the first page without it). Each of the
/// two shapes is fixed SQL with a static query id, so every pooled connection prepares it
/// once and then only binds and executes (a boxed or `sql_query` statement would be parsed
/// and planned on every call: two round trips, and planning cost more than running it).
#[derive(Debug, Clone, Copy)]
struct PageQuery<const AFTER: bool> {
    viewer: Option<i64>,
    after: Option<PageKey>,
    limit: i64,
}

impl<const AFTER: bool> QueryId for PageQuery<AFTER> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const AFTER: bool> Query for PageQuery<AFTER> {
    type SqlType = (
        (BigInt, Text, Text, BigInt, Text, Timestamptz),
        Nullable<SmallInt>,
    );
}

impl<const AFTER: bool> QueryFragment<Pg> for PageQuery<AFTER> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(PAGE_HEAD);
        out.push_bind_param::<Nullable<BigInt>, _>(&self.viewer)?;
        out.push_sql(PAGE_FROM);
        if let (true, Some(key)) = (AFTER, &self.after) {
            // (created_at, id) < key: the first term walks the (created_at DESC, id DESC)
            // index, the second settles ties.
            out.push_sql(" WHERE p.created_at <= ");
            out.push_bind_param::<Timestamptz, _>(&key.created_at)?;
            out.push_sql(" AND (p.created_at < ");
            out.push_bind_param::<Timestamptz, _>(&key.created_at)?;
            out.push_sql(" OR p.id < ");
            out.push_bind_param::<BigInt, _>(&key.id)?;
            out.push_sql(")");
        }
        out.push_sql(PAGE_ORDER);
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}

/// One page of posts, newest first, strictly after `after`, each with `viewer`'s own score
/// (`None` for an anonymous page or an unrated post). Fetches `limit + 1` rows so the caller
/// knows whether another page follows without a count query. One statement: DESIGN §4's
/// page query and the caller's ratings of exactly those posts in one round trip.
pub async fn page(
    conn: &mut AsyncPgConnection,
    viewer: Option<i64>,
    after: Option<PageKey>,
    limit: i64,
) -> DbResult<Vec<(PostRow, Option<i16>)>> {
    let limit = limit + 1;
    Ok(match after {
        None => {
            PageQuery::<false> {
                viewer,
                after,
                limit,
            }
            .load(conn)
            .await?
        }
        Some(_) => {
            PageQuery::<true> {
                viewer,
                after,
                limit,
            }
            .load(conn)
            .await?
        }
    })
}
