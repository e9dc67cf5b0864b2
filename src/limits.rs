//! Request rate limits (DESIGN §7), on by default:
//!
//! - `RATE_LIMIT_WRITES_PER_MIN` [120] per signed-in user, on every post and rating write
//!   (`POST /posts`, `PUT` and `DELETE /posts/{id}/rating`);
//! - `RATE_LIMIT_AUTH_PER_MIN` [30] per client address, on `POST /users` and
//!   `POST /auth/token`, where each attempt also costs an argon2 hash.
//!
//! Over a limit the answer is 429 problem+json with `Retry-After` (whole seconds until one
//! more request would pass); `0` disables a limit. Each limit is a GCRA (the `governor`
//! crate): a client may spend its whole minute at once, then one request per `60/N` s.
//!
//! By default (`RATE_LIMIT_STORE=memory`) the limits live in each instance's memory: nothing
//! to call per request and they keep working while Redis is down, which is when a login
//! flood hurts most. Behind a load balancer that spreads one client over `n` instances, that
//! client gets up to `n` times the limit. `RATE_LIMIT_STORE=redis` keeps them in Redis
//! instead ([`shared`]): one limit for every instance, at one Redis call per check, failing
//! open while Redis is away.
//!
//! The client address is the TCP peer. Behind a proxy every request comes from the proxy,
//! so `RATE_LIMIT_TRUST_FORWARDED_FOR=true` takes the last entry of `X-Forwarded-For`
//! instead: the one your own proxy appended, which a client cannot forge. It may be written
//! `ip`, `ip:port`, `[v6]:port`, `[v6]` or a bare IPv6 address; when it is none of these the
//! request is refused with 400 rather than keyed by an entry the client may have written.
//! A request without the header (a health check that bypasses the proxy) is keyed by the
//! peer. Leave the setting off when clients reach the service directly, or they could pick
//! their own address.
//!
//! An IPv6 client is keyed by its /64: one host usually holds a whole /64 and can pick any
//! address in it, so keying by the exact address would give it a fresh allowance per address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Weak;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use crate::config::RateLimitStore;
use crate::error::ApiError;
use crate::stats::StatsStore;

mod shared;

use shared::{Limit, SharedLimits};

/// Who sent a request, as the limits read it: the TCP peer and the last `X-Forwarded-For`
/// header line (raw bytes, as received), if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client<'a> {
    pub peer: Option<IpAddr>,
    pub forwarded_for: Option<&'a [u8]>,
}

/// The per-instance limiters; `None` where the limit is disabled, or kept in Redis.
pub struct RateLimits {
    writes: Option<DefaultKeyedRateLimiter<i64>>,
    /// Keyed by [`client_key`].
    auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
    clock: DefaultClock,
    writes_per_min: u32,
    auth_per_min: u32,
    /// `RATE_LIMIT_STORE=redis`: the limits live in Redis instead of `writes` and `auth`.
    shared: Option<SharedLimits>,
}

fn limiter<K>(per_min: u32) -> Option<DefaultKeyedRateLimiter<K>>
where
    K: std::hash::Hash + Eq + Clone,
{
    NonZeroU32::new(per_min).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl RateLimits {
    pub fn new(writes_per_min: u32, auth_per_min: u32, trust_forwarded_for: bool) -> Self {
        Self {
            writes: limiter(writes_per_min),
            auth: limiter(auth_per_min),
            trust_forwarded_for,
            clock: DefaultClock::default(),
            writes_per_min,
            auth_per_min,
            shared: None,
        }
    }

    /// Limits kept where `kind` says: in this instance's memory, or in `store` (Redis), whose
    /// failures are counted in `errors`.
    pub fn kept_in(self, kind: RateLimitStore, store: &StatsStore, errors: IntCounter) -> Self {
        match kind {
            RateLimitStore::Memory => self,
            RateLimitStore::Redis => Self {
                writes: None,
                auth: None,
                shared: Some(SharedLimits::new(store.clone(), errors)),
                ..self
            },
        }
    }

    /// Counts one post or rating write of `user`, wherever the limits are kept.
    pub async fn admit_write(&self, user: i64) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return self.check_write(user);
        };
        let limit = Limit {
            kind: "writes",
            per_min: self.writes_per_min,
        };
        shared.check(limit, &user.to_string()).await
    }

    /// Counts one register or token request from `client`, wherever the limits are kept.
    pub async fn admit_auth(&self, client: Client<'_>) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return self.check_auth(client);
        };
        if self.auth_per_min == 0 {
            return Ok(());
        }
        let Some(addr) = self.client_addr(client)? else {
            return Ok(());
        };
        let limit = Limit {
            kind: "auth",
            per_min: self.auth_per_min,
        };
        shared.check(limit, &client_key(addr).to_string()).await
    }

    fn check<K>(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
    ) -> Result<(), ApiError>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Round up: a client that waits exactly Retry-After seconds must get through.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::TooManyRequests {
                retry_after_secs: secs.max(1),
            }
        })
    }

    /// Counts one post or rating write of `user`.
    pub fn check_write(&self, user: i64) -> Result<(), ApiError> {
        self.check(self.writes.as_ref(), &user)
    }

    /// Counts one register or token request from `client`.
    pub fn check_auth(&self, client: Client<'_>) -> Result<(), ApiError> {
        if self.auth.is_none() {
            return Ok(());
        }
        match self.client_addr(client)? {
            Some(addr) => self.check(self.auth.as_ref(), &client_key(addr)),
            // Only a Unix-socket or test request has no peer: nothing to key it by.
            None => Ok(()),
        }
    }

    /// The peer, or with `trust_forwarded_for` the hop the proxy appended (400 when it
    /// cannot be read).
    fn client_addr(&self, client: Client<'_>) -> Result<Option<IpAddr>, ApiError> {
        if !self.trust_forwarded_for {
            return Ok(client.peer);
        }
        // Header lines combine in order, so the last entry of the last line is the hop the
        // nearest proxy appended.
        let Some(line) = client.forwarded_for else {
            return Ok(client.peer);
        };
        std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.rsplit(',').next())
            .and_then(parse_hop)
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest("the last X-Forwarded-For entry is not an address".into())
            })
    }

    /// Drops the state of keys that are back to a full allowance (they would behave the
    /// same if seen fresh), so one-off clients do not accumulate.
    pub fn forget_idle(&self) {
        if let Some(writes) = &self.writes {
            writes.retain_recent();
            writes.shrink_to_fit();
        }
        if let Some(auth) = &self.auth {
            auth.retain_recent();
            auth.shrink_to_fit();
        }
    }

    /// Runs [`forget_idle`](Self::forget_idle) once a minute until `shutdown` or until
    /// the limits are dropped.
    pub async fn sweep(limits: Weak<RateLimits>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => match limits.upgrade() {
                    Some(limits) => limits.forget_idle(),
                    None => return,
                },
            }
        }
    }
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]:port`, `[v6]` or a bare IPv6
/// address (quotes, as RFC 7239 writes them, are allowed around it).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let hop = hop
        .strip_prefix('"')
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or(hop);
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// What the auth limit is keyed by: an IPv4 address (IPv4-mapped IPv6 included) as it is,
/// an IPv6 address by its /64.
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests;
