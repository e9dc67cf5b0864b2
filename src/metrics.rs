//! Prometheus metrics (a stable contract: the names below are documented in the README),
//! rendered in the text format at `/metrics`.

use std::time::Instant;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// `post_rate_http_requests_total{method,route,status}`; `route` is the route pattern and
    /// `method` a standard method or `OTHER` (labels from a closed set, see `api::observe`).
    pub http_requests: IntCounterVec,
    /// `post_rate_http_request_duration_seconds{method,route}`.
    pub http_duration: HistogramVec,
    pub ratings_written: IntCounter,
    pub burst_damped: IntCounter,
    pub redis_errors: IntCounter,
    /// Rate limit checks let through because Redis (`RATE_LIMIT_STORE=redis`) did not answer.
    pub rate_limit_store_errors: IntCounter,
    pub relay_published: IntCounter,
    pub relay_errors: IntCounter,
    pub events_applied: IntCounter,
    pub events_duplicate: IntCounter,
    pub events_gap: IntCounter,
    pub consumer_batch_size: Histogram,
    /// Seconds from a rating's commit to its event being applied to Redis.
    pub event_lag: Histogram,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// Statements that loaded a page of posts or one post (the page cache's misses).
    pub page_loads: IntCounter,
    /// Own-score lookups of signed-in reads, and the statements that served them.
    pub score_lookups: IntCounter,
    pub score_statements: IntCounter,
    /// Sign-ups and sign-ins refused because the password hashing queue was full.
    pub passwords_shed: IntCounter,
    /// Set at scrape time.
    pub outbox_pending: IntGauge,
    /// Self-healing (see `crate::repair`).
    pub heal: HealMetrics,
}

/// What the self-healing of the stats did: repairs by cause, posts rewritten, audit findings,
/// background task restarts, and the age of the oldest event not yet delivered.
pub struct HealMetrics {
    /// `post_rate_stats_repairs_total{cause}`: partitions and posts queued for repair that a
    /// repair round rebuilt, by why.
    pub repairs: IntCounterVec,
    /// `post_rate_stats_posts_repaired_total`: posts whose Redis stats a repair rewrote.
    pub posts_repaired: IntCounter,
    /// `post_rate_stats_repair_failures_total`: repair rounds that failed and were retried.
    pub repair_failures: IntCounter,
    /// `post_rate_stats_audit_posts_total`: posts the audit compared.
    pub audit_posts: IntCounter,
    /// `post_rate_stats_audit_drift_total`: posts the audit found wrong with no event to tell.
    pub audit_drift: IntCounter,
    /// `post_rate_events_unfollowed_total`: events skipped because their post's hash did not
    /// follow on; the post is repaired instead.
    pub events_unfollowed: IntCounter,
    /// `post_rate_task_restarts_total{task}`: background tasks restarted after a failure.
    pub task_restarts: IntCounterVec,
    /// `post_rate_outbox_oldest_age_seconds`: age of the oldest event not yet delivered
    /// (0 when there is none; refreshed by the store check, about once a second).
    pub outbox_oldest_age: prometheus::Gauge,
}

