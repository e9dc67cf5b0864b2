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
//! The limits live in each instance's memory: nothing to call per request and they keep
//! working while Redis is down, which is when a login flood hurts most. Behind a load
//! balancer that spreads one client over `n` instances, that client gets up to `n` times
//! the limit; set the per-instance value accordingly, or route clients stickily.
//!
//! The client address is the TCP peer. Behind a proxy every request comes from the proxy,
//! so `RATE_LIMIT_TRUST_FORWARDED_FOR=true` takes the last address of `X-Forwarded-For`
//! instead: the one your own proxy appended, which a client cannot forge. Leave it off
//! when clients reach the service directly, or they could pick their own address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Weak;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::{ready, Ready};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::auth::{authenticate, AuthUser};
use crate::error::ApiError;
use crate::server::AppState;

/// The per-instance limiters; `None` where the limit is disabled.
pub struct RateLimits {
    writes: Option<DefaultKeyedRateLimiter<i64>>,
    auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
    clock: DefaultClock,
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
        }
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
        match self.client_addr(req) {
            Some(addr) => self.check(self.auth.as_ref(), &addr),
            // Only a Unix-socket or test request has no peer: nothing to key it by.
            None => Ok(()),
        }
    }

    fn client_addr(&self, req: &HttpRequest) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .last();
            if forwarded.is_some() {
                return forwarded;
            }
        }
        req.peer_addr().map(|a| a.ip())
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
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let user = authenticate(req)?;
            state(req)?.limits.check_write(user.id)?;
            Ok(Writer(user))
        })())
    }
}

/// A register or token attempt, counted against `RATE_LIMIT_AUTH_PER_MIN`; list it before
/// the body so a flood is refused without parsing or hashing anything.
#[derive(Debug, Clone, Copy)]
pub struct AuthAttempt;

impl FromRequest for AuthAttempt {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            state(req)
                .and_then(|s| s.limits.check_auth(req))
                .map(|()| AuthAttempt),
        )
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

    #[test]
    fn client_address_is_the_peer_unless_forwarded_for_is_trusted() {
        let req = || {
            TestRequest::default()
                .peer_addr("10.0.0.1:5000".parse().unwrap())
                .insert_header(("x-forwarded-for", "203.0.113.9, 198.51.100.7"))
                .to_http_request()
        };
        let direct = RateLimits::new(0, 1, false);
        assert_eq!(
            direct.client_addr(&req()),
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
            proxied.client_addr(&req()),
            Some("198.51.100.7".parse().unwrap())
        );
        proxied.check_auth(&req()).unwrap();
        let other_client = TestRequest::default()
            .peer_addr("10.0.0.1:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "198.51.100.8"))
            .to_http_request();
        proxied
            .check_auth(&other_client)
            .expect("a different client behind the same proxy");
        assert!(proxied.check_auth(&req()).is_err());
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
