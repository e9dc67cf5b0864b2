//! `/healthz` (the process answers), `/readyz` (each dependency, with latency) and `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::{web, HttpResponse};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::db;
use crate::server::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

fn check(result: Result<(), String>, started: Instant) -> Value {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => json!({ "status": "up", "latency_ms": latency_ms }),
        Err(e) => {
            log::warn!("readiness check failed: {e}");
            json!({ "status": "down", "latency_ms": latency_ms })
        }
    }
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers (status and latency of each)"),
        (status = 503, description = "A dependency is down")
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pg = async {
        let started = Instant::now();
        let result = async {
            let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
            diesel::sql_query("SELECT 1")
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        check(result, started)
    };
    let redis = async {
        let started = Instant::now();
        let result = state.stats.store().ping().await.map_err(|e| e.to_string());
        check(result, started)
    };
    let (pg, redis) = futures::join!(pg, redis);
    let mut checks = serde_json::Map::new();
    checks.insert("postgres".into(), pg);
    checks.insert("redis".into(), redis);
    if let Some(kafka) = &state.kafka_probe {
        let started = Instant::now();
        checks.insert("kafka".into(), check(kafka().await, started));
    }
    let ready = checks.values().all(|c| c["status"] == "up");
    let body = json!({ "status": if ready { "ready" } else { "unavailable" }, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // -1 when the database cannot say: a scrape should not fail because of it.
    let pending = match state.pool.get().await {
        Ok(mut conn) => db::outbox::pending(&mut conn).await.unwrap_or(-1),
        Err(_) => -1,
    };
    state.metrics.outbox_pending.set(pending);
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
