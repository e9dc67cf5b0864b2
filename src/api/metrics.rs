//! `/metrics`: the Prometheus registry, the outbox gauge (counted at most once a second) and
//! the stats consumer's own counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::db;

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Counted at most once a second: the count scans the outbox, and a scraper polling
    // every few milliseconds (as `loadgen watch-metric` does) would otherwise keep
    // PostgreSQL busy. -1 when the database cannot say: a scrape should not fail for it.
    if state.outbox_gauge.due(Instant::now()) {
        let pending = match state.service.pool.local().get().await {
            Ok(mut conn) => db::outbox::pending(&mut conn).await.unwrap_or(-1),
            Err(_) => -1,
        };
        state.service.metrics.outbox_pending.set(pending);
    }
    let mut text = state.service.metrics.render();
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
