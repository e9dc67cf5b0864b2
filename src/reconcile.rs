//! `post-rate reconcile`: recompute every post's stats from `ratings` and repair Redis,
//! without double counting events that are in flight while it runs.
//!
//! How: it pauses the relay's stamping (the `STAMP` advisory lock), takes one snapshot of
//! `ratings`, of the outbox rows not stamped yet and of the last sequence per partition,
//! then writes `totals - unstamped` per post and raises each partition fence to its last
//! sequence. Events stamped before the snapshot are in the totals and the raised fence makes
//! the consumer skip them; events not yet stamped were subtracted and will be applied once;
//! nothing can be stamped until it is done.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;

use crate::config::Settings;
use crate::db::{self, locks, outbox, ratings, DbError};
use crate::stats::{PostStats, StatsError, StatsStore};

/// Posts written per Redis script call: short enough not to stall other clients.
const CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Stats(#[from] StatsError),
}

impl From<diesel::result::Error> for ReconcileError {
    fn from(e: diesel::result::Error) -> Self {
        ReconcileError::Db(e.into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub posts: usize,
    /// Posts whose stored stats differed from what `ratings` implies.
    pub drifted: u64,
    /// Partitions whose consumer had not caught up when the comparison was made: their
    /// drift count may include events still in flight.
    pub lagging_partitions: Vec<i32>,
    pub dry_run: bool,
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "found" } else { "repaired" };
        write!(
            f,
            "reconcile: {} posts checked, {} {verb} with drift, in {:.1} s",
            self.posts,
            self.drifted,
            self.elapsed.as_secs_f64()
        )?;
        if !self.lagging_partitions.is_empty() {
            write!(
                f,
                " (consumer still behind on partitions {:?}: their count includes events in flight)",
                self.lagging_partitions
            )?;
        }
        Ok(())
    }
}

pub async fn run(
    settings: &Settings,
    store: &StatsStore,
    dry_run: bool,
    wait: Duration,
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let mut conn = db::connect(&settings.database_url, settings.database_timeout).await?;
    // The aggregate over every rating can take longer than an API statement may.
    diesel::sql_query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({})", locks::STAMP))
        .execute(&mut conn)
        .await?;
    let result = reconcile_locked(&mut conn, store, dry_run, wait).await;
    let unlock = diesel::sql_query(format!("SELECT pg_advisory_unlock({})", locks::STAMP))
        .execute(&mut conn)
        .await;
    let (posts, drifted, lagging_partitions) = result?;
    unlock?;
    Ok(Report {
        posts,
        drifted,
        lagging_partitions,
        dry_run,
        elapsed: started.elapsed(),
    })
}

async fn reconcile_locked(
    conn: &mut diesel_async::AsyncPgConnection,
    store: &StatsStore,
    dry_run: bool,
    wait: Duration,
) -> Result<(usize, u64, Vec<i32>), ReconcileError> {
    let (totals, unstamped, last) = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |c| {
            let totals = ratings::totals(c).await?;
            let unstamped = outbox::unstamped_totals(c).await?;
            let last = outbox::last_seqs(c).await?;
            Ok::<_, DbError>((totals, unstamped, last))
        })
        .await?;
    let lagging = wait_for_consumer(store, &last, wait).await?;
    let pending: HashMap<i64, [i64; 10]> = unstamped
        .into_iter()
        .filter_map(|t| Some((t.post_id, <[i64; 10]>::try_from(t.values).ok()?)))
        .collect();
    let targets: Vec<(i64, PostStats)> = totals
        .into_iter()
        .map(|t| {
            let mut v = <[i64; 10]>::try_from(t.values).unwrap_or([0; 10]);
            if let Some(p) = pending.get(&t.post_id) {
                for (a, b) in v.iter_mut().zip(p) {
                    *a -= b;
                }
            }
            (t.post_id, PostStats::from_array(v))
        })
        .collect();
    let mut drifted = 0;
    for chunk in targets.chunks(CHUNK) {
        drifted += store.reconcile_chunk(chunk, &last, dry_run).await?;
    }
    if targets.is_empty() && !dry_run {
        store.reconcile_chunk(&[], &last, false).await?;
    }
    Ok((targets.len(), drifted, lagging))
}

/// Waits (up to `wait`) until every partition's fence reaches the last stamped sequence, so
/// that the drift count compares settled stats. A partition without a fence (a flushed
/// store) has nothing to wait for.
async fn wait_for_consumer(
    store: &StatsStore,
    last: &[(i32, i64)],
    wait: Duration,
) -> Result<Vec<i32>, StatsError> {
    let deadline = Instant::now() + wait;
    loop {
        let fences = store.fences().await?;
        let lagging: Vec<i32> = last
            .iter()
            .filter(|(part, seq)| fences.get(part).is_some_and(|f| f < seq))
            .map(|(part, _)| *part)
            .collect();
        if lagging.is_empty() || Instant::now() >= deadline {
            return Ok(lagging);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
