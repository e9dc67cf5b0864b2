//! Posts in memory (DESIGN §4): a post never changes once written, so pages of posts and single
//! posts are cached, and a warm anonymous page needs no PostgreSQL at all.
//!
//! - The first page lives `PAGE_CACHE_FIRST_MS` [1000], so a post created on another instance
//!   is on every instance's first page within about a second. A post created on this instance
//!   is on its first page at once: creating one moves a generation counter, and a first page
//!   loaded under an older generation is loaded again.
//! - Later pages (keyed by their cursor) and single posts live `PAGE_CACHE_TTL_SECS` [30]: new
//!   posts are newer than any cursor, so only an operator's `DELETE` in SQL (or a post whose
//!   transaction committed long after it began) shows there late, by at most that long.
//! - One load reads [`PAGE_ROWS`] posts, so every page size is served from the same entry.
//!   Concurrent misses of one entry load once. The cached bytes are bounded by `PAGE_CACHE_MB`
//!   for pages and as much for single posts (posts shared by both are counted twice).
//!
//! - A whole anonymous page, stats included, is kept as its response bytes for
//!   `PAGE_CACHE_FIRST_MS` too: the stats it shows are then at most that much older than the
//!   stats cache's (which already keeps them up to `STATS_CACHE_TTL_SECS`). With the stats
//!   cache off (`STATS_CACHE_TTL_SECS=0`), bodies are not kept either.
//!
//! The caller's own scores are never cached: they are read for exactly the posts shown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use prometheus::IntCounter;

use super::render::StoredPost;
use super::Context;
use crate::db::{self, posts::PageKey, posts::PAGE_ROWS};
use crate::error::ApiError;

/// Up to [`PAGE_ROWS`] posts, newest first, as loaded under one generation.
#[derive(Debug)]
pub struct Rows {
    generation: u64,
    pub posts: Vec<Arc<StoredPost>>,
}

pub struct PageCache {
    first: Option<Cache<(), Arc<Rows>>>,
    later: Option<Cache<PageKey, Arc<Rows>>>,
    posts: Option<Cache<i64, Arc<StoredPost>>>,
    /// Anonymous page bodies by cursor and page size.
    bodies: Option<Cache<(Option<PageKey>, usize), Body>>,
    generation: AtomicU64,
    /// Statements run to load pages and posts (`post_rate_page_loads_total`).
    loads: IntCounter,
}

/// An anonymous page's response, as built under one generation.
#[derive(Debug, Clone)]
struct Body {
    generation: u64,
    bytes: Bytes,
}

pub use crate::config::PageCacheSettings;

