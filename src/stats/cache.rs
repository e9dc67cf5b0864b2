//! The moka cache in front of the Redis stats reads: a page's misses load in one round
//! trip, and concurrent misses of one post load once. `None` is a post whose stored stats
//! are impossible: shown without stats until repaired (a repair clears every cache).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, FutureExt};
use moka::future::Cache;
use prometheus::IntCounter;

use super::{PostStats, StatsError, StatsStore};

#[derive(Clone)]
pub struct StatsCache {
    store: StatsStore,
    /// `None` when `STATS_CACHE_TTL_SECS=0`: every read goes to Redis.
    cache: Option<Cache<i64, Option<PostStats>>>,
    hits: IntCounter,
    misses: IntCounter,
}

impl StatsCache {
    /// `hits` and `misses` count reads answered by the cache and reads that went to Redis.
    pub fn new(
        store: StatsStore,
        ttl: Duration,
        capacity: u64,
        hits: IntCounter,
        misses: IntCounter,
    ) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        StatsCache {
            store,
            cache,
            hits,
            misses,
        }
    }

    pub fn store(&self) -> &StatsStore {
        &self.store
    }

    /// Forgets every cached entry: the stats were repaired somewhere.
    pub fn invalidate_all(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    /// The stats of these posts (ids may repeat; absent posts are all zero, impossible ones
    /// `None`).
    pub async fn get_many(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, Option<PostStats>>, StatsError> {
        let Some(cache) = &self.cache else {
            self.misses.inc_by(ids.len() as u64);
            return self.store.load_many(ids).await;
        };
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match cache.get(&id).await {
                Some(stats) => {
                    found.insert(id, stats);
                }
                None if !missing.contains(&id) => missing.push(id),
                None => {}
            }
        }
        self.hits.inc_by(found.len() as u64);
        if missing.is_empty() {
            return Ok(found);
        }
        self.misses.inc_by(missing.len() as u64);
        // One shared load of every missing post; each post's entry awaits it through moka,
        // which runs only one initializer per key, so a post another request is already
        // loading waits for that load instead of starting its own.
        let store = self.store.clone();
        let batch = missing.clone();
        let load = async move {
            store
                .load_many(&batch)
                .await
                .map(Arc::new)
                .map_err(Arc::new)
        }
        .boxed()
        .shared();
        let entries = missing.iter().map(|&id| {
            let load = load.clone();
            async move {
                let stats = cache
                    .try_get_with(id, async move {
                        load.await
                            .map(|all| all.get(&id).copied().unwrap_or(Some(PostStats::default())))
                    })
                    .await;
                (id, stats)
            }
        });
        for (id, stats) in join_all(entries).await {
            let stats = stats.map_err(|e| StatsError::Shared(e.to_string()))?;
            found.insert(id, stats);
        }
        Ok(found)
    }
}
