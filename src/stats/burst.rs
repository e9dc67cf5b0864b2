//! Burst damping (DESIGN §5): the per-rating weight from a post's own arrival baseline.
//!
//! The service calls [`BurstDetector::weight`] (one Redis round trip running `burst.lua`)
//! and, when its write was a no-op, [`BurstDetector::undo`] (`burst_undo.lua`).
//! [`BurstState`] is the same algorithm in plain Rust, used by `post-rate simulate` and by
//! the property tests; a test keeps the two arithmetically identical.
//!
//! # Sliding-window arrivals instead of DESIGN §5's "arrival count in the bucket"
//!
//! DESIGN §5 judges a rating by `x`, the arrivals since its bucket started. That count
//! restarts at 0 on every boundary, so a bomb gets a fresh `UCL` of full-weight ratings (and a
//! harmonic tail of about `UCL × ln(x / UCL)` more) in every bucket it touches: a bomb timed to
//! straddle a boundary gets through two or three times instead of once. The weight here uses
//! instead an estimate of the arrivals in the last `B` seconds,
//!
//! `x_est = x + p × (1 − f)`,
//!
//! where `p` is the previous bucket's own count (0 if that bucket was idle, or for a new post)
//! and `f` the elapsed fraction of the current bucket: the previous bucket's arrivals, assumed
//! spread evenly, that still lie within one bucket length of now. Since `x_est >= x`, a rating
//! is never damped less than under the literal rule; it is damped more only when the last `B`
//! seconds, not the bucket so far, held more than `UCL` arrivals, e.g. organic ratings in the
//! bucket right after a bomb. The baseline is unchanged: finished buckets are still folded into
//! `mu` / `var` as `min(x, UCL)` of their own count, so the bucketed statistics and the cap on
//! training the baseline stay as designed. A lagging clock (a time before the current bucket)
//! counts into the current bucket with `f = 0`, the strictest reading of the window.
//!
//! # Arrivals count raters, not requests
//!
//! `x` counts the distinct raters of the bucket, so one user repeating or flipping a rating
//! cannot inflate it and damp everyone else (DESIGN §8, guarantee 7). The script keeps, next to
//! the state hash, a hash of the bucket's raters (cleared when the bucket changes, expiring
//! with the state), and each rater's entry counts their calls in the bucket. A rater's first
//! call raises `x`; later ones do not, but are judged like any other rating of the bucket.
//!
//! An unchanged score counts nothing, yet the weight must be known before the upsert (it is
//! stored on the row) and only the upsert knows whether the score changed. So the call is
//! recorded optimistically, and when the upsert turns out to be a no-op the service takes it
//! back with `burst_undo.lua`: the rater's call count falls by one, and at zero the rater
//! leaves the hash and `x` falls by one. A count, not a set, keeps this exact when one user's
//! calls overlap: a no-op undone while another call of the same rater (which did write)
//! counted on the same entry leaves the rater counted. The undo does nothing once the state
//! has moved to a later bucket: the arrival was then already folded into the baseline (a
//! no-op straddling a boundary counts once, bounded by one per rater and bucket). The common
//! case, a changed score, costs no extra round trip; only a no-op pays a second one, and a
//! failed Redis call (weight 1000) records nothing to undo.

use std::collections::HashMap;

mod detector;

pub use detector::{Arrival, BurstDetector, BurstKeys};

pub use crate::config::{BurstConfig, BurstConfigError};

impl BurstConfig {
    /// EWMA smoothing factor per bucket.
    pub fn alpha(&self) -> f64 {
        1.0 - 2f64.powf(-1.0 / self.half_life_buckets)
    }

    /// Seconds an idle post's state lives in Redis (the script sets the same value): 32
    /// half-lives, after which mu has decayed by 2^-32, so dropping it changes nothing
    /// that matters.
    pub fn state_ttl_secs(&self) -> u64 {
        (f64::from(self.bucket_secs) * self.half_life_buckets * 32.0).ceil() as u64
    }

    fn bucket_ms(&self) -> i64 {
        i64::from(self.bucket_secs) * 1000
    }
}

/// Who makes a call, for the model: the service always knows the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rater {
    /// A user who may call again (repeat, flip, or have a call undone).
    User(i64),
    /// A rater seen only this once: counted, not remembered. Equivalent to a fresh user id,
    /// and keeps long simulations of distinct raters from holding every one of them.
    Once,
}

/// One post's detector state: the Rust twin of the `burst.lua` hashes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BurstState {
    /// Current bucket index; `None` for a post never seen (or whose state expired).
    pub bucket: Option<i64>,
    /// Arrivals (distinct raters) in the current bucket so far.
    pub arrivals: u64,
    /// Arrivals in the bucket just before the current one; 0 if that bucket was idle (or the
    /// post was new). Weighted by the part of it still inside the sliding window.
    pub previous: u64,
    /// EWMA of arrivals per finished bucket.
    pub mu: f64,
    /// EWMA variance of arrivals per finished bucket.
    pub var: f64,
    /// The raters of the current bucket and their calls that count (the raters hash).
    pub raters: HashMap<i64, u64>,
}

