//! Queries on `ratings`. Every change writes its outbox row in the same statement, so a
//! rating and its event commit together or not at all.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{Array, BigInt, Bool, Int2, Int4, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::DbResult;

#[derive(Debug, Clone, Copy, QueryableByName, PartialEq, Eq)]
pub struct StoredRating {
    #[diesel(sql_type = BigInt)]
    pub post_id: i64,
    #[diesel(sql_type = Int2)]
    pub score: i16,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// The rating upsert after the binds that [`Upsert`] writes as its first CTE
/// (`WITH v AS (SELECT $1::bigint AS post_id, $2::bigint AS user_id, $3::smallint AS score,
/// $4::integer AS weight`).
const UPSERT_REST: &str = "),
up AS (
    INSERT INTO ratings AS r (post_id, user_id, score, weight)
    SELECT p.id, v.user_id, v.score, v.weight FROM posts p, v
    WHERE p.id = v.post_id AND p.created_by <> v.user_id
    ON CONFLICT (post_id, user_id) DO UPDATE
        SET score = EXCLUDED.score, weight = EXCLUDED.weight,
            prev_score = r.score, prev_weight = r.weight, updated_at = now()
        WHERE r.score <> EXCLUDED.score
    RETURNING r.post_id, r.user_id, r.score, r.weight, r.prev_score, r.prev_weight, r.updated_at
), ev AS (
    INSERT INTO rating_events
        (post_id, user_id, score, prev_score, weight, prev_weight,
         d_count, d_score_sum, bucket_out, bucket_in, d_weight_sum, d_weighted_sum)
    SELECT post_id, user_id, score, prev_score, weight, prev_weight,
           CASE WHEN prev_score IS NULL THEN 1 ELSE 0 END,
           score - COALESCE(prev_score, 0),
           prev_score,
           score,
           weight - COALESCE(prev_weight, 0),
           score * weight - COALESCE(prev_score * prev_weight, 0)
    FROM up
)
SELECT post_id, score, updated_at FROM up";

/// The upsert as a query whose prepared statement each connection keeps: diesel never
/// caches `sql_query`, which would cost every rating a second round trip (prepare, then
/// execute). Each bind appears once, in order, so the SQL is fixed text.
#[derive(Debug, Clone, Copy)]
struct Upsert {
    post_id: i64,
    user_id: i64,
    score: i16,
    weight: i32,
}

impl QueryId for Upsert {
    type QueryId = Upsert;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for Upsert {
    type SqlType = (BigInt, Int2, Timestamptz);
}

impl QueryFragment<Pg> for Upsert {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH v AS (SELECT ");
        out.push_bind_param::<BigInt, _>(&self.post_id)?;
        out.push_sql("::bigint AS post_id, ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql("::bigint AS user_id, ");
        out.push_bind_param::<Int2, _>(&self.score)?;
        out.push_sql("::smallint AS score, ");
        out.push_bind_param::<Int4, _>(&self.weight)?;
        out.push_sql("::integer AS weight");
        out.push_sql(UPSERT_REST);
        Ok(())
    }
}

/// Inserts or changes the caller's rating of a post and writes the outbox row, in one
/// statement. The `ON CONFLICT DO UPDATE` takes the row lock and its `SET` sees the latest
/// committed row, so `prev_score`/`prev_weight` are exactly what this change replaced even
/// under concurrent re-rates. The `WHERE` makes a same-score re-rate a no-op (no event).
///
/// Returns `None` when nothing was written: the post does not exist, is the caller's own,
/// already has this score from this caller, or the caller's user row is gone (a foreign-key
/// violation, which costs the hot path nothing to detect); [`explain_noop`] tells which.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    post_id: i64,
    user_id: i64,
    score: i16,
    weight: i32,
) -> DbResult<Option<StoredRating>> {
    let row: Option<(i64, i16, DateTime<Utc>)> = Upsert {
        post_id,
        user_id,
        score,
        weight,
    }
    .get_result(conn)
    .await
    .optional()
    .or_else(|e| match e {
        diesel::result::Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => Ok(None),
        other => Err(other),
    })?;
    Ok(row.map(|(post_id, score, updated_at)| StoredRating {
        post_id,
        score,
        updated_at,
    }))
}

/// Why [`upsert`] wrote nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Noop {
    /// The caller's user row no longer exists (its token outlived it).
    NoSuchUser,
    NoSuchPost,
    OwnPost,
    Unchanged(StoredRating),
    /// The rating was withdrawn between the two statements: try again.
    Raced,
}

#[derive(QueryableByName)]
struct NoopRow {
    #[diesel(sql_type = Bool)]
    user_exists: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    author: Option<i64>,
    #[diesel(sql_type = Nullable<Int2>)]
    score: Option<i16>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    updated_at: Option<DateTime<Utc>>,
}

/// Tells why nothing was written, in one round trip (only on that slow path). A missing user
/// comes first: a caller that is not signed in learns that before anything about the post.
pub async fn explain_noop(
    conn: &mut AsyncPgConnection,
    post_id: i64,
    user_id: i64,
) -> DbResult<Noop> {
    let row: NoopRow = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $2) AS user_exists,
                (SELECT created_by FROM posts WHERE id = $1) AS author,
                r.score, r.updated_at
         FROM (SELECT 1) AS one
         LEFT JOIN ratings r ON r.post_id = $1 AND r.user_id = $2",
    )
    .bind::<BigInt, _>(post_id)
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .await?;
    Ok(match row {
        NoopRow {
            user_exists: false, ..
        } => Noop::NoSuchUser,
        NoopRow { author: None, .. } => Noop::NoSuchPost,
        NoopRow {
            author: Some(a), ..
        } if a == user_id => Noop::OwnPost,
        NoopRow {
            score: Some(score),
            updated_at: Some(updated_at),
            ..
        } => Noop::Unchanged(StoredRating {
            post_id,
            score,
            updated_at,
        }),
        _ => Noop::Raced,
    })
}

