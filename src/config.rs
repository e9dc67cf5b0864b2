//! Typed settings read once from the environment; every error names its variable.

use std::env;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

mod sections;

pub use sections::{
    BurstConfig, BurstConfigError, EdgeLimits, HealSettings, PageCacheSettings, RateLimitStore,
};

#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`: the database is created when missing.
    pub database_url: String,
    /// `DATABASE_POOL_SIZE` [16]: connections for the API.
    pub database_pool_size: usize,
    /// `DATABASE_TIMEOUT_MS` [5000]: pool wait, connect and statement timeout.
    pub database_timeout: Duration,
    /// `REDIS_URL`: one server, or with `redis_cluster` a comma-separated list of seed nodes.
    pub redis_url: String,
    /// `REDIS_CLUSTER` [false]: Redis is a Redis Cluster (keys are laid out by partition
    /// with hash tags either way, see `stats::store`).
    pub redis_cluster: bool,
    /// `REDIS_KEY_PREFIX` [post-rate:]: every key the service writes starts with it.
    pub redis_key_prefix: String,
    /// `REDIS_POOL_SIZE` [32].
    pub redis_pool_size: usize,
    /// `REDIS_TIMEOUT_MS` [2000]: pool wait and per-command timeout.
    pub redis_timeout: Duration,
    /// `KAFKA_BROKERS` [unset]: unset means embedded mode (the relay applies directly).
    pub kafka_brokers: Option<String>,
    /// `KAFKA_TOPIC` [rating-events].
    pub kafka_topic: String,
    /// `KAFKA_GROUP_ID` [post-rate-stats].
    pub kafka_group_id: String,
    /// `KAFKA_PARTITIONS` [12]: also the number of relay sequence streams in embedded mode.
    pub kafka_partitions: i32,
    /// `KAFKA_MESSAGE_TIMEOUT_MS` [10000]: how long the relay waits for an ack before it
    /// retries the batch (a down broker turns into an error after this long).
    pub kafka_message_timeout: Duration,
    /// `KAFKA_SESSION_TIMEOUT_MS` [10000]: how long the group waits for a silent consumer
    /// (one killed, say) before its partitions move to the others.
    pub kafka_session_timeout: Duration,
    /// `KAFKA_MAX_POLL_INTERVAL_MS` [30000]: the consumer's rebalance timeout; bounds how long
    /// a group can stall waiting for a member that died while joining.
    pub kafka_max_poll_interval: Duration,
    /// `BIND_ADDR` [127.0.0.1:8080].
    pub bind_addr: String,
    /// `HTTP_WORKERS` [number of cores].
    pub http_workers: usize,
    /// `JWT_SECRET` [random per start]: HMAC key for tokens and page cursors.
    pub jwt_secret: Vec<u8>,
    /// Whether `jwt_secret` was generated because `JWT_SECRET` was unset.
    pub jwt_secret_generated: bool,
    /// `TOKEN_TTL_SECS` [3600].
    pub token_ttl_secs: u64,
    /// `STATS_CACHE_TTL_SECS` [300]: 0 disables the in-process stats cache.
    pub stats_cache_ttl: Duration,
    /// `STATS_CACHE_CAPACITY` [100000]: posts whose stats the cache holds at most.
    pub stats_cache_capacity: u64,
    /// `PAGE_CACHE_FIRST_MS` [1000], `PAGE_CACHE_TTL_SECS` [30], `PAGE_CACHE_MB` [64]: posts
    /// in memory (`crate::service::pages`).
    pub page_cache: PageCacheSettings,
    /// `BURST_BUCKET_SECS` [60], `BURST_HALF_LIFE_BUCKETS` [30], `BURST_K` [3], `BURST_FLOOR` [10].
    pub burst: BurstConfig,
    /// `RUN_RELAY` [true].
    pub run_relay: bool,
    /// `RUN_CONSUMER` [true].
    pub run_consumer: bool,
    /// `RELAY_BATCH_SIZE` [2000]: outbox rows stamped and published per batch.
    pub relay_batch_size: i64,
    /// `RELAY_POLL_MS` [20]: how long an idle relay waits before looking again.
    pub relay_poll: Duration,
    /// `CONSUMER_BATCH_SIZE` [20000] and `CONSUMER_BATCH_WAIT_MS` [20]. A batch is applied by
    /// one Redis script with its deltas summed per post, so a backlog drains faster in larger
    /// batches (1M events over 5,000 posts: ~320k events/s at 5,000, ~540k at 20,000, ~630k
    /// at 50,000), while Redis runs nothing else during a script (~17 ms for 20,000 events
    /// over 5,000 posts; longer when they touch more posts). Live traffic makes small
    /// batches: a batch closes `CONSUMER_BATCH_WAIT_MS` after its first event.
    pub consumer_batch_size: usize,
    pub consumer_batch_wait: Duration,
    /// `RATE_LIMIT_WRITES_PER_MIN` [120]: post and rating writes per user; 0 disables.
    pub rate_limit_writes_per_min: u32,
    /// `RATE_LIMIT_AUTH_PER_MIN` [30]: register and token requests per client address; 0 disables.
    pub rate_limit_auth_per_min: u32,
    /// `RATE_LIMIT_TRUST_FORWARDED_FOR` [false]: the client address is the last
    /// `X-Forwarded-For` entry, 400 when it is not an address (set it only behind a proxy
    /// that appends it).
    pub rate_limit_trust_forwarded_for: bool,
    /// `RATE_LIMIT_STORE` [memory]: where the limits' state lives, each instance's memory or
    /// Redis (shared by every instance).
    pub rate_limit_store: RateLimitStore,
    /// `APP_ENV` [development]: `production` refuses insecure settings.
    pub production: bool,
    /// What a client can make the service spend (DESIGN §8.6); see the README's "Security".
    pub edges: EdgeLimits,
    /// `PASSWORD_HASH_THREADS` [number of cores]: threads that hash and check passwords,
    /// each holding 19 MiB of argon2 memory once it has worked.
    pub password_hash_threads: usize,
    /// `PASSWORD_HASH_QUEUE` [16 per hashing thread]: sign-ups and sign-ins that may wait for
    /// a hashing thread; beyond it, 503 with `Retry-After` at once.
    pub password_hash_queue: usize,
    /// Self-healing of the stats (see `crate::repair`).
    pub heal: HealSettings,
}

