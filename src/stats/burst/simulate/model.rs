//! One post as the service keeps it, on a virtual clock: the burst state, each rater's
//! current rating, and the plain and weighted sums of the stats store.

use std::collections::HashMap;

use crate::stats::burst::{BurstConfig, BurstState, Observation, Rater};

#[derive(Debug, Clone)]
pub(crate) struct PostModel {
    pub cfg: BurstConfig,
    pub state: BurstState,
    /// Current (score, weight) of each [`Rater::User`]; one-off raters are only summed.
    ratings: HashMap<i64, (u8, i32)>,
    n: u64,
    sum: u64,
    w_sum: i64,
    ws_sum: i64,
}

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Call {
    pub obs: Observation,
    /// False for an unchanged score: nothing stored, the arrival taken back.
    pub written: bool,
}

impl PostModel {
    pub(crate) fn new(cfg: BurstConfig) -> Self {
        Self {
            cfg,
            state: BurstState::default(),
            ratings: HashMap::new(),
            n: 0,
            sum: 0,
            w_sum: 0,
            ws_sum: 0,
        }
    }

    /// A call of `rater` at `at_ms` setting `score`, as `service::ratings::rate` does it:
    /// the weight first, then the upsert, then the undo of a no-op.
    pub(crate) fn rate(&mut self, at_ms: i64, rater: Rater, score: u8) -> Call {
        let obs = self.state.observe(at_ms, rater, &self.cfg);
        let written = self.store(rater, score, obs.weight_milli);
        if let (false, Rater::User(id)) = (written, rater) {
            self.state.undo(obs.bucket, id);
        }
        Call { obs, written }
    }

    /// A one-off rater's rating at `at_ms`; returns its weight.
    #[cfg(test)]
    pub(crate) fn rate_once(&mut self, at_ms: i64, score: u8) -> i32 {
        self.rate(at_ms, Rater::Once, score).obs.weight_milli
    }

    /// Stores a rating at a weight decided elsewhere (e.g. by the Lua script), as the upsert
    /// does: a re-rate replaces the old score at its old weight, an unchanged score writes
    /// nothing. Returns whether it wrote.
    pub(crate) fn store(&mut self, rater: Rater, score: u8, weight_milli: i32) -> bool {
        let previous = match rater {
            Rater::User(id) => self.ratings.get(&id).copied(),
            Rater::Once => None,
        };
        // The upsert's WHERE keeps an unchanged row (and its weight) as it was.
        if previous.is_some_and(|(old, _)| old == score) {
            return false;
        }
        if let Rater::User(id) = rater {
            self.ratings.insert(id, (score, weight_milli));
        }
        match previous {
            Some((old, old_weight)) => {
                self.sum -= u64::from(old);
                self.w_sum -= i64::from(old_weight);
                self.ws_sum -= i64::from(old_weight) * i64::from(old);
            }
            None => self.n += 1,
        }
        self.sum += u64::from(score);
        self.w_sum += i64::from(weight_milli);
        self.ws_sum += i64::from(weight_milli) * i64::from(score);
        true
    }

    /// The stored weight of a user's rating.
    #[cfg(test)]
    pub(crate) fn weight_of(&self, rater: i64) -> Option<i32> {
        self.ratings.get(&rater).map(|&(_, w)| w)
    }

    /// `raw_average_rating`: the plain mean.
    pub(crate) fn raw(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    /// `average_rating`: the weighted mean.
    pub(crate) fn damped(&self) -> Option<f64> {
        (self.w_sum > 0).then(|| self.ws_sum as f64 / self.w_sum as f64)
    }
}
