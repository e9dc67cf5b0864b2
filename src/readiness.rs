//! Readiness: a snapshot of named checks (PostgreSQL, Redis, Kafka, and whatever else a part
//! of the service wants to report), taken at most once per interval however many callers
//! ask, and shared by all of them. A flood of `/readyz` therefore costs the dependencies one
//! round of checks a second, and a caller never waits longer than one round (each check
//! bounds its own time).
//!
//! A check is a name and an async function returning an [`Outcome`]: a [`Status`] and any
//! detail fields. More checks slot in by adding to the list the server builds.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Up,
    /// Working, but not as it should (a store being repaired, say): named, still ready.
    Degraded,
    /// The instance should not get traffic while this lasts.
    Down,
}

/// What one check found: its status and the fields shown next to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub detail: Map<String, Value>,
}

impl Outcome {
    pub fn new(status: Status) -> Self {
        Outcome {
            status,
            detail: Map::new(),
        }
    }

    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(field.to_owned(), value.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut fields = Map::new();
        fields.insert("status".into(), serde_json::json!(self.status));
        fields.extend(self.detail.clone());
        Value::Object(fields)
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One named check.
pub struct Check {
    name: &'static str,
    run: Box<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Check {
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Check {
            name,
            run: Box::new(move || Box::pin(run())),
        }
    }

    /// A dependency that is up when `probe` answers `Ok` within `timeout`; its latency is
    /// shown, its error only logged.
    pub fn dependency<F, Fut>(name: &'static str, timeout: Duration, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let probe = Arc::new(probe);
        Check::new(name, move || {
            let probe = probe.clone();
            async move {
                let started = Instant::now();
                let result = tokio::time::timeout(timeout, probe())
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let status = match result {
                    Ok(()) => Status::Up,
                    Err(e) => {
                        log::warn!("readiness check {name} failed: {e}");
                        Status::Down
                    }
                };
                Outcome::new(status).with("latency_ms", latency_ms)
            }
        })
    }
}

/// The checks' results at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub checks: Vec<(&'static str, Outcome)>,
}

impl Snapshot {
    /// Ready unless a check is down.
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|(_, o)| o.status != Status::Down)
    }

    /// `{"status": "ready"|"degraded"|"unavailable", "checks": {name: {"status", ...}}}`.
    pub fn to_json(&self) -> Value {
        let status = if !self.ready() {
            "unavailable"
        } else if self
            .checks
            .iter()
            .any(|(_, o)| o.status == Status::Degraded)
        {
            "degraded"
        } else {
            "ready"
        };
        let checks: Map<String, Value> = self
            .checks
            .iter()
            .map(|(name, outcome)| ((*name).to_owned(), outcome.to_json()))
            .collect();
        serde_json::json!({ "status": status, "checks": checks })
    }
}

pub struct Readiness {
    checks: Vec<Check>,
    /// How long a snapshot is served before the next caller takes a new one.
    every: Duration,
    latest: Mutex<Option<Arc<Snapshot>>>,
    /// Held by the one caller taking a snapshot; the others wait for its result.
    taking: tokio::sync::Mutex<()>,
}

impl Readiness {
    pub fn new(checks: Vec<Check>, every: Duration) -> Self {
        Readiness {
            checks,
            every,
            latest: Mutex::new(None),
            taking: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .as_ref()
            .filter(|s| s.taken.elapsed() < self.every)
            .cloned()
    }

    /// The latest snapshot if it is younger than the interval; otherwise one caller runs every
    /// check (concurrently) while the others wait for its result.
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        if let Some(s) = self.fresh() {
            return s;
        }
        let _taking = self.taking.lock().await;
        // Taken by the caller this one waited for.
        if let Some(s) = self.fresh() {
            return s;
        }
        let outcomes = futures::future::join_all(self.checks.iter().map(|c| (c.run)())).await;
        let snapshot = Arc::new(Snapshot {
            taken: Instant::now(),
            checks: self.checks.iter().map(|c| c.name).zip(outcomes).collect(),
        });
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(name: &'static str, runs: Arc<AtomicUsize>, status: Status) -> Check {
        Check::new(name, move || {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Outcome::new(status).with("n", 1)
            }
        })
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_round_of_checks() {
        let runs = Arc::new(AtomicUsize::new(0));
        let readiness = Readiness::new(
            vec![counting("a", runs.clone(), Status::Up)],
            Duration::from_secs(3600),
        );
        let snapshots = futures::future::join_all((0..32).map(|_| readiness.snapshot())).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(snapshots.iter().all(|s| Arc::ptr_eq(s, &snapshots[0])));
        readiness.snapshot().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "still fresh");
    }

    #[tokio::test]
    async fn a_stale_snapshot_is_taken_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let readiness = Readiness::new(
            vec![counting("a", runs.clone(), Status::Up)],
            Duration::ZERO,
        );
        readiness.snapshot().await;
        readiness.snapshot().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn one_check_down_makes_the_instance_unavailable_and_degraded_does_not() {
        let runs = Arc::new(AtomicUsize::new(0));
        let checks = |second: Status| {
            vec![
                counting("a", runs.clone(), Status::Up),
                counting("b", runs.clone(), second),
            ]
        };
        let down = Readiness::new(checks(Status::Down), Duration::ZERO)
            .snapshot()
            .await;
        assert!(!down.ready());
        let json = down.to_json();
        assert_eq!(json["status"], "unavailable");
        assert_eq!(
            json["checks"]["a"],
            serde_json::json!({ "status": "up", "n": 1 })
        );
        assert_eq!(json["checks"]["b"]["status"], "down");

        let degraded = Readiness::new(checks(Status::Degraded), Duration::ZERO)
            .snapshot()
            .await;
        assert!(degraded.ready());
        assert_eq!(degraded.to_json()["status"], "degraded");
    }

    #[tokio::test]
    async fn a_dependency_that_does_not_answer_in_time_is_down() {
        let check = Check::dependency("slow", Duration::from_millis(10), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let failing = Check::dependency("failing", Duration::from_secs(1), || async {
            Err("refused".to_owned())
        });
        let snapshot = Readiness::new(vec![check, failing], Duration::ZERO)
            .snapshot()
            .await;
        assert!(snapshot
            .checks
            .iter()
            .all(|(_, o)| o.status == Status::Down));
        assert!(snapshot.checks[0].1.detail["latency_ms"].as_f64().unwrap() >= 10.0);
    }
}
