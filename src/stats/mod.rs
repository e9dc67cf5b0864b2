//! Redis-held per-post stats: the fenced store, the moka read cache and burst weights.

pub mod burst;
pub mod cache;
pub mod store;

pub use cache::StatsCache;
pub use store::{ApplyReport, StatsStore};

/// A post's totals: the sum of every delta applied to it (same ten integers).
pub type PostStats = crate::events::wire::StatsDelta;

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
}
