//! `post-rate reconcile`: recompute every post's stats from `ratings` and repair Redis,
//! without double counting events that are in flight while it runs.
//!
//! It is the repair of every partition at once (see `crate::repair`), run by hand: it pauses
//! the relay's stamping (the stamp lock), takes one snapshot of what `ratings` implies minus
//! the outbox rows not stamped yet, with each post's version and each partition's last
//! sequence, and writes those stats, versions and fences. Events stamped before the snapshot
//! are in the totals and are skipped when they arrive; events stamped after it follow on.
//! The service does this by itself for what it finds lost; the command stays for operators
//! (and `--dry-run` reports the drift without changing anything).

use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::db::snapshot::{self, Scope};
use crate::db::{outbox, DbError};
use crate::repair::rebuild::{self, RepairError};
use crate::stats::{StatsError, StatsStore};

pub use crate::repair::rebuild::RepairError as ReconcileError;

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
) -> Result<Report, RepairError> {
    let started = Instant::now();
    let mut conn =
        rebuild::locked_connection(&settings.database_url, settings.database_timeout).await?;
    let (targets, last) = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |c| {
            let targets = snapshot::targets(c, Scope::All).await?;
            let last = outbox::last_seqs(c).await?;
            Ok::<_, DbError>((targets, last))
        })
        .await?;
    let lagging = wait_for_consumer(store, &last, wait).await?;
    let drifted = rebuild::write(store, &targets, &last, dry_run).await?;
    snapshot::unlock_stamping(&mut conn).await?;
    Ok(Report {
        posts: targets.len(),
        drifted,
        lagging_partitions: lagging,
        dry_run,
        elapsed: started.elapsed(),
    })
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
