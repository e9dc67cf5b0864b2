//! The transactional outbox `rating_events` and its relay bookkeeping: stamping rows with
//! gap-free per-partition sequence numbers, finding leftovers, deleting what was delivered.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Int2, Int4, Nullable};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::ratings::PostTotals;
use super::{locks, Count, DbResult};
use crate::events::wire::{RatingEvent, StatsDelta};

/// An outbox row the relay has stamped, ready to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    pub id: i64,
    pub event: RatingEvent,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    post_id: i64,
    #[diesel(sql_type = Int2)]
    d_count: i16,
    #[diesel(sql_type = Int4)]
    d_score_sum: i32,
    #[diesel(sql_type = Nullable<Int2>)]
    bucket_out: Option<i16>,
    #[diesel(sql_type = Nullable<Int2>)]
    bucket_in: Option<i16>,
    #[diesel(sql_type = Int4)]
    d_weight_sum: i32,
    #[diesel(sql_type = Int4)]
    d_weighted_sum: i32,
    #[diesel(sql_type = Nullable<Int4>)]
    part: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    created_at: chrono::DateTime<chrono::Utc>,
}

const ROW_COLUMNS: &str = "id, post_id, d_count, d_score_sum, bucket_out, bucket_in, \
     d_weight_sum, d_weighted_sum, part, seq, created_at";

impl Row {
    fn delta(&self) -> StatsDelta {
        let mut hist = [0i64; 6];
        for (bucket, change) in [(self.bucket_out, -1), (self.bucket_in, 1)] {
            if let Some(b) = bucket.and_then(|b| usize::try_from(b).ok()) {
                if let Some(slot) = hist.get_mut(b) {
                    *slot += change;
                }
            }
        }
        StatsDelta {
            count: self.d_count.into(),
            score_sum: self.d_score_sum.into(),
            hist,
            weight_sum: self.d_weight_sum.into(),
            weighted_sum: self.d_weighted_sum.into(),
        }
    }

    fn stamped(&self, part: i32, seq: i64) -> Stamped {
        Stamped {
            id: self.id,
            event: RatingEvent {
                partition: part,
                seq,
                post_id: self.post_id,
                committed_ms: self.created_at.timestamp_millis(),
                delta: self.delta(),
            },
        }
    }
}

/// The logical partition of a post: the relay, Kafka and `reconcile` all use this one rule.
pub fn partition_of(post_id: i64, partitions: i32) -> i32 {
    // rem_euclid of a positive modulus fits in i32.
    post_id.rem_euclid(i64::from(partitions)) as i32
}

/// Takes the relay lead for the life of this connection; false when another relay leads.
pub async fn try_lead(conn: &mut AsyncPgConnection) -> DbResult<bool> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(locks::RELAY_LEADER)
        .get_result(conn)
        .await?;
    Ok(row.locked)
}

/// Rows stamped by an earlier leader that crashed before deleting them, in sequence order
/// per partition: they are published again before anything new is stamped.
pub async fn stamped(conn: &mut AsyncPgConnection, limit: i64) -> DbResult<Vec<Stamped>> {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT {ROW_COLUMNS} FROM rating_events WHERE seq IS NOT NULL ORDER BY part, seq LIMIT $1"
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some(r.stamped(r.part?, r.seq?)))
        .collect())
}

/// Stamps up to `limit` unstamped rows, oldest first, with the next sequence numbers of
/// their partitions, and returns them. The sequence is persisted before anything is
/// published, and the transaction takes the `STAMP` lock so `reconcile` can pause stamping.
pub async fn stamp(
    conn: &mut AsyncPgConnection,
    partitions: i32,
    limit: i64,
) -> DbResult<Vec<Stamped>> {
    conn.transaction(async |conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(locks::STAMP)
            .execute(conn)
            .await?;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT {ROW_COLUMNS} FROM rating_events WHERE seq IS NULL ORDER BY id LIMIT $1"
        ))
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut last: HashMap<i32, i64> = last_seqs(conn).await?.into_iter().collect();
        let stamped: Vec<Stamped> = rows
            .iter()
            .map(|r| {
                let part = partition_of(r.post_id, partitions);
                let seq = last.entry(part).or_insert(0);
                *seq += 1;
                r.stamped(part, *seq)
            })
            .collect();
        let ids: Vec<i64> = stamped.iter().map(|s| s.id).collect();
        let parts: Vec<i32> = stamped.iter().map(|s| s.event.partition).collect();
        let seqs: Vec<i64> = stamped.iter().map(|s| s.event.seq).collect();
        diesel::sql_query(
            "UPDATE rating_events e SET part = v.part, seq = v.seq
             FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS v(id, part, seq)
             WHERE e.id = v.id",
        )
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Int4>, _>(&parts)
        .bind::<Array<BigInt>, _>(&seqs)
        .execute(conn)
        .await?;
        let (lparts, lseqs): (Vec<i32>, Vec<i64>) = last.into_iter().unzip();
        diesel::sql_query(
            "INSERT INTO relay_partitions (part, last_seq)
             SELECT * FROM unnest($1::int[], $2::bigint[])
             ON CONFLICT (part) DO UPDATE SET last_seq = EXCLUDED.last_seq",
        )
        .bind::<Array<Int4>, _>(&lparts)
        .bind::<Array<BigInt>, _>(&lseqs)
        .execute(conn)
        .await?;
        Ok(stamped)
    })
    .await
}

/// Deletes rows the sink has acknowledged.
pub async fn delete(conn: &mut AsyncPgConnection, ids: &[i64]) -> DbResult<()> {
    diesel::sql_query("DELETE FROM rating_events WHERE id = ANY($1)")
        .bind::<Array<BigInt>, _>(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// The last sequence number handed out in each partition.
pub async fn last_seqs(conn: &mut AsyncPgConnection) -> DbResult<Vec<(i32, i64)>> {
    use super::schema::relay_partitions::dsl::*;
    Ok(relay_partitions.select((part, last_seq)).load(conn).await?)
}

/// Rows waiting in the outbox (stamped or not).
pub async fn pending(conn: &mut AsyncPgConnection) -> DbResult<i64> {
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM rating_events")
        .get_result(conn)
        .await?;
    Ok(c.n)
}

/// Per-post sums of the deltas of rows not stamped yet: already part of `ratings`, still
/// to be applied to Redis. Same value layout as [`PostTotals`].
pub async fn unstamped_totals(conn: &mut AsyncPgConnection) -> DbResult<Vec<PostTotals>> {
    Ok(diesel::sql_query(
        "SELECT post_id, ARRAY[
             sum(d_count), sum(d_score_sum),
             sum((bucket_in IS NOT DISTINCT FROM 0)::int - (bucket_out IS NOT DISTINCT FROM 0)::int),
             sum((bucket_in IS NOT DISTINCT FROM 1)::int - (bucket_out IS NOT DISTINCT FROM 1)::int),
             sum((bucket_in IS NOT DISTINCT FROM 2)::int - (bucket_out IS NOT DISTINCT FROM 2)::int),
             sum((bucket_in IS NOT DISTINCT FROM 3)::int - (bucket_out IS NOT DISTINCT FROM 3)::int),
             sum((bucket_in IS NOT DISTINCT FROM 4)::int - (bucket_out IS NOT DISTINCT FROM 4)::int),
             sum((bucket_in IS NOT DISTINCT FROM 5)::int - (bucket_out IS NOT DISTINCT FROM 5)::int),
             sum(d_weight_sum), sum(d_weighted_sum)]::bigint[] AS values
         FROM rating_events WHERE seq IS NULL GROUP BY post_id",
    )
    .load(conn)
    .await?)
}
