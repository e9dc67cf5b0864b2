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

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::auth::{authenticate, AuthUser};
use crate::config::RateLimitStore;
use crate::error::ApiError;
use crate::server::AppState;

mod shared;

use shared::{Limit, SharedLimits};

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

    /// Limits kept where `store` says: in this instance's memory, or in Redis.
    pub fn kept_in(self, store: RateLimitStore) -> Self {
        match store {
            RateLimitStore::Memory => self,
            RateLimitStore::Redis => Self {
                writes: None,
                auth: None,
                shared: Some(SharedLimits::default()),
                ..self
            },
        }
    }

    /// Counts one post or rating write of `user`, wherever the limits are kept.
    pub async fn admit_write(&self, state: &AppState, user: i64) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return self.check_write(user);
        };
        let limit = Limit {
            kind: "writes",
            per_min: self.writes_per_min,
        };
        shared.check(state, limit, &user.to_string()).await
    }

    /// Counts one register or token request from the client of `req`, wherever the limits
    /// are kept.
    pub async fn admit_auth(&self, state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return self.check_auth(req);
        };
        if self.auth_per_min == 0 {
            return Ok(());
        }
        let Some(addr) = self.client_addr(req)? else {
            return Ok(());
        };
        let limit = Limit {
            kind: "auth",
            per_min: self.auth_per_min,
        };
        shared
            .check(state, limit, &client_key(addr).to_string())
            .await
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

    /// Counts one register or token request from the client of `req`.
    pub fn check_auth(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.auth.is_none() {
            return Ok(());
        }
        match self.client_addr(req)? {
            Some(addr) => self.check(self.auth.as_ref(), &client_key(addr)),
            // Only a Unix-socket or test request has no peer: nothing to key it by.
            None => Ok(()),
        }
    }

    /// The peer, or with `trust_forwarded_for` the hop the proxy appended (400 when it
    /// cannot be read).
    fn client_addr(&self, req: &HttpRequest) -> Result<Option<IpAddr>, ApiError> {
        let peer = req.peer_addr().map(|a| a.ip());
        if !self.trust_forwarded_for {
            return Ok(peer);
        }
        // Header lines combine in order, so the last entry of the last line is the hop the
        // nearest proxy appended.
        let Some(line) = req.headers().get_all("x-forwarded-for").last() else {
            return Ok(peer);
        };
        line.to_str()
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

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// The signed-in caller of a write, counted against `RATE_LIMIT_WRITES_PER_MIN`: 401 first
/// for a bad token, then 429 over the limit, before the body is even read.
#[derive(Debug, Clone)]
pub struct Writer(pub AuthUser);

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = authenticate(req).and_then(|user| Ok((user, state(req)?.clone())));
        Box::pin(async move {
            let (user, state) = checked?;
            state.limits.admit_write(&state, user.id).await?;
            Ok(Writer(user))
        })
    }
}

/// A register or token attempt, counted against `RATE_LIMIT_AUTH_PER_MIN`; list it before
/// the body so a flood is refused without parsing or hashing anything.
#[derive(Debug, Clone, Copy)]
pub struct AuthAttempt;

