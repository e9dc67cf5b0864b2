//! Process-wide counters, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub ratings_written: Counter,
    pub burst_damped: Counter,
    pub redis_errors: Counter,
    pub relay_published: Counter,
    pub relay_errors: Counter,
    pub events_applied: Counter,
    pub events_duplicate: Counter,
    pub events_gap: Counter,
}

impl Metrics {
    /// The text exposition; `gauges` and `extra` hold values read at scrape time.
    pub fn render(
        &self,
        gauges: &[(&str, &str, i64)],
        extra: &[(&str, &str, u64)],
        cache: (u64, u64),
    ) -> String {
        let counters: [(&str, &str, u64); 10] = [
            (
                "post_rate_ratings_written_total",
                "Rating changes committed.",
                self.ratings_written.get(),
            ),
            (
                "post_rate_burst_damped_ratings_total",
                "Ratings given less than full weight.",
                self.burst_damped.get(),
            ),
            (
                "post_rate_redis_errors_total",
                "Redis calls that failed or timed out.",
                self.redis_errors.get(),
            ),
            (
                "post_rate_relay_published_total",
                "Outbox events handed to the sink (Kafka or the embedded apply).",
                self.relay_published.get(),
            ),
            (
                "post_rate_relay_errors_total",
                "Relay rounds that failed and were retried.",
                self.relay_errors.get(),
            ),
            (
                "post_rate_events_applied_total",
                "Events applied to the Redis stats.",
                self.events_applied.get(),
            ),
            (
                "post_rate_events_duplicate_total",
                "Events skipped by the sequence fence as already applied.",
                self.events_duplicate.get(),
            ),
            (
                "post_rate_events_gap_total",
                "Events skipped because an earlier one was missing; the relay delivers them again.",
                self.events_gap.get(),
            ),
            (
                "post_rate_stats_cache_hits_total",
                "Stats reads answered by the in-process cache.",
                cache.0,
            ),
            (
                "post_rate_stats_cache_misses_total",
                "Stats reads that went to Redis.",
                cache.1,
            ),
        ];
        let mut out = String::new();
        for &(name, help, value) in counters.iter().chain(extra) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
