//! The settings of each part, as [`super::Settings`] groups them: self-healing, connection
//! bounds, rate limits, the page cache and burst damping.

use std::time::Duration;

use super::{millis, parse_range, ConfigError};

/// How the service watches and repairs its Redis stats.
#[derive(Debug, Clone)]
pub struct HealSettings {
    /// `STATS_REPAIR_GRACE_SECS` [10]: how long a partition's fence may stand still behind
    /// the relay, or a post's hash behind its version, before it is rebuilt from PostgreSQL
    /// (it doubles, up to 5 minutes, for a partition that keeps needing it).
    pub grace: Duration,
    /// `STATS_AUDIT_INTERVAL_SECS` [10]: between two audit passes over every post's version;
    /// 0 turns the audit off.
    pub audit_interval: Duration,
    /// `STATS_AUDIT_FULL_INTERVAL_SECS` [600]: between two audit passes that also sum
    /// `ratings` per post (what catches ratings changed in SQL).
    pub audit_full_interval: Duration,
    /// `RELAY_MAX_FAILURES` [5]: deliveries of one batch that may fail in a row before the
    /// relay gives up the lead, so that an instance that can deliver takes it.
    pub relay_max_failures: u32,
    /// `PIPELINE_STUCK_SECS` [30]: `/readyz` reports the pipeline stuck when the oldest
    /// undelivered event is older than this.
    pub pipeline_stuck: Duration,
}

/// Connection limits and timeouts, one per phase of a connection.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// `HTTP_HEADER_TIMEOUT_MS` [5000]: time to send a request's head, from the connection's
    /// start (408) or, on a kept-alive connection, from the previous answer on top of the
    /// keep-alive time (the connection is closed).
    pub header_timeout: Duration,
    /// `HTTP_KEEP_ALIVE_MS` [5000]: how long an idle connection is kept open; 0 closes each
    /// connection after one answer.
    pub keep_alive: Duration,
    /// `HTTP_BODY_TIMEOUT_MS` [10000]: time for the whole request body, from the head (408).
    pub body_timeout: Duration,
    /// `HTTP_BODY_MIN_BYTES_PER_SEC` [1024]: a body must keep coming at least this fast once
    /// 2 s have passed (408); 0 disables.
    pub body_min_rate: u64,
    /// `HTTP_REQUEST_TIMEOUT_MS` [30000]: from a request's head to the last byte of its
    /// answer handed to the socket; a connection past it is closed without an answer (a
    /// client that does not read its answer, say).
    pub request_timeout: Duration,
    /// `HTTP_DISCONNECT_TIMEOUT_MS` [1000]: how long a closing connection may linger.
    pub disconnect_timeout: Duration,
    /// `HTTP_SHUTDOWN_TIMEOUT_SECS` [10]: how long a stopping server waits for requests in
    /// flight.
    pub shutdown_timeout_secs: u64,
    /// `HTTP_MAX_CONNECTIONS` [2000]: open connections per HTTP worker; beyond it the worker
    /// stops accepting until one closes. Each takes two file descriptors (the start-up log
    /// warns when the open-file limit is lower than the workers' total).
    pub max_connections: usize,
    /// `HTTP_MAX_HEADER_BYTES` [16384]: a request's target and headers together (431 over
    /// it). actix-web itself reads at most 128 KiB of head and 96 headers.
    pub max_header_bytes: usize,
}

impl EdgeLimits {
    pub(super) fn from_env() -> Result<Self, ConfigError> {
        let optional_millis =
            |name, default| parse_range(name, default, 0, 3_600_000).map(Duration::from_millis);
        Ok(EdgeLimits {
            header_timeout: millis("HTTP_HEADER_TIMEOUT_MS", 5000)?,
            keep_alive: optional_millis("HTTP_KEEP_ALIVE_MS", 5000)?,
            body_timeout: millis("HTTP_BODY_TIMEOUT_MS", 10_000)?,
            body_min_rate: parse_range("HTTP_BODY_MIN_BYTES_PER_SEC", 1024, 0, 1 << 30)?,
            request_timeout: millis("HTTP_REQUEST_TIMEOUT_MS", 30_000)?,
            disconnect_timeout: millis("HTTP_DISCONNECT_TIMEOUT_MS", 1000)?,
            shutdown_timeout_secs: parse_range("HTTP_SHUTDOWN_TIMEOUT_SECS", 10, 0, 3600)?,
            max_connections: parse_range("HTTP_MAX_CONNECTIONS", 2000, 1, 1_000_000)?,
            max_header_bytes: parse_range("HTTP_MAX_HEADER_BYTES", 16_384, 1024, 131_072)?,
        })
    }
}

/// Where the rate limits keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitStore {
    /// Each instance's memory: no round trip, but each instance grants the whole limit.
    Memory,
    /// Redis, one Lua call per check: every instance shares one limit.
    Redis,
}

/// Settings of the page cache (`service::pages`); a zero duration turns that cache off.
#[derive(Debug, Clone, Copy)]
pub struct PageCacheSettings {
    pub first_ttl: Duration,
    pub ttl: Duration,
    pub max_bytes: u64,
}

/// Tuning of the detector; read from BURST_BUCKET_SECS, BURST_HALF_LIFE_BUCKETS, BURST_K and
/// BURST_FLOOR by [`Settings::from_env`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstConfig {
    /// Length of one bucket in seconds (B).
    pub bucket_secs: u32,
    /// Half-life of the baseline, in buckets (H); `alpha = 1 - 2^(-1/H)`.
    pub half_life_buckets: f64,
    /// Standard deviations above the mean that still count as organic.
    pub k: f64,
    /// The constant `c` added to the limit; it is the whole limit of a post with no history.
    pub floor: f64,
}

impl Default for BurstConfig {
    fn default() -> Self {
        Self {
            bucket_secs: 60,
            half_life_buckets: 30.0,
            k: 3.0,
            floor: 10.0,
        }
    }
}

/// A [`BurstConfig`] value the detector cannot work with.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BurstConfigError {
    #[error("BURST_BUCKET_SECS must be at least 1")]
    BucketSecs,
    #[error("BURST_HALF_LIFE_BUCKETS must be a finite number > 0, got {0}")]
    HalfLife(f64),
    #[error("BURST_K must be a finite number >= 0, got {0}")]
    K(f64),
    // Below 1 the first rating of a new post would already be damped.
    #[error("BURST_FLOOR must be a finite number >= 1, got {0}")]
    Floor(f64),
}

impl BurstConfig {
    /// Checks the values; `from_env` calls this so a bad env var fails at start.
    pub fn validate(&self) -> Result<(), BurstConfigError> {
        if self.bucket_secs == 0 {
            return Err(BurstConfigError::BucketSecs);
        }
        if !(self.half_life_buckets.is_finite() && self.half_life_buckets > 0.0) {
            return Err(BurstConfigError::HalfLife(self.half_life_buckets));
        }
        if !(self.k.is_finite() && self.k >= 0.0) {
            return Err(BurstConfigError::K(self.k));
        }
        if !(self.floor.is_finite() && self.floor >= 1.0) {
            return Err(BurstConfigError::Floor(self.floor));
        }
        Ok(())
    }
}