impl PageCache {
    /// `stats_ttl`: how long the stats cache keeps stats; bodies live no longer.
    pub fn new(settings: PageCacheSettings, stats_ttl: Duration, loads: IntCounter) -> Self {
        fn weighed<K, V>(ttl: Duration, max: u64, size: fn(&V) -> usize) -> Option<Cache<K, V>>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            (!ttl.is_zero()).then(|| {
                Cache::builder()
                    .time_to_live(ttl)
                    .max_capacity(max)
                    .weigher(move |_: &K, v: &V| u32::try_from(size(v)).unwrap_or(u32::MAX))
                    .build()
            })
        }
        let rows = |r: &Arc<Rows>| r.posts.iter().map(|p| p.size()).sum();
        PageCache {
            first: weighed(settings.first_ttl, settings.max_bytes, rows),
            later: weighed(settings.ttl, settings.max_bytes, rows),
            posts: weighed(settings.ttl, settings.max_bytes, |p: &Arc<StoredPost>| {
                p.size()
            }),
            bodies: weighed(
                settings.first_ttl.min(stats_ttl),
                settings.max_bytes,
                |b: &Body| b.bytes.len(),
            ),
            generation: AtomicU64::new(0),
            loads,
        }
    }

    /// A post was created here: the first page must show it from now on.
    pub fn created(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// The posts after `after` (the first page when `None`), newest first, up to [`PAGE_ROWS`].
pub async fn rows(state: &Context, after: Option<PageKey>) -> Result<Arc<Rows>, ApiError> {
    let pages = &state.pages;
    let load = |generation| load_rows(state, after, generation);
    let of = |rows: &Arc<Rows>| rows.generation;
    match (after, &pages.first, &pages.later) {
        (None, Some(first), _) => pages.fresh(first, (), true, of, load).await,
        (Some(key), _, Some(later)) => pages.fresh(later, key, false, of, load).await,
        _ => load(pages.generation()).await,
    }
}

/// The body of the anonymous page of `limit` posts after `after`, from memory, or built by
/// `build` (once for concurrent misses).
pub async fn anonymous<F>(
    state: &Context,
    after: Option<PageKey>,
    limit: usize,
    build: impl Fn() -> F,
) -> Result<Bytes, ApiError>
where
    F: std::future::Future<Output = Result<Vec<u8>, ApiError>>,
{
    let pages = &state.pages;
    let Some(cache) = &pages.bodies else {
        return build().await.map(Bytes::from);
    };
    let load = |generation| {
        let build = build();
        async move {
            let bytes = Bytes::from(build.await?);
            Ok(Body { generation, bytes })
        }
    };
    let body = pages
        .fresh(
            cache,
            (after, limit),
            after.is_none(),
            |b| b.generation,
            load,
        )
        .await?;
    Ok(body.bytes)
}

impl PageCache {
    /// The entry of `key`, loaded by `load(generation)` on a miss (concurrent misses share
    /// one load). The generation is read before the load starts, so an entry of the first
    /// page (`first`) that a post created here since may be missing from is loaded again: a
    /// few tries, as posts may keep being created while it loads (the entry is then at most
    /// a load late).
    async fn fresh<K, V, Fut>(
        &self,
        cache: &Cache<K, V>,
        key: K,
        first: bool,
        generation_of: impl Fn(&V) -> u64,
        load: impl Fn(u64) -> Fut,
    ) -> Result<V, ApiError>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<V, ApiError>>,
    {
        let mut tries = 0;
        loop {
            let value = cache
                .try_get_with(key.clone(), load(self.generation()))
                .await
                .map_err(unshare)?;
            tries += 1;
            if !first || tries > 3 || generation_of(&value) == self.generation() {
                return Ok(value);
            }
            cache.invalidate(&key).await;
        }
    }
}

/// One post, or `None` when there is no such post (not cached: it may be created any time).
pub async fn post(state: &Context, id: i64) -> Result<Option<Arc<StoredPost>>, ApiError> {
    let load = async {
        let mut conn = state.db().await?;
        state.pages.loads.inc();
        match db::posts::get(&mut conn, id).await? {
            Some(row) => Ok(Arc::new(StoredPost::new(row))),
            None => Err(ApiError::post_not_found()),
        }
    };
    let found = match &state.pages.posts {
        None => load.await,
        Some(cache) => cache.try_get_with(id, load).await.map_err(unshare),
    };
    match found {
        Ok(post) => Ok(Some(post)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `generation`: read before the statement (a post created after it makes the rows stale).
async fn load_rows(
    state: &Context,
    after: Option<PageKey>,
    generation: u64,
) -> Result<Arc<Rows>, ApiError> {
    let pages = &state.pages;
    let mut conn = state.db().await?;
    pages.loads.inc();
    let rows = db::posts::page(&mut conn, after).await?;
    drop(conn);
    let posts: Vec<Arc<StoredPost>> = rows
        .into_iter()
        .map(|row| Arc::new(StoredPost::new(row)))
        .collect();
    if let Some(cache) = &pages.posts {
        for post in &posts {
            cache.insert(post.id, post.clone()).await;
        }
    }
    debug_assert!(posts.len() <= PAGE_ROWS);
    Ok(Arc::new(Rows { generation, posts }))
}

/// The error of a load that several requests shared.
fn unshare(e: Arc<ApiError>) -> ApiError {
    match &*e {
        ApiError::Unavailable(what) => ApiError::Unavailable(what),
        ApiError::NotFound(what) => ApiError::NotFound(what.clone()),
        ApiError::Internal(cause) => ApiError::Internal(cause.clone()),
        other => ApiError::Internal(other.to_string()),
    }
}
