//! `RATE_LIMIT_STORE=redis`: the same GCRA limits kept in Redis, one `gcra.lua` call per
//! check, so every instance behind a load balancer counts against one limit. When Redis
//! cannot answer, the request is let through (the limit fails open, like the burst weight
//! does): the failure is counted in `post_rate_rate_limit_store_errors_total` and logged at
//! most once per [`LOG_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;

use crate::error::ApiError;
use crate::stats::StatsStore;

/// How often a Redis failure of the limits is logged (each one is counted).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The Redis side of the limits: the store, its failures, and when one was last logged.
pub struct SharedLimits {
    store: StatsStore,
    errors: IntCounter,
    last_logged_secs: AtomicU64,
}

/// One limit's Redis key space and rate: `kind` names it in the key (`writes`, `auth`).
pub struct Limit {
    pub kind: &'static str,
    pub per_min: u32,
}

impl SharedLimits {
    pub fn new(store: StatsStore, errors: IntCounter) -> Self {
        SharedLimits {
            store,
            errors,
            last_logged_secs: AtomicU64::new(0),
        }
    }

    /// Counts one request of `client`: `Err(429)` over the limit, `Ok` within it or when
    /// Redis cannot say (counted in `errors`).
    pub async fn check(&self, limit: Limit, client: &str) -> Result<(), ApiError> {
        if limit.per_min == 0 {
            return Ok(());
        }
        let interval_us = 60_000_000 / u64::from(limit.per_min);
        let result = self
            .store
            .gcra_wait(limit.kind, client, interval_us, limit.per_min)
            .await;
        match result {
            Ok(0) => Ok(()),
            Ok(wait_us) => Err(ApiError::TooManyRequests {
                // Round up: a client that waits exactly Retry-After seconds gets through.
                retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
            }),
            Err(e) => {
                self.errors.inc();
                self.log_failure(&e);
                Ok(())
            }
        }
    }

    fn log_failure(&self, e: &dyn std::fmt::Display) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_logged_secs.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LOG_EVERY.as_secs()
            && self
                .last_logged_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("rate limits: Redis did not answer, letting requests through: {e}");
        }
    }
}
