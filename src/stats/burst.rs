//! Burst weights: how much one rating counts, given its post's recent arrival rate.

/// `BURST_*` settings (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstConfig {
    pub bucket_secs: u32,
    pub half_life_buckets: f64,
    pub k: f64,
    pub floor: f64,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            bucket_secs: 60,
            half_life_buckets: 30.0,
            k: 3.0,
            floor: 10.0,
        }
    }
}

/// Full weight for every rating until the damping model lands.
#[derive(Debug, Clone)]
pub struct BurstDetector {
    pub config: BurstConfig,
}

impl BurstDetector {
    pub fn new(config: BurstConfig) -> Self {
        BurstDetector { config }
    }

    pub async fn weight<C: redis::aio::ConnectionLike + Send>(
        &self,
        _conn: &mut C,
        _key: &str,
        _now_ms: i64,
    ) -> redis::RedisResult<i32> {
        Ok(1000)
    }
}
