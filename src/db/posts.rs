//! Queries on `posts`, always joined with their author.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text, Timestamptz};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Rows one page load reads: the largest page (100 posts) and one more, which tells whether
/// another page follows. The LIMIT is a constant of the statement, not a bind: a generic plan
/// of a bound LIMIT is costed for 10% of the table, which at 100,000 posts turns the author
/// lookups into a Memoize or a hash join over `users`. Every page size is a prefix of these
/// rows, so one cached load serves them all.
pub const PAGE_ROWS: usize = 101;

/// Posts with their author's name, newest first: the page statement of DESIGN §4 and the
/// statement of a single post. The author is a scalar subquery, one `users` primary-key probe
/// per returned row (a subplan is never memoized or hashed), and `posts.created_by`'s foreign
/// key means it always finds the row.
const POSTS_HEAD: &str = "SELECT p.id, p.title, p.content, p.created_by, \
     (SELECT u.username FROM users u WHERE u.id = p.created_by), p.created_at FROM posts p";
const POSTS_ORDER: &str = " ORDER BY p.created_at DESC, p.id DESC LIMIT 101";

/// Which posts a [`PostsQuery`] reads; each filter type is one fixed SQL text.
trait PostFilter: QueryId + 'static {
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

/// The first page: no condition.
#[derive(Debug, Clone, Copy, QueryId)]
struct Newest;

impl PostFilter for Newest {
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(POSTS_ORDER);
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
        out.push_sql(POSTS_ORDER);
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
struct PostsQuery<F>(F);

impl<F: PostFilter> QueryId for PostsQuery<F> {
    type QueryId = PostsQuery<F::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = F::HAS_STATIC_QUERY_ID;
}

impl<F> Query for PostsQuery<F> {
    type SqlType = (BigInt, Text, Text, BigInt, Text, Timestamptz);
}

impl<F: PostFilter> QueryFragment<Pg> for PostsQuery<F> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(POSTS_HEAD);
        self.0.walk(&mut out)
    }
}

/// A post, or `None` when there is no such post.
pub async fn get(conn: &mut AsyncPgConnection, id: i64) -> DbResult<Option<PostRow>> {
    Ok(PostsQuery(ById(id)).get_result(conn).await.optional()?)
}

/// Up to [`PAGE_ROWS`] posts, newest first, strictly after `after`.
pub async fn page(conn: &mut AsyncPgConnection, after: Option<PageKey>) -> DbResult<Vec<PostRow>> {
    Ok(match after {
        None => PostsQuery(Newest).load(conn).await?,
        Some(key) => PostsQuery(key).load(conn).await?,
    })
}

/// The own scores of several readers at once, each of some posts: one statement for the
/// lookups of concurrent requests (`crate::service::scores`). Per lookup `i`, its viewer and
/// its posts as the slice `lo..=hi` of one flat array (empty when `lo > hi`): one row per post
/// (or one row without a post), with `known` NULL when the viewer's user row no longer exists
/// and the score by an index-only probe of `ratings (user_id, post_id) INCLUDE (score)`. The
/// lookups are a subquery kept apart (`OFFSET 0`) so each viewer's user row is one primary-key
/// probe, never a join the generic plan could hash; the posts are a lateral unnest. So a
/// handful of index probes per post shown, at any table size.
const SCORES: [&str; 6] = [
    "SELECT q.i, q.known, p.post, (SELECT r.score FROM ratings r \
     WHERE r.user_id = q.viewer AND r.post_id = p.post) \
     FROM (SELECT x.i, x.viewer, x.lo, x.hi, \
     (SELECT true FROM users u WHERE u.id = x.viewer) AS known \
     FROM unnest(",
    "::int4[], ",
    "::int8[], ",
    "::int4[], ",
    "::int4[]) AS x(i, viewer, lo, hi) OFFSET 0) q \
     LEFT JOIN LATERAL unnest((",
    "::int8[])[q.lo : q.hi]) AS p(post) ON true",
];

/// A lookup's index, whether its viewer exists, a post and the viewer's score of it.
type ScoreRow = (i32, Option<bool>, Option<i64>, Option<i16>);

#[derive(Debug, Clone, Default)]
struct ScoresQuery {
    lookup: Vec<i32>,
    viewer: Vec<i64>,
    lo: Vec<i32>,
    hi: Vec<i32>,
    posts: Vec<i64>,
}