impl FromRequest for AuthAttempt {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?.clone();
            state.limits.admit_auth(&state, &req).await?;
            Ok(AuthAttempt)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_user_gets_the_minute_at_once_then_429_with_retry_after() {
        let limits = RateLimits::new(3, 0, false);
        for _ in 0..3 {
            limits.check_write(7).expect("within the limit");
        }
        match limits.check_write(7) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => {
                // One request per 20 s comes back.
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        limits
            .check_write(8)
            .expect("another user has its own allowance");
    }

    #[test]
    fn zero_disables_a_limit() {
        let limits = RateLimits::new(0, 0, false);
        let req = TestRequest::default()
            .peer_addr("10.0.0.1:5000".parse().unwrap())
            .to_http_request();
        for _ in 0..1000 {
            limits.check_write(1).unwrap();
            limits.check_auth(&req).unwrap();
        }
    }

    fn forwarded(peer: &str, lines: &[&str]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for line in lines {
            req = req.append_header(("x-forwarded-for", *line));
        }
        req.to_http_request()
    }

    #[test]
    fn client_address_is_the_peer_unless_forwarded_for_is_trusted() {
        let req = || forwarded("10.0.0.1:5000", &["203.0.113.9, 198.51.100.7"]);
        let direct = RateLimits::new(0, 1, false);
        assert_eq!(
            direct.client_addr(&req()).unwrap(),
            Some("10.0.0.1".parse().unwrap())
        );
        direct.check_auth(&req()).unwrap();
        assert!(
            direct.check_auth(&req()).is_err(),
            "same peer, second attempt"
        );

        let proxied = RateLimits::new(0, 1, true);
        // The last hop is the one the trusted proxy appended.
        assert_eq!(
            proxied.client_addr(&req()).unwrap(),
            Some("198.51.100.7".parse().unwrap())
        );
        proxied.check_auth(&req()).unwrap();
        proxied
            .check_auth(&forwarded("10.0.0.1:5000", &["198.51.100.8"]))
            .expect("a different client behind the same proxy");
        assert!(proxied.check_auth(&req()).is_err());
        // No header at all (a caller that bypasses the proxy): the peer.
        assert_eq!(
            proxied
                .client_addr(&forwarded("10.0.0.2:5000", &[]))
                .unwrap(),
            Some("10.0.0.2".parse().unwrap())
        );
    }

    #[test]
    fn the_appended_hop_is_read_in_every_form() {
        let proxied = RateLimits::new(0, 1, true);
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        for (lines, want) in [
            (
                vec!["1.2.3.4, 198.51.100.7:41234"],
                "198.51.100.7".parse().unwrap(),
            ),
            (
                vec!["1.2.3.4,198.51.100.7"],
                "198.51.100.7".parse().unwrap(),
            ),
            (vec!["1.2.3.4, [2001:db8::7]:443"], v6),
            (vec!["1.2.3.4, [2001:db8::7]"], v6),
            (vec!["1.2.3.4, 2001:db8::7"], v6),
            (vec!["1.2.3.4, \"[2001:db8::7]:443\""], v6),
            // A second line is appended after the first: its last entry wins.
            (
                vec!["9.9.9.9, 8.8.8.8", "198.51.100.7"],
                "198.51.100.7".parse().unwrap(),
            ),
        ] {
            let req = forwarded("10.0.0.1:5000", &lines);
            assert_eq!(proxied.client_addr(&req).unwrap(), Some(want), "{lines:?}");
        }
    }

    #[test]
    fn an_unreadable_appended_hop_is_refused_never_replaced_by_an_earlier_one() {
        let proxied = RateLimits::new(0, 1, true);
        for line in [
            "203.0.113.9, unknown",
            "203.0.113.9, ",
            "203.0.113.9, _hidden",
            "203.0.113.9, 198.51.100.7:notaport",
            "203.0.113.9, [2001:db8::7",
        ] {
            let req = forwarded("10.0.0.1:5000", &[line]);
            assert!(
                matches!(proxied.client_addr(&req), Err(ApiError::BadRequest(_))),
                "{line}"
            );
            assert!(proxied.check_auth(&req).is_err(), "{line}");
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let proxied = RateLimits::new(0, 1, true);
        proxied
            .check_auth(&forwarded("10.0.0.1:5000", &["[2001:db8:1:2::1]:5000"]))
            .unwrap();
        assert!(
            proxied
                .check_auth(&forwarded("10.0.0.1:5000", &["2001:db8:1:2:ffff::9"]))
                .is_err(),
            "another address of the same /64"
        );
        proxied
            .check_auth(&forwarded("10.0.0.1:5000", &["2001:db8:1:3::1"]))
            .expect("the next /64 is another client");
        // An IPv4-mapped peer is the IPv4 client it stands for.
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forgetting_idle_keys_keeps_busy_ones() {
        let limits = RateLimits::new(2, 0, false);
        limits.check_write(1).unwrap();
        limits.check_write(1).unwrap();
        limits.forget_idle();
        assert!(
            limits.check_write(1).is_err(),
            "a limited user is not forgotten"
        );
    }
}