/// What [`BurstState::observe`] saw for one rating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The rating's weight in thousandths, as the Lua script returns it.
    pub weight_milli: i32,
    /// The upper control limit the rating was judged against.
    pub ucl: f64,
    /// The bucket's arrival count after this call (1 = the first rater).
    pub arrivals: u64,
    /// Whether this call raised the arrival count.
    pub counted: bool,
    /// The sliding-window estimate it was judged by: `arrivals + previous × (1 − f)`.
    pub estimate: f64,
    pub bucket: i64,
}

impl BurstState {
    /// Upper control limit of the current state: `mu + k*sqrt(var) + c`.
    pub fn ucl(&self, cfg: &BurstConfig) -> f64 {
        self.mu + cfg.k * self.var.sqrt() + cfg.floor
    }

    /// The limit a rating arriving at `now_ms` would be judged against (records nothing).
    pub fn ucl_at(&self, now_ms: i64, cfg: &BurstConfig) -> f64 {
        let mut probe = BurstState {
            raters: HashMap::new(),
            ..*self
        };
        probe.observe(now_ms, Rater::Once, cfg).ucl
    }

    /// Records one call of `rater` at `now_ms` and returns its weight; mirrors `burst.lua`
    /// line by line.
    pub fn observe(&mut self, now_ms: i64, rater: Rater, cfg: &BurstConfig) -> Observation {
        let bucket_ms = cfg.bucket_ms();
        let now = now_ms.div_euclid(bucket_ms);
        let bucket = match self.bucket {
            None => {
                self.arrivals = 0;
                self.previous = 0;
                self.raters.clear();
                now
            }
            Some(b) if now > b => {
                self.roll_over(now - b - 1, cfg);
                now
            }
            // A lagging clock counts into the current bucket, as in the script.
            Some(b) => b,
        };
        self.bucket = Some(bucket);
        let counted = match rater {
            Rater::User(id) => {
                let calls = self.raters.entry(id).or_insert(0);
                *calls += 1;
                *calls == 1
            }
            Rater::Once => true,
        };
        if counted {
            self.arrivals += 1;
        }
        // Elapsed fraction of the current bucket; a lagging clock (f < 0) is judged as if at
        // the bucket's start, where the previous bucket counts in full.
        let mut f = (now_ms - bucket * bucket_ms) as f64 / bucket_ms as f64;
        if f < 0.0 {
            f = 0.0;
        }
        let x_est = self.arrivals as f64 + self.previous as f64 * (1.0 - f);
        let ucl = self.ucl(cfg);
        let weight_milli = if x_est > ucl {
            (1000.0 * ucl / x_est + 0.5).floor() as i32
        } else {
            1000
        };
        Observation {
            weight_milli,
            ucl,
            arrivals: self.arrivals,
            counted,
            estimate: x_est,
            bucket,
        }
    }

    /// Takes back a call of `rater` recorded in `bucket` whose write was a no-op; mirrors
    /// `burst_undo.lua`. Returns whether the arrival count fell.
    pub fn undo(&mut self, bucket: i64, rater: i64) -> bool {
        if self.bucket != Some(bucket) {
            return false;
        }
        match self.raters.get_mut(&rater) {
            Some(calls) if *calls > 1 => {
                *calls -= 1;
                false
            }
            Some(_) => {
                self.raters.remove(&rater);
                self.arrivals = self.arrivals.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    /// Folds the finished bucket (capped at its UCL) and then `idle` empty buckets, and starts
    /// the next one: `previous` keeps the finished count only if no idle bucket followed it.
    fn roll_over(&mut self, idle: i64, cfg: &BurstConfig) {
        let alpha = cfg.alpha();
        let keep = 1.0 - alpha;
        let d = (self.arrivals as f64).min(self.ucl(cfg)) - self.mu;
        self.mu += alpha * d;
        self.var = keep * (self.var + alpha * d * d);
        if idle > 0 {
            // n folds of 0 in closed form: mu_n = r*mu, var_n = r*var + mu^2*r*(1-r), r = keep^n.
            let r = keep.powf(idle as f64);
            self.var = r * self.var + self.mu * self.mu * r * (1.0 - r);
            self.mu *= r;
        }
        self.previous = if idle > 0 { 0 } else { self.arrivals };
        self.arrivals = 0;
        self.raters.clear();
    }
}

pub mod simulate;

#[cfg(test)]
mod lua;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod raters;
#[cfg(test)]
mod tests;
