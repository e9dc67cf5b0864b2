//! The shared state every request handler and service function reads: pools, caches, keys,
//! limits and counters, built once by `server::start` and handed to the HTTP workers.
//!
//! It names parts of the layers above it (the page cache, the password threads, the limits);
//! nothing in it does I/O of its own but [`AppState::db`], the pooled connection every service
//! function takes.

use std::sync::Arc;

use crate::auth::password::HashPool;
use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::db::{PgPool, PooledConn};
use crate::error::ApiError;
use crate::events::kafka::ConsumerStats;
use crate::limits::RateLimits;
use crate::metrics::{Metrics, Throttle};
use crate::per_worker::PerWorker;
use crate::readiness::Readiness;
use crate::repair::PipelineHealth;
use crate::service::cursor::CursorCodec;
use crate::service::pages::PageCache;
use crate::service::scores;
use crate::stats::burst::BurstDetector;
use crate::stats::StatsCache;

pub struct AppState {
    pub settings: Settings,
    /// `DATABASE_POOL_SIZE` connections shared out over the HTTP workers ([`crate::per_worker`]).
    pub pool: PerWorker<PgPool>,
    pub stats: StatsCache,
    /// Pages of posts and single posts in memory.
    pub pages: PageCache,
    /// Each HTTP worker's queue of own-score lookups (`crate::service::scores`).
    pub scores: PerWorker<scores::Queue>,
    pub burst: BurstDetector,
    pub tokens: TokenKeys,
    /// Signs and reads the opaque page cursors.
    pub cursors: CursorCodec,
    pub metrics: Arc<Metrics>,
    /// Post id → author: posts never change author, so entries never go stale.
    pub authors: moka::future::Cache<i64, i64>,
    /// `RATE_LIMIT_*`, per instance or in Redis (`RATE_LIMIT_STORE`).
    pub limits: Arc<RateLimits>,
    /// How often `/metrics` counts the outbox.
    pub outbox_gauge: Throttle,
    /// `/readyz`: the named checks and their latest snapshot.
    pub readiness: Readiness,
    /// `PASSWORD_HASH_*`: the argon2 threads and their queue.
    pub passwords: HashPool,
    /// The stats consumer's counters, when this instance runs one.
    pub consumer_stats: Option<Arc<ConsumerStats>>,
    /// The event pipeline as the store check last saw it.
    pub pipeline: Arc<PipelineHealth>,
}

impl AppState {
    /// A pooled connection; a pool that cannot give one in time means the database is down.
    pub async fn db(&self) -> Result<PooledConn, ApiError> {
        self.pool.local().get().await.map_err(|e| {
            log::warn!("database unavailable: {e}");
            ApiError::Unavailable("database")
        })
    }
}