impl QueryId for ScoresQuery {
    type QueryId = ScoresQuery;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ScoresQuery {
    type SqlType = (
        Integer,
        Nullable<Bool>,
        Nullable<BigInt>,
        Nullable<SmallInt>,
    );
}

impl QueryFragment<Pg> for ScoresQuery {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(SCORES[0]);
        out.push_bind_param::<Array<Integer>, _>(&self.lookup)?;
        out.push_sql(SCORES[1]);
        out.push_bind_param::<Array<BigInt>, _>(&self.viewer)?;
        out.push_sql(SCORES[2]);
        out.push_bind_param::<Array<Integer>, _>(&self.lo)?;
        out.push_sql(SCORES[3]);
        out.push_bind_param::<Array<Integer>, _>(&self.hi)?;
        out.push_sql(SCORES[4]);
        out.push_bind_param::<Array<BigInt>, _>(&self.posts)?;
        out.push_sql(SCORES[5]);
        Ok(())
    }
}

impl ScoresQuery {
    fn new<'a>(lookups: impl IntoIterator<Item = (i64, &'a [i64])>) -> Self {
        let mut q = ScoresQuery::default();
        for (i, (viewer, posts)) in lookups.into_iter().enumerate() {
            // PostgreSQL arrays count from 1; an empty slice has lo = hi + 1.
            let lo = q.posts.len() as i32 + 1;
            q.posts.extend_from_slice(posts);
            q.lookup.push(i as i32);
            q.viewer.push(viewer);
            q.lo.push(lo);
            q.hi.push(q.posts.len() as i32);
        }
        q
    }
}

/// For each `(viewer, posts)`, the viewer's scores of those posts (unrated posts are absent),
/// or `None` when the viewer's user row no longer exists. One prepared statement.
pub async fn scores(
    conn: &mut AsyncPgConnection,
    lookups: &[(i64, &[i64])],
) -> DbResult<Vec<Option<HashMap<i64, i16>>>> {
    let query = ScoresQuery::new(lookups.iter().copied());
    let rows: Vec<ScoreRow> = query.load(conn).await?;
    let mut found: Vec<Option<HashMap<i64, i16>>> = vec![None; lookups.len()];
    for (i, known, post, score) in rows {
        let Some(slot) = found.get_mut(i as usize).filter(|_| known == Some(true)) else {
            continue;
        };
        let scores = slot.get_or_insert_with(HashMap::new);
        if let (Some(post), Some(score)) = (post, score) {
            scores.insert(post, score);
        }
    }
    Ok(found)
}

/// Each read statement with its parameters as `$n`, and arguments for `EXECUTE`: for a test
/// that checks their generic plans.
pub fn read_statements() -> Vec<(&'static str, String, &'static str)> {
    fn sql<Q: QueryFragment<Pg>>(query: &Q) -> String {
        let text = diesel::debug_query::<Pg, _>(query).to_string();
        text[..text.find(" -- binds:").unwrap_or(text.len())].to_owned()
    }
    let key = PageKey {
        created_at: Utc::now(),
        id: 1,
    };
    vec![
        ("first page", sql(&PostsQuery(Newest)), ""),
        ("later page", sql(&PostsQuery(key)), "now(), now(), 50000"),
        ("one post", sql(&PostsQuery(ById(1))), "50000"),
        (
            "own scores",
            sql(&ScoresQuery::new([(1, &[1][..])])),
            "'{0,1}', '{7,8}', '{1,21}', '{20,40}', \
             '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,\
             1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20}'",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scripts/bench runs bench/pgbench/scores.sql as the PostgreSQL cost of a signed-in page
    /// served from the page cache: it must be the service's statement, with pgbench variables
    /// for the binds.
    #[test]
    fn the_benchmarked_statement_is_the_services() {
        let query = ScoresQuery::new([(7, &[1, 2][..])]);
        let sql = diesel::debug_query::<Pg, _>(&query).to_string();
        // One lookup: the viewer's scores of the `posts` of the first page.
        let sql = sql[..sql.find(" -- binds:").unwrap()]
            .replace("$1", "'{0}'")
            .replace("$2", "ARRAY[:viewer]")
            .replace("$3", "'{1}'")
            .replace("$4", "ARRAY[array_length(:posts::int8[], 1)]")
            .replace("$5", ":posts");
        let bench = include_str!("../../bench/pgbench/scores.sql");
        assert!(bench.contains(&format!("\n{sql};\n")), "{sql}");
    }
}