fn var(name: &'static str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
            var: name,
            value: v,
            reason: e.to_string(),
        }),
    }
}

/// Like [`parse`], but the value must lie in `min..=max`.
fn parse_range<T>(name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display + Copy,
    T::Err: Display,
{
    let v = parse(name, default)?;
    if v < min || v > max {
        return Err(ConfigError {
            var: name,
            value: v.to_string(),
            reason: format!("must be between {min} and {max}"),
        });
    }
    Ok(v)
}

fn parse_bool(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match var(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                var: name,
                value: v,
                reason: "expected true or false".into(),
            }),
        },
    }
}

fn millis(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    parse_range(name, default, 1, 3_600_000).map(Duration::from_millis)
}

fn secs(name: &'static str, default: u64, min: u64) -> Result<Duration, ConfigError> {
    parse_range(name, default, min, 7 * 86400).map(Duration::from_secs)
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let app_env = var("APP_ENV").unwrap_or_else(|| "development".into());
        let production = match app_env.as_str() {
            "production" => true,
            "development" | "test" => false,
            _ => {
                return Err(ConfigError {
                    var: "APP_ENV",
                    value: app_env,
                    reason: "expected development, test or production".into(),
                })
            }
        };
        let (jwt_secret, jwt_secret_generated) = match var("JWT_SECRET") {
            Some(s) if production && s.len() < 32 => {
                return Err(ConfigError {
                    var: "JWT_SECRET",
                    value: "<hidden>".into(),
                    reason: "APP_ENV=production needs at least 32 bytes".into(),
                })
            }
            Some(s) => (s.into_bytes(), false),
            None if production => {
                return Err(ConfigError {
                    var: "JWT_SECRET",
                    value: String::new(),
                    reason: "APP_ENV=production needs a secret of at least 32 bytes".into(),
                })
            }
            None => (rand::random::<[u8; 32]>().to_vec(), true),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hash_threads = parse_range("PASSWORD_HASH_THREADS", cores, 1, 256)?;
        Ok(Settings {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/post_rate".into()),
            database_pool_size: parse_range("DATABASE_POOL_SIZE", 16, 1, 1000)?,
            database_timeout: millis("DATABASE_TIMEOUT_MS", 5000)?,
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            redis_cluster: parse_bool("REDIS_CLUSTER", false)?,
            redis_key_prefix: var("REDIS_KEY_PREFIX").unwrap_or_else(|| "post-rate:".into()),
            redis_pool_size: parse_range("REDIS_POOL_SIZE", 32, 1, 1000)?,
            redis_timeout: millis("REDIS_TIMEOUT_MS", 2000)?,
            kafka_brokers: var("KAFKA_BROKERS"),
            kafka_topic: var("KAFKA_TOPIC").unwrap_or_else(|| "rating-events".into()),
            kafka_group_id: var("KAFKA_GROUP_ID").unwrap_or_else(|| "post-rate-stats".into()),
            kafka_partitions: parse_range("KAFKA_PARTITIONS", 12, 1, 1000)?,
            kafka_message_timeout: millis("KAFKA_MESSAGE_TIMEOUT_MS", 10_000)?,
            kafka_session_timeout: millis("KAFKA_SESSION_TIMEOUT_MS", 10_000)?,
            kafka_max_poll_interval: millis("KAFKA_MAX_POLL_INTERVAL_MS", 30_000)?,
            bind_addr: var("BIND_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            http_workers: parse_range("HTTP_WORKERS", cores, 1, 256)?,
            jwt_secret,
            jwt_secret_generated,
            token_ttl_secs: parse_range("TOKEN_TTL_SECS", 3600, 1, 366 * 86400)?,
            stats_cache_ttl: Duration::from_secs(parse_range(
                "STATS_CACHE_TTL_SECS",
                300,
                0,
                86400,
            )?),
            stats_cache_capacity: parse_range("STATS_CACHE_CAPACITY", 100_000, 1, 100_000_000)?,
            page_cache: PageCacheSettings {
                first_ttl: Duration::from_millis(parse_range(
                    "PAGE_CACHE_FIRST_MS",
                    1000,
                    0,
                    60_000,
                )?),
                ttl: secs("PAGE_CACHE_TTL_SECS", 30, 0)?,
                max_bytes: parse_range("PAGE_CACHE_MB", 64, 1, 1_000_000)? << 20,
            },
            burst: BurstConfig {
                bucket_secs: parse_range("BURST_BUCKET_SECS", 60, 1, 86400)?,
                half_life_buckets: parse_range("BURST_HALF_LIFE_BUCKETS", 30.0, 0.01, 1e6)?,
                k: parse_range("BURST_K", 3.0, 0.0, 1000.0)?,
                floor: parse_range("BURST_FLOOR", 10.0, 1.0, 1e9)?,
            },
            run_relay: parse_bool("RUN_RELAY", true)?,
            run_consumer: parse_bool("RUN_CONSUMER", true)?,
            relay_batch_size: parse_range("RELAY_BATCH_SIZE", 2000, 1, 100_000)?,
            relay_poll: millis("RELAY_POLL_MS", 20)?,
            consumer_batch_size: parse_range("CONSUMER_BATCH_SIZE", 20_000, 1, 1_000_000)?,
            consumer_batch_wait: millis("CONSUMER_BATCH_WAIT_MS", 20)?,
            rate_limit_writes_per_min: parse_range("RATE_LIMIT_WRITES_PER_MIN", 120, 0, 1_000_000)?,
            rate_limit_auth_per_min: parse_range("RATE_LIMIT_AUTH_PER_MIN", 30, 0, 1_000_000)?,
            rate_limit_trust_forwarded_for: parse_bool("RATE_LIMIT_TRUST_FORWARDED_FOR", false)?,
            rate_limit_store: match var("RATE_LIMIT_STORE").as_deref() {
                None | Some("memory") => RateLimitStore::Memory,
                Some("redis") => RateLimitStore::Redis,
                Some(other) => {
                    return Err(ConfigError {
                        var: "RATE_LIMIT_STORE",
                        value: other.into(),
                        reason: "expected memory or redis".into(),
                    })
                }
            },
            production,
            edges: EdgeLimits::from_env()?,
            password_hash_threads: hash_threads,
            password_hash_queue: parse_range("PASSWORD_HASH_QUEUE", 16 * hash_threads, 0, 100_000)?,
            heal: HealSettings {
                grace: secs("STATS_REPAIR_GRACE_SECS", 10, 1)?,
                audit_interval: secs("STATS_AUDIT_INTERVAL_SECS", 10, 0)?,
                audit_full_interval: secs("STATS_AUDIT_FULL_INTERVAL_SECS", 600, 1)?,
                relay_max_failures: parse_range("RELAY_MAX_FAILURES", 5, 1, 1_000_000)?,
                pipeline_stuck: secs("PIPELINE_STUCK_SECS", 30, 1)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_errors_name_the_variable() {
        // A variable no other test sets, so parallel tests cannot race on it.
        env::set_var("POST_RATE_TEST_RANGE", "0");
        let err = parse_range("POST_RATE_TEST_RANGE", 5u32, 1, 10).unwrap_err();
        assert_eq!(err.var, "POST_RATE_TEST_RANGE");
        assert!(err.to_string().contains("POST_RATE_TEST_RANGE"));
        env::set_var("POST_RATE_TEST_RANGE", "abc");
        assert!(parse_range("POST_RATE_TEST_RANGE", 5u32, 1, 10).is_err());
        env::remove_var("POST_RATE_TEST_RANGE");
        assert_eq!(parse_range("POST_RATE_TEST_RANGE", 5u32, 1, 10).unwrap(), 5);
    }
}
