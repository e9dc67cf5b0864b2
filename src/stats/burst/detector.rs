//! The detector on Redis: `burst.lua` records a call and weighs it, `burst_undo.lua` takes
//! back a call whose write was a no-op.

use redis::aio::ConnectionLike;

use super::BurstConfig;
use crate::stats::{StatsError, StatsStore};

/// The Redis keys of one post's detector. [`crate::stats::StatsStore`] derives both from the
/// post id (`burst_key`, `burst_raters_key`), so they can carry one cluster hash tag per post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BurstKeys {
    /// The state hash: bucket, arrivals, previous bucket's arrivals, mu, var.
    pub state: String,
    /// The raters of the current bucket, each with their calls that count.
    pub raters: String,
}

/// What the detector recorded for one call: the weight, and what [`BurstDetector::undo`]
/// needs to take the call back if the rating write turns out to be a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The rating's weight in thousandths, 0..=1000.
    pub weight_milli: i32,
    /// Whether this call raised the bucket's arrival count (the rater's first in the bucket).
    pub counted: bool,
    /// The bucket the call was recorded in.
    pub bucket: i64,
}

/// Runs `burst.lua` (and `burst_undo.lua`) against Redis; cheap to clone, one per process.
#[derive(Debug, Clone)]
pub struct BurstDetector {
    script: redis::Script,
    undo_script: redis::Script,
    config: BurstConfig,
}

impl BurstDetector {
    pub fn new(config: BurstConfig) -> Self {
        Self {
            script: redis::Script::new(include_str!("../burst.lua")),
            undo_script: redis::Script::new(include_str!("../burst_undo.lua")),
            config,
        }
    }

    pub fn config(&self) -> &BurstConfig {
        &self.config
    }

    /// Records one call of `rater` at `now_ms` for the post whose state lives at `keys`, and
    /// returns the weight (thousandths, 0..=1000) its rating gets. The rater counts as an
    /// arrival only on their first call in the bucket.
    pub async fn weight<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &BurstKeys,
        rater: i64,
        now_ms: i64,
    ) -> redis::RedisResult<Arrival> {
        let (weight_milli, counted, bucket): (i32, i32, i64) = self
            .script
            .key(&keys.state)
            .key(&keys.raters)
            .arg(now_ms)
            .arg(self.config.bucket_secs)
            .arg(self.config.half_life_buckets)
            .arg(self.config.k)
            .arg(self.config.floor)
            .arg(rater)
            .invoke_async(conn)
            .await?;
        Ok(Arrival {
            weight_milli,
            counted: counted == 1,
            bucket,
        })
    }

    /// Takes back a call of [`Self::weight`] whose rating write was a no-op (the score was
    /// unchanged): its rater stops counting unless another of their calls in the same bucket
    /// wrote. Does nothing once the post's state has moved to a later bucket. Returns whether
    /// the arrival count fell.
    pub async fn undo<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        keys: &BurstKeys,
        rater: i64,
        bucket: i64,
    ) -> redis::RedisResult<bool> {
        let withdrawn: i32 = self
            .undo_script
            .key(&keys.state)
            .key(&keys.raters)
            .arg(bucket)
            .arg(rater)
            .invoke_async(conn)
            .await?;
        Ok(withdrawn == 1)
    }
}

/// The detector as the service calls it: on a pooled connection of the stats store, with the
/// post's keys laid out by the store.
impl StatsStore {
    pub fn burst_keys(&self, post_id: i64) -> BurstKeys {
        BurstKeys {
            state: self.burst_key(post_id),
            raters: self.burst_raters_key(post_id),
        }
    }

    /// [`BurstDetector::weight`] for `rater`'s call on `post_id` at `now_ms`.
    pub async fn burst_weight(
        &self,
        detector: &BurstDetector,
        post_id: i64,
        rater: i64,
        now_ms: i64,
    ) -> Result<Arrival, StatsError> {
        let keys = self.burst_keys(post_id);
        self.with_conn(|mut conn| async move {
            Ok(detector.weight(&mut conn, &keys, rater, now_ms).await?)
        })
        .await
    }

    /// [`BurstDetector::undo`] of `rater`'s call on `post_id` recorded in `bucket`.
    pub async fn burst_undo(
        &self,
        detector: &BurstDetector,
        post_id: i64,
        rater: i64,
        bucket: i64,
    ) -> Result<bool, StatsError> {
        let keys = self.burst_keys(post_id);
        self.with_conn(|mut conn| async move {
            Ok(detector.undo(&mut conn, &keys, rater, bucket).await?)
        })
        .await
    }
}
