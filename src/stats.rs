//! Redis-held per-post stats: the fenced store (on one Redis or a Redis Cluster), the moka
//! read cache, burst weights, and the queue of what the store found wrong.

pub mod burst;
pub mod cache;
pub mod conn;
mod limiter;
pub mod repairs;
pub mod slots;
pub mod store;

use crate::error::ApiError;

pub use crate::model::ApplyReport;
pub use cache::StatsCache;
pub use conn::{RedisAddr, RedisConn};
pub use repairs::{Cause, RepairQueue};
pub use store::{RedisTarget, StatsStore, StoredStats};

/// A post's totals: the sum of every delta applied to it (same ten integers).
pub type PostStats = crate::model::StatsDelta;

/// Whether `s` could be the stats of some set of ratings: no negative value, a histogram
/// that sums to the count and to the score sum, weights in 0..=1000 each. Anything else
/// (deltas applied to a hash that lost its base, a bad hand edit) is never shown to a reader.
pub fn is_possible(s: &PostStats) -> bool {
    let hist_count: i64 = s.hist.iter().sum();
    let hist_score: i64 = s.hist.iter().zip(0..).map(|(n, score)| n * score).sum();
    s.count >= 0
        && s.hist.iter().all(|&n| n >= 0)
        && hist_count == s.count
        && hist_score == s.score_sum
        && (0..=1000 * s.count).contains(&s.weight_sum)
        && (0..=5 * s.weight_sum).contains(&s.weighted_sum)
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer in time")]
    Timeout,
    /// A failed load that several waiting requests share.
    #[error("{0}")]
    Shared(String),
    #[error("redis pool configuration: {0}")]
    Config(String),
}

/// What a request that needs Redis answers when it fails: 503.
impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        log::warn!("redis unavailable: {e}");
        ApiError::Unavailable("redis")
    }
}

/// What a post's stats look like to a reader.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PublicStats {
    pub rating_count: i64,
    /// Burst-damped mean: weighted score sum / weight sum.
    pub average_rating: Option<f64>,
    /// Plain mean of the latest scores.
    pub raw_average_rating: Option<f64>,
    pub rating_histogram: [i64; 6],
}

impl From<&PostStats> for PublicStats {
    fn from(s: &PostStats) -> Self {
        let raw = (s.count > 0).then(|| s.score_sum as f64 / s.count as f64);
        // Every rating has a weight in [0, 1000]; if all of them were damped to zero, the
        // plain mean is the only honest answer left.
        let damped = if s.weight_sum > 0 {
            Some(s.weighted_sum as f64 / s.weight_sum as f64)
        } else {
            raw
        };
        PublicStats {
            rating_count: s.count,
            average_rating: damped,
            raw_average_rating: raw,
            rating_histogram: s.hist,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_come_from_the_sums() {
        let s = PostStats {
            count: 3,
            score_sum: 10,
            hist: [0, 0, 0, 0, 2, 1],
            weight_sum: 2500,
            weighted_sum: 4 * 1000 + 4 * 1000 + 5 * 500,
        };
        let p = PublicStats::from(&s);
        assert_eq!(p.rating_count, 3);
        assert_eq!(p.raw_average_rating, Some(10.0 / 3.0));
        assert_eq!(p.average_rating, Some(10500.0 / 2500.0));
        let empty = PublicStats::from(&PostStats::default());
        assert_eq!(empty.average_rating, None);
        assert_eq!(empty.raw_average_rating, None);
    }

    #[test]
    fn impossible_stats_are_recognised() {
        let good = PostStats {
            count: 3,
            score_sum: 13,
            hist: [0, 0, 0, 0, 2, 1],
            weight_sum: 2500,
            weighted_sum: 10_500,
        };
        assert!(is_possible(&good));
        assert!(is_possible(&PostStats::default()));
        let bad = [
            PostStats {
                count: -5,
                ..PostStats::default()
            },
            PostStats { count: 2, ..good },
            PostStats {
                score_sum: 12,
                ..good
            },
            PostStats {
                hist: [-1, 1, 0, 0, 2, 1],
                ..good
            },
            PostStats {
                weight_sum: 3001,
                ..good
            },
            PostStats {
                weight_sum: -1,
                ..good
            },
            PostStats {
                weighted_sum: 5 * 2500 + 1,
                ..good
            },
            PostStats {
                weighted_sum: -3,
                ..good
            },
        ];
        for b in bad {
            assert!(!is_possible(&b), "{b:?}");
        }
    }
}
