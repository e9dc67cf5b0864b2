//! The transactional outbox `rating_events` and its relay bookkeeping: stamping moves a
//! batch of events out of the outbox into one `relay_batches` row, with gap-free
//! per-partition sequence numbers; a delivered batch is deleted.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Binary, Int2, Int4, Nullable};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{locks, Count, DbResult};
use crate::model::{Change, RatingEvent, StatsDelta};

/// How a batch's events are stored in `relay_batches.payload` (the relay's wire format).
pub trait BatchCodec {
    fn encode(&self, events: &[RatingEvent]) -> Vec<u8>;
    fn decode(&self, payload: &[u8]) -> Result<Vec<RatingEvent>, String>;
}

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
    /// The change itself; NULL in rows written by a release before JSON events.
    #[diesel(sql_type = Nullable<BigInt>)]
    user_id: Option<i64>,
    #[diesel(sql_type = Nullable<Int2>)]
    score: Option<i16>,
    #[diesel(sql_type = Nullable<Int2>)]
    prev_score: Option<i16>,
    #[diesel(sql_type = Nullable<Int4>)]
    weight: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    prev_weight: Option<i32>,
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

    /// The change as it happened. A row of an older release has only its buckets: the scores,
    /// without user or weights.
    fn change(&self) -> Change {
        match self.user_id {
            Some(user_id) => Change {
                event_id: self.id,
                user_id: Some(user_id),
                score: self.score,
                previous_score: self.prev_score,
                weight: self.weight,
                previous_weight: self.prev_weight,
            },
            None => Change {
                event_id: self.id,
                user_id: None,
                score: self.bucket_in,
                previous_score: self.bucket_out,
                weight: None,
                previous_weight: None,
            },
        }
    }

    /// The stamped event. Its delta is the change's own when the change is complete, so that
    /// what Kafka carries and what embedded mode applies are one thing; a row of an older
    /// release keeps its stored delta, at version 0, which the store repairs rather than
    /// applies once the event has crossed Kafka (where the delta is not carried).
    fn event(&self, partition: i32, seq: i64, version: i64) -> RatingEvent {
        let change = self.change();
        let complete = change.is_complete();
        RatingEvent {
            partition,
            seq,
            post_id: self.post_id,
            version: if complete { version } else { 0 },
            committed_ms: self.created_at.timestamp_millis(),
            delta: if complete {
                change.delta()
            } else {
                self.delta()
            },
            change: Some(change),
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
    locks::try_hold(conn, locks::RELAY_LEADER).await
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
pub async fn pending_batches(
    conn: &mut AsyncPgConnection,
    codec: &(dyn BatchCodec + Sync),
) -> DbResult<Vec<Batch>> {
    let rows: Vec<BatchRow> =
        diesel::sql_query("SELECT id, payload FROM relay_batches ORDER BY id")
            .load(conn)
            .await?;
    rows.into_iter()
        .map(|r| {
            let events = codec
                .decode(&r.payload)
                .map_err(|e| super::DbError::Unreadable(format!("relay batch {}: {e}", r.id)))?;
            Ok(Batch { id: r.id, events })
        })
        .collect()
}

/// Stamps up to `limit` outbox events, oldest first: moves them into one `relay_batches`
/// row with the next sequence numbers of their partitions and the next versions of their
/// posts, persisted before anything is published. The transaction takes the `STAMP` lock
/// so that a repair can pause stamping while it snapshots and writes.
pub async fn stamp(
    conn: &mut AsyncPgConnection,
    partitions: i32,
    limit: i64,
    codec: &(dyn BatchCodec + Sync),
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
                       d_weight_sum, d_weighted_sum, created_at,
                       user_id, score, prev_score, weight, prev_weight",
        )
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_unstable_by_key(|r| r.id);
        let mut last: HashMap<i32, i64> = last_seqs(conn).await?.into_iter().collect();
        let mut next_version = bump_versions(conn, &rows).await?;
        let mut events: Vec<RatingEvent> = rows
            .iter()
            .map(|r| {
                let part = partition_of(r.post_id, partitions);
                let seq = last.entry(part).or_insert(0);
                *seq += 1;
                let version = next_version.entry(r.post_id).or_insert(1);
                *version += 1;
                r.event(part, *seq, *version - 1)
            })
            .collect();
        // Grouped by partition, in sequence order: the order of delivery.
        events.sort_by_key(|e| (e.partition, e.seq));
        let payload = codec.encode(&events);
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

#[derive(QueryableByName)]
struct PostVersion {
    #[diesel(sql_type = BigInt)]
    post_id: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Raises each post's version by its number of events in `rows`; returns the version its
/// first event in `rows` gets.
async fn bump_versions(conn: &mut AsyncPgConnection, rows: &[Row]) -> DbResult<HashMap<i64, i64>> {
    let mut counts: HashMap<i64, i64> = HashMap::new();
    for r in rows {
        *counts.entry(r.post_id).or_insert(0) += 1;
    }
    let mut per_post: Vec<(i64, i64)> = counts.iter().map(|(&p, &n)| (p, n)).collect();
    per_post.sort_unstable();
    let (ids, ns): (Vec<i64>, Vec<i64>) = per_post.into_iter().unzip();
    let bumped: Vec<PostVersion> = diesel::sql_query(
        "INSERT INTO post_versions AS pv (post_id, version)
         SELECT * FROM unnest($1::bigint[], $2::bigint[])
         ON CONFLICT (post_id) DO UPDATE SET version = pv.version + EXCLUDED.version
         RETURNING post_id, version",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<BigInt>, _>(&ns)
    .load(conn)
    .await?;
    Ok(bumped
        .into_iter()
        .map(|b| {
            let n = counts.get(&b.post_id).copied().unwrap_or(0);
            (b.post_id, b.version - n + 1)
        })
        .collect())
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

/// Age in seconds of the oldest event not delivered yet (outbox or stamped batch), 0 when
/// there is none. Both reads use the primary key's order: the lowest id is the oldest.
pub async fn oldest_pending_age(conn: &mut AsyncPgConnection) -> DbResult<f64> {
    #[derive(QueryableByName)]
    struct Age {
        #[diesel(sql_type = diesel::sql_types::Double)]
        secs: f64,
    }
    let age: Age = diesel::sql_query(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - LEAST(
             (SELECT created_at FROM rating_events ORDER BY id LIMIT 1),
             (SELECT created_at FROM relay_batches ORDER BY id LIMIT 1)))::float8, 0) AS secs",
    )
    .get_result(conn)
    .await?;
    Ok(age.secs.max(0.0))
}

/// Whether some session, in any instance, holds the relay lead.
pub async fn relay_leader_exists(conn: &mut AsyncPgConnection) -> DbResult<bool> {
    #[derive(QueryableByName)]
    struct Held {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        held: bool,
    }
    // A bigint advisory key is stored as two 32-bit halves, with objsubid 1.
    let held: Held = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
             AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND classid::bigint = ($1 >> 32) AND objid::bigint = ($1 & 4294967295)) AS held",
    )
    .bind::<BigInt, _>(locks::RELAY_LEADER)
    .get_result(conn)
    .await?;
    Ok(held.held)
}
