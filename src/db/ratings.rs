//! Queries on `ratings`. Every change writes its outbox row in the same statement, so a
//! rating and its event commit together or not at all.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Int2, Int4, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::ratings;
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
/// or already has this score from this caller ([`explain_noop`] tells which).
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
    .optional()?;
    Ok(row.map(|(post_id, score, updated_at)| StoredRating {
        post_id,
        score,
        updated_at,
    }))
}

/// Why [`upsert`] wrote nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Noop {
    NoSuchPost,
    OwnPost,
    Unchanged(StoredRating),
    /// The rating was withdrawn between the two statements: try again.
    Raced,
}

pub async fn explain_noop(
    conn: &mut AsyncPgConnection,
    post_id: i64,
    user_id: i64,
) -> DbResult<Noop> {
    let Some(author) = super::posts::author_of(conn, post_id).await? else {
        return Ok(Noop::NoSuchPost);
    };
    if author == user_id {
        return Ok(Noop::OwnPost);
    }
    let current = ratings::table
        .filter(ratings::post_id.eq(post_id))
        .filter(ratings::user_id.eq(user_id))
        .select((ratings::post_id, ratings::score, ratings::updated_at))
        .first::<(i64, i16, DateTime<Utc>)>(conn)
        .await
        .optional()?;
    Ok(match current {
        Some((post_id, score, updated_at)) => Noop::Unchanged(StoredRating {
            post_id,
            score,
            updated_at,
        }),
        None => Noop::Raced,
    })
}

/// Withdraws the caller's rating and writes the outbox row that takes it out of the stats,
/// in one statement. Returns whether a rating existed.
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
SELECT count(*) AS n FROM del";

pub async fn delete(conn: &mut AsyncPgConnection, post_id: i64, user_id: i64) -> DbResult<bool> {
    let deleted: super::Count = diesel::sql_query(DELETE)
        .bind::<BigInt, _>(post_id)
        .bind::<BigInt, _>(user_id)
        .get_result(conn)
        .await?;
    Ok(deleted.n > 0)
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
