//! The named checks behind `/readyz`: one per dependency this instance talks to (down when it
//! does not answer), and the self-healing and the event pipeline, which are "degraded" at
//! worst, never "down": an instance whose stats are being rebuilt, or whose events wait,
//! still serves every request correctly (PostgreSQL is the truth), so it stays in the load
//! balancer while the status names what is wrong.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{self, PgPool};
use crate::events::kafka::{BrokerProbe, ConsumerStats};
use crate::per_worker::PerWorker;
use crate::readiness::{Check, Outcome, Status};
use crate::repair::PipelineHealth;
use crate::stats::{RepairQueue, StatsStore};

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a readiness snapshot is served before the next caller takes a new one.
pub const READINESS_EVERY: Duration = Duration::from_secs(1);

/// The dependency checks of `/readyz`: PostgreSQL (`SELECT 1` on a pooled connection), Redis
/// (`PING`) and, when configured, the Kafka brokers (metadata, on one long-lived client).
pub fn dependency_checks(
    pool: &PerWorker<PgPool>,
    store: &StatsStore,
    kafka: Option<BrokerProbe>,
) -> Vec<Check> {
    let pool = pool.clone();
    let store = store.clone();
    let mut checks = vec![
        Check::dependency("postgres", CHECK_TIMEOUT, move || {
            let pool = pool.clone();
            async move {
                let mut conn = pool.local().get().await.map_err(|e| e.to_string())?;
                db::ping(&mut conn).await.map_err(|e| e.to_string())
            }
        }),
        Check::dependency("redis", CHECK_TIMEOUT, move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }),
    ];
    if let Some(kafka) = kafka {
        checks.push(Check::dependency("kafka", CHECK_TIMEOUT, move || {
            let kafka = kafka.clone();
            async move { kafka.check(CHECK_TIMEOUT).await.map_err(|e| e.to_string()) }
        }));
    }
    checks
}

/// `stats`: degraded while partitions or posts wait for (or are under) a repair.
pub fn stats_check(queue: Arc<RepairQueue>) -> Check {
    Check::new("stats", move || {
        let queue = queue.clone();
        async move {
            let Some(since) = queue.repairing_for() else {
                return Outcome::new(Status::Up);
            };
            let (partitions, posts) = queue.waiting();
            Outcome::new(Status::Degraded)
                .with("repairing", true)
                .with("repairing_for_ms", since.as_millis() as u64)
                .with("waiting_partitions", partitions as u64)
                .with("waiting_posts", posts as u64)
        }
    })
}

/// `pipeline`: degraded when the oldest undelivered event is older than `stuck`, when no
/// instance's relay holds the lead, or when this instance's consumer has not joined its group
/// within `stuck` of starting.
pub fn pipeline_check(
    health: Arc<PipelineHealth>,
    consumer: Option<Arc<ConsumerStats>>,
    stuck: Duration,
) -> Check {
    let started = Instant::now();
    Check::new("pipeline", move || {
        let health = health.clone();
        let consumer = consumer.clone();
        async move { judge(&health, consumer.as_deref(), started.elapsed(), stuck) }
    })
}

fn judge(
    health: &PipelineHealth,
    consumer: Option<&ConsumerStats>,
    up_for: Duration,
    stuck: Duration,
) -> Outcome {
    let Some((oldest, leader)) = health.last_seen() else {
        return Outcome::new(Status::Up).with("checked", false);
    };
    let mut problems = Vec::new();
    if oldest > stuck {
        problems.push("events wait undelivered");
    }
    if !leader {
        problems.push("no relay leads");
    }
    let mut outcome = Outcome::new(Status::Up)
        .with("oldest_undelivered_secs", oldest.as_secs_f64())
        .with("relay_leader", leader);
    if let Some(c) = consumer {
        let joined = c.rebalances.load(Ordering::Relaxed) > 0;
        if !joined && up_for > stuck {
            problems.push("the consumer has not joined its group");
        }
        outcome = outcome.with(
            "consumer_partitions",
            c.assigned_partitions.load(Ordering::Relaxed),
        );
    }
    if !problems.is_empty() {
        outcome.status = Status::Degraded;
        outcome = outcome.with("stuck", problems.join("; "));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_is_degraded_for_each_way_it_can_stick() {
        let stuck = Duration::from_secs(30);
        let health = PipelineHealth::default();
        assert_eq!(judge(&health, None, stuck * 2, stuck).status, Status::Up);
        health.record(1.0, true);
        assert_eq!(judge(&health, None, stuck * 2, stuck).status, Status::Up);
        health.record(31.0, true);
        let late = judge(&health, None, stuck * 2, stuck);
        assert_eq!(late.status, Status::Degraded);
        assert_eq!(late.detail["stuck"], "events wait undelivered");
        health.record(0.0, false);
        assert_eq!(
            judge(&health, None, stuck * 2, stuck).detail["stuck"],
            "no relay leads"
        );
        health.record(0.0, true);
        let consumer = ConsumerStats::default();
        assert_eq!(
            judge(&health, Some(&consumer), stuck / 2, stuck).status,
            Status::Up,
            "still joining"
        );
        assert_eq!(
            judge(&health, Some(&consumer), stuck * 2, stuck).status,
            Status::Degraded
        );
        consumer.rebalances.store(1, Ordering::Relaxed);
        assert_eq!(
            judge(&health, Some(&consumer), stuck * 2, stuck).status,
            Status::Up
        );
    }
}
