//! The transactional outbox `rating_events` and its relay bookkeeping: stamping moves a
//! batch of events out of the outbox into one `relay_batches` row, with gap-free
//! per-partition sequence numbers; a delivered batch is deleted.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Int2, Int4, Nullable};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::ratings::PostTotals;
use super::{locks, Count, DbResult};
use crate::events::wire::{RatingEvent, StatsDelta};

/// A stamped batch, ready to deliver: events in sequence order within each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: i64,
    pub events: Vec<RatingEvent>,
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
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    created_at: chrono::DateTime<chrono::Utc>,
}

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

    fn event(&self, partition: i32, seq: i64) -> RatingEvent {
        RatingEvent {
            partition,
            seq,
            post_id: self.post_id,
            committed_ms: self.created_at.timestamp_millis(),
            delta: self.delta(),
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

#[derive(QueryableByName)]
struct BatchRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Binary)]
    payload: Vec<u8>,
}

/// Batches stamped by an earlier leader that stopped before they were delivered, oldest
/// first: they are delivered again before anything new is stamped.
pub async fn pending_batches(conn: &mut AsyncPgConnection) -> DbResult<Vec<Batch>> {
    let rows: Vec<BatchRow> =
        diesel::sql_query("SELECT id, payload FROM relay_batches ORDER BY id")
            .load(conn)
            .await?;
    rows.into_iter()
        .map(|r| {
            let events = RatingEvent::decode_all(&r.payload)
                .map_err(|e| super::DbError::Unreadable(format!("relay batch {}: {e}", r.id)))?;
            Ok(Batch { id: r.id, events })
        })
        .collect()
}

/// Stamps up to `limit` outbox events, oldest first: moves them into one `relay_batches`
/// row with the next sequence numbers of their partitions, persisted before anything is
/// published. The transaction takes the `STAMP` lock so `reconcile` can pause stamping.
pub async fn stamp(
    conn: &mut AsyncPgConnection,
    partitions: i32,
    limit: i64,
) -> DbResult<Option<Batch>> {
    conn.transaction(async |conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(locks::STAMP)
            .execute(conn)
            .await?;
        let mut rows: Vec<Row> = diesel::sql_query(
            "DELETE FROM rating_events WHERE id IN
                 (SELECT id FROM rating_events ORDER BY id LIMIT $1)
             RETURNING id, post_id, d_count, d_score_sum, bucket_out, bucket_in,
                       d_weight_sum, d_weighted_sum, created_at",
        )
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_unstable_by_key(|r| r.id);
        let mut last: HashMap<i32, i64> = last_seqs(conn).await?.into_iter().collect();
        let mut events: Vec<RatingEvent> = rows
            .iter()
            .map(|r| {
                let part = partition_of(r.post_id, partitions);
                let seq = last.entry(part).or_insert(0);
                *seq += 1;
                r.event(part, *seq)
            })
            .collect();
        // Grouped by partition, in sequence order: the order of delivery.
        events.sort_by_key(|e| (e.partition, e.seq));
        let payload = RatingEvent::encode_all(&events);
        let id: i64 = diesel::insert_into(super::schema::relay_batches::table)
            .values((
                super::schema::relay_batches::events.eq(events.len() as i32),
                super::schema::relay_batches::payload.eq(&payload),
            ))
            .returning(super::schema::relay_batches::id)
            .get_result(conn)
            .await?;
        let (parts, seqs): (Vec<i32>, Vec<i64>) = last.into_iter().unzip();
        diesel::sql_query(
            "INSERT INTO relay_partitions (part, last_seq)
             SELECT * FROM unnest($1::int[], $2::bigint[])
             ON CONFLICT (part) DO UPDATE SET last_seq = EXCLUDED.last_seq",
        )
        .bind::<Array<Int4>, _>(&parts)
        .bind::<Array<BigInt>, _>(&seqs)
        .execute(conn)
        .await?;
        Ok(Some(Batch { id, events }))
    })
    .await
}

/// Deletes a batch the sink has acknowledged.
pub async fn delete_batch(conn: &mut AsyncPgConnection, id: i64) -> DbResult<()> {
    diesel::sql_query("DELETE FROM relay_batches WHERE id = $1")
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The last sequence number handed out in each partition.
pub async fn last_seqs(conn: &mut AsyncPgConnection) -> DbResult<Vec<(i32, i64)>> {
    use super::schema::relay_partitions::dsl::*;
    Ok(relay_partitions.select((part, last_seq)).load(conn).await?)
}

/// Events not delivered yet: in the outbox or in stamped batches.
pub async fn pending(conn: &mut AsyncPgConnection) -> DbResult<i64> {
    let c: Count = diesel::sql_query(
        "SELECT (SELECT count(*) FROM rating_events)
              + (SELECT COALESCE(sum(events), 0) FROM relay_batches)::bigint AS n",
    )
    .get_result(conn)
    .await?;
    Ok(c.n)
}

/// Per-post sums of the deltas of events not stamped yet (still in the outbox): already part of `ratings`, still
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
         FROM rating_events GROUP BY post_id",
    )
    .load(conn)
    .await?)
}
