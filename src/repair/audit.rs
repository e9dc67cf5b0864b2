//! The audit (anti-entropy): one instance at a time (an advisory lock) walks every post and
//! compares Redis with PostgreSQL, for the losses no event reveals: a hash deleted or rolled
//! back on a post nobody rates any more, ratings changed in SQL by an operator.
//!
//! Two passes, each a walk in chunks of [`CHUNK`] posts:
//! - the version pass (every `STATS_AUDIT_INTERVAL_SECS`) reads `post_versions` and the
//!   hashes' versions and stats: an impossible stat, or a hash ahead of PostgreSQL, is
//!   repaired at once; a hash behind is events in flight, unless it is still behind a grace
//!   later (then it lost them);
//! - the full pass (every `STATS_AUDIT_FULL_INTERVAL_SECS`) also sums `ratings` per post
//!   (one statement per chunk, so each is a consistent snapshot) and repairs any post whose
//!   hash has reached the snapshot's version but differs from it.
//!
//! Nothing is written here: findings go to the repair queue, whose rounds are exact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use tokio_util::sync::CancellationToken;

use super::rebuild::{RepairError, CHUNK};
use crate::db::{self, snapshot};
use crate::metrics::Metrics;
use crate::stats::{is_possible, Cause, PostStats, StatsStore};

/// At most this many posts are remembered as behind between two passes.
const MAX_LAGGING: usize = 100_000;
/// Findings logged one by one per pass; the pass's summary line counts them all.
const LOGGED_PER_PASS: u64 = 10;

pub struct Auditor {
    pub store: StatsStore,
    pub database_url: String,
    pub timeout: Duration,
    /// `STATS_AUDIT_INTERVAL_SECS`: between version passes; zero turns the audit off.
    pub interval: Duration,
    /// `STATS_AUDIT_FULL_INTERVAL_SECS`: between full passes.
    pub full_interval: Duration,
    /// `STATS_REPAIR_GRACE_SECS`: how long a hash may stay behind its version.
    pub grace: Duration,
    pub metrics: Arc<Metrics>,
}

/// What one pass saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub posts: u64,
    /// Posts queued for repair.
    pub found: u64,
    /// Posts whose hash is behind their version (version pass): events in flight, or lost if
    /// still behind a grace later.
    pub behind: u64,
}

impl Auditor {
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let mut lead: Option<AsyncPgConnection> = None;
        let mut lagging: HashMap<i64, (i64, Instant)> = HashMap::new();
        let mut last_full: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let result = async {
                if lead.is_none() {
                    let mut conn = db::connect(&self.database_url, self.timeout).await?;
                    if !snapshot::try_lead_audit(&mut conn).await? {
                        return Ok(None);
                    }
                    log::info!("stats audit: this instance audits");
                    lead = Some(conn);
                }
                let Some(conn) = lead.as_mut() else {
                    return Ok(None);
                };
                let full = last_full.is_none_or(|t| t.elapsed() >= self.full_interval);
                let started = Instant::now();
                let report = if full {
                    self.full_pass(conn).await?
                } else {
                    self.version_pass(conn, &mut lagging).await?
                };
                if full {
                    last_full = Some(started);
                }
                Ok::<_, RepairError>(Some((full, report, started.elapsed())))
            }
            .await;
            match result {
                Ok(Some((full, report, took))) => {
                    let kind = if full { "full" } else { "version" };
                    let level = if report.found > 0 {
                        log::Level::Warn
                    } else {
                        log::Level::Debug
                    };
                    log::log!(
                        level,
                        "stats audit ({kind} pass): {} posts in {} ms, {} to repair",
                        report.posts,
                        took.as_millis(),
                        report.found
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!("stats audit failed: {e}");
                    // Gives up the lead; the next attempt reconnects.
                    lead = None;
                }
            }
        }
    }

    /// Versions and plausibility of every stamped post against its hash.
    pub async fn version_pass(
        &self,
        conn: &mut AsyncPgConnection,
        lagging: &mut HashMap<i64, (i64, Instant)>,
    ) -> Result<PassReport, RepairError> {
        let queue = self.store.repairs();
        let mut report = PassReport::default();
        let mut after = 0;
        loop {
            let chunk = snapshot::versions_after(conn, after, CHUNK as i64).await?;
            let Some(last) = chunk.last() else {
                break;
            };
            after = last.post_id;
            let ids: Vec<i64> = chunk.iter().map(|p| p.post_id).collect();
            let stored = self.store.load_versions(&ids).await?;
            let now = Instant::now();
            for pv in &chunk {
                let s = stored.get(&pv.post_id).copied().unwrap_or_default();
                let finding = if s.version > pv.version {
                    Some((Cause::AuditDrift, None))
                } else if s.version == pv.version {
                    lagging.remove(&pv.post_id);
                    (!is_possible(&s.stats)).then_some((Cause::Impossible, None))
                } else {
                    report.behind += 1;
                    match lagging.get(&pv.post_id) {
                        Some(&(want, since))
                            if s.version < want && now.duration_since(since) >= self.grace =>
                        {
                            lagging.remove(&pv.post_id);
                            Some((Cause::AuditLost, Some(want)))
                        }
                        Some(_) => None,
                        None => {
                            if lagging.len() < MAX_LAGGING {
                                lagging.insert(pv.post_id, (pv.version, now));
                            }
                            None
                        }
                    }
                };
                if let Some((cause, until)) = finding {
                    if report.found < LOGGED_PER_PASS {
                        log::warn!(
                            "stats audit: post {} at version {} in Redis, {} in PostgreSQL ({})",
                            pv.post_id,
                            s.version,
                            pv.version,
                            cause.as_str()
                        );
                    }
                    self.metrics.heal.audit_drift.inc();
                    queue.post(pv.post_id, cause, until);
                    report.found += 1;
                }
            }
            report.posts += chunk.len() as u64;
            self.metrics.heal.audit_posts.inc_by(chunk.len() as u64);
            tokio::task::yield_now().await;
        }
        Ok(report)
    }

    /// Every post's sums against its hash, where the hash has reached the snapshot's version.
    pub async fn full_pass(&self, conn: &mut AsyncPgConnection) -> Result<PassReport, RepairError> {
        let queue = self.store.repairs();
        let mut report = PassReport::default();
        let mut after = 0;
        while let Some(upto) = snapshot::post_range(conn, after, CHUNK as i64).await? {
            let targets = snapshot::targets(conn, snapshot::Scope::Range { after, upto }).await?;
            after = upto;
            let ids: Vec<i64> = targets.iter().map(|t| t.post_id).collect();
            let stored = self.store.load_versions(&ids).await?;
            for t in &targets {
                let s = stored.get(&t.post_id).copied().unwrap_or_default();
                let truth = PostStats::from_array(t.stats());
                // A different version is events in flight, which the version pass watches.
                if s.version == t.version && s.stats != truth {
                    if report.found < LOGGED_PER_PASS {
                        log::warn!(
                            "stats audit: post {} differs from PostgreSQL at version {}: {:?} instead of {:?}",
                            t.post_id, t.version, s.stats, truth
                        );
                    }
                    self.metrics.heal.audit_drift.inc();
                    queue.post(t.post_id, Cause::AuditDrift, None);
                    report.found += 1;
                }
            }
            report.posts += targets.len() as u64;
            self.metrics.heal.audit_posts.inc_by(targets.len() as u64);
            tokio::task::yield_now().await;
        }
        Ok(report)
    }
}
