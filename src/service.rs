//! What the API does, free of HTTP: each function takes the [`Context`] and typed input and
//! returns typed output or an [`ApiError`].

pub mod cursor;
pub mod pages;
pub mod posts;
pub mod ratings;
pub mod render;
pub mod scores;
pub mod users;

use std::sync::Arc;

use crate::auth::password::HashPool;
use crate::auth::TokenKeys;
use crate::db::{PgPool, PooledConn};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::per_worker::PerWorker;
use crate::stats::burst::BurstDetector;
use crate::stats::StatsCache;

/// What the service functions work with: pools, caches, keys and counters, built once by
/// `server::start` and shared by every HTTP worker (through `app::AppState`).
pub struct Context {
    /// `DATABASE_POOL_SIZE` connections shared out over the HTTP workers ([`crate::per_worker`]).
    pub pool: PerWorker<PgPool>,
    pub stats: StatsCache,
    /// Pages of posts and single posts in memory.
    pub pages: pages::PageCache,
    /// Each HTTP worker's queue of own-score lookups ([`scores`]).
    pub scores: PerWorker<scores::Queue>,
    pub burst: BurstDetector,
    pub tokens: TokenKeys,
    /// Signs and reads the opaque page cursors.
    pub cursors: cursor::CursorCodec,
    pub metrics: Arc<Metrics>,
    /// Post id → author: posts never change author, so entries never go stale.
    pub authors: moka::future::Cache<i64, i64>,
    /// `PASSWORD_HASH_*`: the argon2 threads and their queue.
    pub passwords: HashPool,
}

impl Context {
    /// A pooled connection; a pool that cannot give one in time means the database is down.
    pub async fn db(&self) -> Result<PooledConn, ApiError> {
        self.pool.local().get().await.map_err(|e| {
            log::warn!("database unavailable: {e}");
            ApiError::Unavailable("database")
        })
    }
}
