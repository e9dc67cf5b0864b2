//! Queries on `posts`, always joined with their author.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::posts;
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

/// The author of a post, or `None` when the post does not exist.
pub async fn author_of(conn: &mut AsyncPgConnection, id: i64) -> DbResult<Option<i64>> {
    Ok(posts::table
        .filter(posts::id.eq(id))
        .select(posts::created_by)
        .first(conn)
        .await
        .optional()?)
}

/// Posts with their author and the caller's own score, up to the filter: the statement of
/// the posts page (DESIGN §4) and of a single post. The score comes from a subquery per
/// returned row through the `(user_id, post_id)` index (an index-only probe; an anonymous
/// caller binds NULL, which matches nothing): at most `limit` probes however many posts the
/// caller has rated, where a join would read all of them.
const POSTS_HEAD: &str =
    "SELECT p.id, p.title, p.content, p.created_by, u.username, p.created_at, \
     (SELECT r.score FROM ratings r WHERE r.user_id = ";
/// Follows the viewer's bind.
const POSTS_FROM: &str = " AND r.post_id = p.id) FROM posts p JOIN users u ON u.id = p.created_by";
const POSTS_ORDER: &str = " ORDER BY p.created_at DESC, p.id DESC LIMIT ";

/// Which posts a [`PostsQuery`] reads; each filter type is one fixed SQL text.
trait PostFilter: QueryId + 'static {
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

/// The first page: no condition.
#[derive(Debug, Clone, Copy, QueryId)]
struct Newest;

impl PostFilter for Newest {
    fn walk<'b>(&'b self, _: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        Ok(())
    }
}

impl QueryId for PageKey {
    type QueryId = PageKey;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// A later page: strictly after the last post of the previous one.
impl PostFilter for PageKey {
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // (created_at, id) < key: the first term walks the (created_at DESC, id DESC) index,
        // the second settles ties.
        out.push_sql(" WHERE p.created_at <= ");
        out.push_bind_param::<Timestamptz, _>(&self.created_at)?;
        out.push_sql(" AND (p.created_at < ");
        out.push_bind_param::<Timestamptz, _>(&self.created_at)?;
        out.push_sql(" OR p.id < ");
        out.push_bind_param::<BigInt, _>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

/// One post by id.
#[derive(Debug, Clone, Copy, QueryId)]
struct ById(i64);

impl PostFilter for ById {
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(" WHERE p.id = ");
        out.push_bind_param::<BigInt, _>(&self.0)
    }
}

/// Fixed SQL per filter type with a static query id, so every pooled connection prepares each
/// shape once and then only binds and executes (a boxed or `sql_query` statement would be
/// parsed and planned on every call: two round trips, and planning cost more than running it).
#[derive(Debug, Clone, Copy)]
struct PostsQuery<F> {
    viewer: Option<i64>,
    filter: F,
    limit: i64,
}

impl<F: PostFilter> QueryId for PostsQuery<F> {
    type QueryId = PostsQuery<F::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = F::HAS_STATIC_QUERY_ID;
}

impl<F> Query for PostsQuery<F> {
    type SqlType = (
        (BigInt, Text, Text, BigInt, Text, Timestamptz),
        Nullable<SmallInt>,
    );
}

impl<F: PostFilter> QueryFragment<Pg> for PostsQuery<F> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(POSTS_HEAD);
        out.push_bind_param::<Nullable<BigInt>, _>(&self.viewer)?;
        out.push_sql(POSTS_FROM);
        self.filter.walk(&mut out)?;
        out.push_sql(POSTS_ORDER);
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}

/// A post with `viewer`'s own score (`None` when anonymous or unrated); `None` when there is
/// no such post. One statement.
pub async fn get(
    conn: &mut AsyncPgConnection,
    viewer: Option<i64>,
    id: i64,
) -> DbResult<Option<(PostRow, Option<i16>)>> {
    let query = PostsQuery {
        viewer,
        filter: ById(id),
        limit: 1,
    };
    Ok(query.get_result(conn).await.optional()?)
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
    match after {
        None => load(conn, viewer, Newest, limit).await,
        Some(key) => load(conn, viewer, key, limit).await,
    }
}

async fn load<F: PostFilter + Send>(
    conn: &mut AsyncPgConnection,
    viewer: Option<i64>,
    filter: F,
    limit: i64,
) -> DbResult<Vec<(PostRow, Option<i16>)>> {
    Ok(PostsQuery {
        viewer,
        filter,
        limit,
    }
    .load(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scripts/bench runs bench/pgbench/list.sql as the list's PostgreSQL ceiling: it must be
    /// the first page's statement, with pgbench variables for the binds.
    #[test]
    fn the_benchmarked_statement_is_the_first_pages() {
        let query = PostsQuery {
            viewer: Some(7),
            filter: Newest,
            limit: 21,
        };
        let sql = diesel::debug_query::<Pg, _>(&query).to_string();
        let sql = sql[..sql.find(" -- binds:").unwrap()]
            .replace("$1", ":viewer")
            .replace("$2", ":limit");
        let bench = include_str!("../../bench/pgbench/list.sql");
        assert!(bench.contains(&format!("\n{sql};\n")), "{sql}");
    }
}