impl HealMetrics {
    fn new(r: &Registry) -> Self {
        let repairs = IntCounterVec::new(
            Opts::new(
                "post_rate_stats_repairs_total",
                "Partitions and posts whose Redis stats were rebuilt from PostgreSQL, by cause.",
            ),
            &["cause"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let task_restarts = IntCounterVec::new(
            Opts::new(
                "post_rate_task_restarts_total",
                "Background tasks restarted after an error or a panic.",
            ),
            &["task"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let outbox_oldest_age = prometheus::Gauge::new(
            "post_rate_outbox_oldest_age_seconds",
            "Age of the oldest rating event not yet delivered (0 when none waits).",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        for c in [
            Box::new(repairs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(task_restarts.clone()),
            Box::new(outbox_oldest_age.clone()),
        ] {
            r.register(c).unwrap_or_else(|e| unreachable!("{e}"));
        }
        // Every cause is shown from the start, at 0.
        for cause in crate::model::Cause::ALL {
            repairs.with_label_values(&[cause.as_str()]);
        }
        HealMetrics {
            repairs,
            posts_repaired: counter(
                r,
                "post_rate_stats_posts_repaired_total",
                "Posts whose Redis stats a repair rewrote.",
            ),
            repair_failures: counter(
                r,
                "post_rate_stats_repair_failures_total",
                "Repair rounds that failed and were retried.",
            ),
            audit_posts: counter(
                r,
                "post_rate_stats_audit_posts_total",
                "Posts the stats audit compared with PostgreSQL.",
            ),
            audit_drift: counter(
                r,
                "post_rate_stats_audit_drift_total",
                "Posts the audit found different from PostgreSQL with no event in flight.",
            ),
            events_unfollowed: counter(
                r,
                "post_rate_events_unfollowed_total",
                "Events skipped because their post's stats did not follow on; the post is repaired.",
            ),
            task_restarts,
            outbox_oldest_age,
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every name and label set is a constant, so registration cannot fail.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let http_requests = IntCounterVec::new(
            Opts::new("post_rate_http_requests_total", "HTTP requests answered."),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "post_rate_http_request_duration_seconds",
                "Time to answer an HTTP request.",
            )
            .buckets(exponential_buckets(0.0001, 2.5, 12).unwrap_or_default()),
            &["method", "route"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let consumer_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "post_rate_consumer_batch_size",
                "Events per batch applied by the stats consumer.",
            )
            .buckets(exponential_buckets(1.0, 4.0, 9).unwrap_or_default()),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let event_lag = Histogram::with_opts(
            HistogramOpts::new(
                "post_rate_event_lag_seconds",
                "Time from a rating's commit to its event being applied to the Redis stats.",
            )
            .buckets(exponential_buckets(0.001, 2.0, 16).unwrap_or_default()),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let outbox_pending = IntGauge::new(
            "post_rate_outbox_pending",
            "Rating events waiting in the outbox (-1 when the database cannot say).",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(consumer_batch_size.clone()),
            Box::new(event_lag.clone()),
            Box::new(outbox_pending.clone()),
        ] {
            r.register(c).unwrap_or_else(|e| unreachable!("{e}"));
        }
        Metrics {
            http_requests,
            http_duration,
            ratings_written: counter(
                r,
                "post_rate_ratings_written_total",
                "Rating changes committed.",
            ),
            burst_damped: counter(
                r,
                "post_rate_burst_damped_ratings_total",
                "Ratings given less than full weight.",
            ),
            redis_errors: counter(
                r,
                "post_rate_redis_errors_total",
                "Redis calls that failed or timed out.",
            ),
            rate_limit_store_errors: counter(
                r,
                "post_rate_rate_limit_store_errors_total",
                "Rate limit checks let through because Redis did not answer.",
            ),
            relay_published: counter(
                r,
                "post_rate_relay_published_total",
                "Outbox events delivered by the relay (to Kafka, or applied in embedded mode).",
            ),
            relay_errors: counter(
                r,
                "post_rate_relay_errors_total",
                "Relay rounds that failed and were retried.",
            ),
            events_applied: counter(
                r,
                "post_rate_events_applied_total",
                "Events applied to the Redis stats.",
            ),
            events_duplicate: counter(
                r,
                "post_rate_events_duplicate_total",
                "Events skipped by the sequence fence as already applied.",
            ),
            events_gap: counter(
                r,
                "post_rate_events_gap_total",
                "Events skipped because earlier ones of their partition are missing; the partition is repaired.",
            ),
            cache_hits: counter(
                r,
                "post_rate_stats_cache_hits_total",
                "Stats reads answered by the in-process cache.",
            ),
            cache_misses: counter(
                r,
                "post_rate_stats_cache_misses_total",
                "Stats reads that went to Redis.",
            ),
            page_loads: counter(
                r,
                "post_rate_page_loads_total",
                "Pages of posts and single posts read from PostgreSQL (the page cache's misses).",
            ),
            score_lookups: counter(
                r,
                "post_rate_score_lookups_total",
                "Own-score lookups of signed-in reads.",
            ),
            score_statements: counter(
                r,
                "post_rate_score_statements_total",
                "Statements that served own-score lookups (several concurrent lookups share one).",
            ),
            passwords_shed: counter(
                r,
                "post_rate_password_hashing_shed_total",
                "Sign-ups and sign-ins refused with 503 because the password hashing queue was full.",
            ),
            consumer_batch_size,
            event_lag,
            outbox_pending,
            heal: HealMetrics::new(r),
            registry,
        }
    }

    /// Records what applying `events` did, `now_ms` being the wall clock after the apply.
    pub fn applied(
        &self,
        report: &crate::model::ApplyReport,
        events: &[crate::model::RatingEvent],
    ) {
        self.events_applied.inc_by(report.applied);
        self.events_duplicate.inc_by(report.duplicates);
        self.events_gap.inc_by(report.gaps);
        self.heal.events_unfollowed.inc_by(report.unfollowed);
        let now_ms = chrono::Utc::now().timestamp_millis();
        for e in events {
            self.event_lag
                .observe((now_ms - e.committed_ms).max(0) as f64 / 1000.0);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
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
