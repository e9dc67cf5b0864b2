//! `/healthz` (the process answers), `/readyz` (a shared snapshot of named checks, see
//! [`crate::readiness`]) and `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::db::{self, PgPool};
use crate::events::kafka::BrokerProbe;
use crate::readiness::Check;
use crate::server::AppState;
use crate::stats::StatsStore;
use crate::worker::PerWorker;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

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
                diesel::sql_query("SELECT 1")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
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

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every check passes (status and latency of each); taken at most once a second"),
        (status = 503, description = "A dependency is down")
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let snapshot = state.readiness.snapshot().await;
    let body = snapshot.to_json();
    if snapshot.ready() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Counted at most once a second: the count scans the outbox, and a scraper polling
    // every few milliseconds (as `loadgen watch-metric` does) would otherwise keep
    // PostgreSQL busy. -1 when the database cannot say: a scrape should not fail for it.
    if state.outbox_gauge.due(Instant::now()) {
        let pending = match state.pool.local().get().await {
            Ok(mut conn) => db::outbox::pending(&mut conn).await.unwrap_or(-1),
            Err(_) => -1,
        };
        state.metrics.outbox_pending.set(pending);
    }
    let mut text = state.metrics.render();
    // The consumer keeps its own counters (atomics shared with the Kafka loop).
    let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let consumer = state.consumer_stats.as_deref();
    let counters = [
        (
            "post_rate_events_undecodable_total",
            "Kafka messages that could not be decoded and were skipped.",
            consumer.map_or(0, |c| get(&c.undecodable)),
        ),
        (
            "post_rate_consumer_batches_total",
            "Batches the stats consumer applied.",
            consumer.map_or(0, |c| get(&c.batches)),
        ),
        (
            "post_rate_consumer_apply_failures_total",
            "Batch applies that failed and were retried.",
            consumer.map_or(0, |c| get(&c.apply_failures)),
        ),
        (
            "post_rate_consumer_rebalances_total",
            "Consumer group rebalances this instance took part in.",
            consumer.map_or(0, |c| get(&c.rebalances)),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

/// Lets something happen at most once per `every`: `due` answers `true` for the first caller
/// and then again only once `every` has passed since the last `true`.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: std::sync::Mutex::new(None),
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let t = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(t.due(start), "the first call");
        assert!(!t.due(start + Duration::from_millis(5)));
        assert!(!t.due(start + Duration::from_millis(999)));
        assert!(t.due(start + Duration::from_millis(1000)));
        assert!(!t.due(start + Duration::from_millis(1500)));
        assert!(t.due(start + Duration::from_millis(2100)));
    }
}
