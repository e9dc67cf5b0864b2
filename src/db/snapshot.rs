//! The stats PostgreSQL implies for a set of posts, the truth every repair writes to Redis:
//! per post, what `ratings` sums to minus the outbox events not stamped yet (they are in
//! `ratings` already and will still be applied), at the version the relay has stamped.
//! Run [`targets`] and [`super::outbox::last_seqs`] in one repeatable-read transaction while
//! holding the stamp lock ([`lock_stamping`]), so that the sums, versions and sequences are
//! one consistent point of the event stream.

use diesel::sql_types::{Array, BigInt, Int4};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{locks, DbResult};

/// Which posts a snapshot covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every post.
    All,
    /// The posts of these logical partitions (`post_id % of`).
    Partitions { parts: &'a [i32], of: i32 },
    /// These posts.
    Posts(&'a [i64]),
    /// Posts with `after < id <= upto`.
    Range { after: i64, upto: i64 },
}

/// One post's truth: count, score sum, n0..n5, weight sum, weighted sum, and its version.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct Target {
    #[diesel(sql_type = BigInt)]
    pub post_id: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Array<BigInt>)]
    pub values: Vec<i64>,
}

impl Target {
    /// The ten stats values (zeros if the row was malformed, which the query cannot produce).
    pub fn stats(&self) -> [i64; 10] {
        <[i64; 10]>::try_from(self.values.as_slice()).unwrap_or([0; 10])
    }
}

/// The snapshot statement with `{p}` standing for the scope's condition on a post id column.
const TARGETS: &str = "
SELECT s.id AS post_id, COALESCE(v.version, 0) AS version, ARRAY[
    COALESCE(a.c, 0) - COALESCE(u.c, 0), COALESCE(a.s, 0) - COALESCE(u.s, 0),
    COALESCE(a.h0, 0) - COALESCE(u.h0, 0), COALESCE(a.h1, 0) - COALESCE(u.h1, 0),
    COALESCE(a.h2, 0) - COALESCE(u.h2, 0), COALESCE(a.h3, 0) - COALESCE(u.h3, 0),
    COALESCE(a.h4, 0) - COALESCE(u.h4, 0), COALESCE(a.h5, 0) - COALESCE(u.h5, 0),
    COALESCE(a.w, 0) - COALESCE(u.w, 0), COALESCE(a.ws, 0) - COALESCE(u.ws, 0)
]::bigint[] AS values
FROM (SELECT id FROM posts WHERE {p:id}) s
LEFT JOIN post_versions v ON v.post_id = s.id
LEFT JOIN (
    SELECT post_id, count(*) AS c, sum(score) AS s,
           count(*) FILTER (WHERE score = 0) AS h0, count(*) FILTER (WHERE score = 1) AS h1,
           count(*) FILTER (WHERE score = 2) AS h2, count(*) FILTER (WHERE score = 3) AS h3,
           count(*) FILTER (WHERE score = 4) AS h4, count(*) FILTER (WHERE score = 5) AS h5,
           sum(weight) AS w, sum(score * weight) AS ws
    FROM ratings WHERE {p:post_id} GROUP BY post_id
) a ON a.post_id = s.id
LEFT JOIN (
    SELECT post_id, sum(d_count) AS c, sum(d_score_sum) AS s,
           sum((bucket_in IS NOT DISTINCT FROM 0)::int - (bucket_out IS NOT DISTINCT FROM 0)::int) AS h0,
           sum((bucket_in IS NOT DISTINCT FROM 1)::int - (bucket_out IS NOT DISTINCT FROM 1)::int) AS h1,
           sum((bucket_in IS NOT DISTINCT FROM 2)::int - (bucket_out IS NOT DISTINCT FROM 2)::int) AS h2,
           sum((bucket_in IS NOT DISTINCT FROM 3)::int - (bucket_out IS NOT DISTINCT FROM 3)::int) AS h3,
           sum((bucket_in IS NOT DISTINCT FROM 4)::int - (bucket_out IS NOT DISTINCT FROM 4)::int) AS h4,
           sum((bucket_in IS NOT DISTINCT FROM 5)::int - (bucket_out IS NOT DISTINCT FROM 5)::int) AS h5,
           sum(d_weight_sum) AS w, sum(d_weighted_sum) AS ws
    FROM rating_events WHERE {p:post_id} GROUP BY post_id
) u ON u.post_id = s.id
ORDER BY s.id";

fn statement(condition: &str) -> String {
    TARGETS
        .replace("{p:id}", &condition.replace("{col}", "id"))
        .replace("{p:post_id}", &condition.replace("{col}", "post_id"))
}

/// The truth of every post in `scope`, ordered by id.
pub async fn targets(conn: &mut AsyncPgConnection, scope: Scope<'_>) -> DbResult<Vec<Target>> {
    Ok(match scope {
        Scope::All => diesel::sql_query(statement("TRUE")).load(conn).await?,
        Scope::Partitions { parts, of } => {
            diesel::sql_query(statement("({col} % $1)::int = ANY($2)"))
                .bind::<BigInt, _>(i64::from(of))
                .bind::<Array<Int4>, _>(parts)
                .load(conn)
                .await?
        }
        Scope::Posts(ids) => {
            diesel::sql_query(statement("{col} = ANY($1)"))
                .bind::<Array<BigInt>, _>(ids)
                .load(conn)
                .await?
        }
        Scope::Range { after, upto } => {
            diesel::sql_query(statement("{col} > $1 AND {col} <= $2"))
                .bind::<BigInt, _>(after)
                .bind::<BigInt, _>(upto)
                .load(conn)
                .await?
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::QueryableByName)]
pub struct PostVersion {
    #[diesel(sql_type = BigInt)]
    pub post_id: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
}

/// Up to `limit` stamped post versions with `post_id > after`, by id (the audit's walk).
pub async fn versions_after(
    conn: &mut AsyncPgConnection,
    after: i64,
    limit: i64,
) -> DbResult<Vec<PostVersion>> {
    Ok(diesel::sql_query(
        "SELECT post_id, version FROM post_versions WHERE post_id > $1 ORDER BY post_id LIMIT $2",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// The id range `(after, upto]` covering up to `limit` posts after `after`; `None` past the
/// last post.
pub async fn post_range(
    conn: &mut AsyncPgConnection,
    after: i64,
    limit: i64,
) -> DbResult<Option<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Upto {
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        upto: Option<i64>,
    }
    let row: Upto = diesel::sql_query(
        "SELECT max(id) AS upto FROM (SELECT id FROM posts WHERE id > $1 ORDER BY id LIMIT $2) p",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(limit)
    .get_result(conn)
    .await?;
    Ok(row.upto)
}

/// Pauses stamping for this session until [`unlock_stamping`] or the connection closes:
/// waits for a stamping transaction in progress to commit.
pub async fn lock_stamping(conn: &mut AsyncPgConnection) -> DbResult<()> {
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(locks::STAMP)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn unlock_stamping(conn: &mut AsyncPgConnection) -> DbResult<()> {
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(locks::STAMP)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the audit lead for the life of this connection; false when another instance audits.
pub async fn try_lead_audit(conn: &mut AsyncPgConnection) -> DbResult<bool> {
    locks::try_hold(conn, locks::AUDIT).await
}