/// Withdraws the caller's rating and writes the outbox row that takes it out of the stats,
/// in one statement, which also says whether the post and the caller's user exist, so
/// nothing to withdraw costs no second round trip.
const DELETE: &str = "
WITH del AS (
    DELETE FROM ratings WHERE post_id = $1 AND user_id = $2
    RETURNING post_id, user_id, score, weight
), ev AS (
    INSERT INTO rating_events
        (post_id, user_id, prev_score, prev_weight,
         d_count, d_score_sum, bucket_out, bucket_in, d_weight_sum, d_weighted_sum)
    SELECT post_id, user_id, score, weight, -1, -score, score, NULL, -weight, -(score * weight)
    FROM del
)
SELECT (SELECT count(*) FROM del) AS n,
       EXISTS (SELECT 1 FROM users WHERE id = $2) AS user_exists,
       EXISTS (SELECT 1 FROM posts WHERE id = $1) AS post_exists";

/// What [`delete`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    Deleted,
    /// The post exists but the caller had no rating of it.
    NothingToDelete,
    NoSuchPost,
    /// The caller's user row no longer exists.
    NoSuchUser,
}

#[derive(QueryableByName)]
struct DeleteRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Bool)]
    user_exists: bool,
    #[diesel(sql_type = Bool)]
    post_exists: bool,
}

pub async fn delete(
    conn: &mut AsyncPgConnection,
    post_id: i64,
    user_id: i64,
) -> DbResult<Withdrawn> {
    let row: DeleteRow = diesel::sql_query(DELETE)
        .bind::<BigInt, _>(post_id)
        .bind::<BigInt, _>(user_id)
        .get_result(conn)
        .await?;
    Ok(if row.n > 0 {
        Withdrawn::Deleted
    } else if !row.user_exists {
        Withdrawn::NoSuchUser
    } else if !row.post_exists {
        Withdrawn::NoSuchPost
    } else {
        Withdrawn::NothingToDelete
    })
}

/// Per-post sums over `ratings`, the source of truth `reconcile` rebuilds Redis from.
#[derive(Debug, Clone, QueryableByName)]
pub struct PostTotals {
    #[diesel(sql_type = BigInt)]
    pub post_id: i64,
    #[diesel(sql_type = Array<BigInt>)]
    pub values: Vec<i64>,
}

/// Totals of every post, posts without ratings included (all zero) so that stale stats of
/// theirs are cleared too. `values` is count, score sum, n0..n5, weight sum, weighted sum.
pub async fn totals(conn: &mut AsyncPgConnection) -> DbResult<Vec<PostTotals>> {
    Ok(diesel::sql_query(
        "SELECT p.id AS post_id, ARRAY[
             COALESCE(a.c, 0), COALESCE(a.s, 0), COALESCE(a.h0, 0), COALESCE(a.h1, 0),
             COALESCE(a.h2, 0), COALESCE(a.h3, 0), COALESCE(a.h4, 0), COALESCE(a.h5, 0),
             COALESCE(a.w, 0), COALESCE(a.ws, 0)]::bigint[] AS values
         FROM posts p LEFT JOIN (
             SELECT post_id, count(*) AS c, sum(score) AS s,
                    count(*) FILTER (WHERE score = 0) AS h0,
                    count(*) FILTER (WHERE score = 1) AS h1,
                    count(*) FILTER (WHERE score = 2) AS h2,
                    count(*) FILTER (WHERE score = 3) AS h3,
                    count(*) FILTER (WHERE score = 4) AS h4,
                    count(*) FILTER (WHERE score = 5) AS h5,
                    sum(weight) AS w, sum(score * weight) AS ws
             FROM ratings GROUP BY post_id
         ) a ON a.post_id = p.id",
    )
    .load(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    /// The pgbench script measures this statement: it must be the same text.
    #[test]
    fn the_benchmarked_statement_is_the_services() {
        let bench = include_str!("../../bench/pgbench/rate.sql");
        assert!(bench.contains(super::UPSERT_REST));
    }
}
