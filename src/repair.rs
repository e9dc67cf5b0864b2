//! Self-healing stats (DESIGN §3): Redis is derived state, so whatever it loses is rebuilt
//! from PostgreSQL by the service itself, online, for just the partitions and posts concerned.
//!
//! - The stats store queues what it finds wrong: a partition whose events arrive after a gap
//!   or without a fence (a rollback, a wipe), a post whose events do not follow on from the
//!   version its hash reached (a deleted or evicted hash), an impossible stat seen by a reader.
//! - The store check ([`watch`], about once a second) compares the fences with what the relay
//!   stamped: fences that are gone, a fence ahead of the relay, a fence standing still
//!   behind it for longer than the grace.
//! - The audit ([`audit`]) walks every post in chunks for what no event reveals.
//! - The [`Repairer`] drains the queue: each round takes the relay's stamp lock, snapshots
//!   the truth of what still needs it and writes it with the versions and fences of that
//!   snapshot ([`rebuild`]), so events in flight are neither lost nor counted twice. Every
//!   change raises a repair epoch in Redis, and each instance drops its cached stats when it
//!   sees the epoch move.

pub mod audit;
pub mod rebuild;
pub mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use tokio_util::sync::CancellationToken;

use crate::db::{self, outbox};
use crate::metrics::Metrics;
use crate::stats::repairs::Pending;
use crate::stats::{StatsCache, StatsStore};
use rebuild::{Outcome, RepairError};
use watch::FenceWatch;

/// How often the store check runs.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a round waits after the first request, to take the ones that follow with it.
const GATHER: Duration = Duration::from_millis(20);

/// What the store check last saw of the event pipeline, for `/readyz`.
#[derive(Debug, Default)]
pub struct PipelineHealth {
    checked: AtomicBool,
    oldest_pending_ms: AtomicU64,
    leader: AtomicBool,
}

impl PipelineHealth {
    /// `None` before the first check; else the age of the oldest undelivered event and
    /// whether any instance's relay holds the lead.
    pub fn last_seen(&self) -> Option<(Duration, bool)> {
        self.checked.load(Ordering::Acquire).then(|| {
            (
                Duration::from_millis(self.oldest_pending_ms.load(Ordering::Acquire)),
                self.leader.load(Ordering::Acquire),
            )
        })
    }

    pub(crate) fn record(&self, oldest_pending: f64, leader: bool) {
        self.oldest_pending_ms
            .store((oldest_pending * 1000.0) as u64, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
        self.checked.store(true, Ordering::Release);
    }
}

/// Drains the stats store's repair queue and runs the store check.
pub struct Repairer {
    pub store: StatsStore,
    /// This instance's stats cache, cleared whenever a repair changed something anywhere.
    pub cache: StatsCache,
    pub database_url: String,
    pub timeout: Duration,
    pub partitions: i32,
    /// `STATS_REPAIR_GRACE_SECS`: see [`FenceWatch::new`].
    pub grace: Duration,
    pub metrics: Arc<Metrics>,
    pub health: Arc<PipelineHealth>,
}

impl Repairer {
    /// Runs until `shutdown`. Errors are logged, counted and retried with backoff.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let queue = self.store.repairs().clone();
        let mut watch = FenceWatch::new(self.grace);
        let mut check_conn: Option<AsyncPgConnection> = None;
        let mut epoch: Option<i64> = None;
        let mut next_check = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let until_check = next_check.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = queue.wait() => tokio::time::sleep(GATHER).await,
                _ = tokio::time::sleep(until_check) => {}
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + CHECK_EVERY;
                if let Err(e) = self.check(&mut watch, &mut check_conn, &mut epoch).await {
                    log::warn!("stats check: {e}");
                    check_conn = None;
                }
            }
            let pending = queue.take();
            if pending.is_empty() {
                continue;
            }
            match self.round(&pending).await {
                Ok(outcome) => {
                    self.record(&outcome);
                    queue.finished();
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    self.metrics.heal.repair_failures.inc();
                    log::warn!("stats repair failed, retrying in {backoff:?}: {e}");
                    queue.put_back(pending);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round over a dedicated connection, which holds the stamp lock until it closes.
    async fn round(&self, pending: &Pending) -> Result<Outcome, RepairError> {
        let started = Instant::now();
        let mut conn = rebuild::locked_connection(&self.database_url, self.timeout).await?;
        let outcome = rebuild::rebuild(&mut conn, &self.store, self.partitions, pending).await?;
        drop(conn);
        if !outcome.is_empty() {
            log::warn!(
                "stats repaired from PostgreSQL in {} ms: partitions {:?}, posts {:?}; {} of {} posts differed",
                started.elapsed().as_millis(),
                outcome.partitions,
                outcome.posts.iter().take(20).collect::<Vec<_>>(),
                outcome.differed,
                outcome.checked
            );
        }
        Ok(outcome)
    }

    fn record(&self, outcome: &Outcome) {
        let heal = &self.metrics.heal;
        for (_, cause) in &outcome.partitions {
            heal.repairs.with_label_values(&[cause.as_str()]).inc();
        }
        for (_, cause) in &outcome.posts {
            heal.repairs.with_label_values(&[cause.as_str()]).inc();
        }
        heal.posts_repaired.inc_by(outcome.differed);
        if outcome.differed > 0 {
            // This instance's own cache, at once; the others follow the epoch.
            self.cache.invalidate_all();
        }
    }

    /// The store check: fences against the relay, the repair epoch, the outbox's age.
    async fn check(
        &self,
        watch: &mut FenceWatch,
        conn: &mut Option<AsyncPgConnection>,
        seen_epoch: &mut Option<i64>,
    ) -> Result<(), RepairError> {
        let (fences, epoch) = self.store.fences_and_epoch().await?;
        if seen_epoch.is_some_and(|seen| seen != epoch) {
            self.cache.invalidate_all();
        }
        *seen_epoch = Some(epoch);
        if conn.is_none() {
            *conn = Some(db::connect(&self.database_url, self.timeout).await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        let last = outbox::last_seqs(c).await?;
        let age = outbox::oldest_pending_age(c).await?;
        let leader = outbox::relay_leader_exists(c).await?;
        self.metrics.heal.outbox_oldest_age.set(age);
        self.health.record(age, leader);
        let queue = self.store.repairs();
        for (part, cause, until) in watch.observe(Instant::now(), &fences, &last) {
            log::warn!(
                "stats check: partition {part} needs a repair ({})",
                cause.as_str()
            );
            queue.partition(part, cause, until);
        }
        Ok(())
    }
}
