//! The per-bucket table of a run: what the detector saw and did in each bucket.

use super::model::PostModel;
use super::scenario::Event;
use crate::stats::burst::BurstConfig;

/// One bucket of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Row {
    pub bucket: i64,
    /// Calls in this bucket, repeats included.
    pub requests: u64,
    /// Arrivals counted in this bucket (`x` at its end): distinct raters whose calls wrote.
    pub arrivals: u64,
    /// Ratings written in this bucket (a call with an unchanged score writes none).
    pub written: u64,
    /// The largest sliding-window estimate `x_est` a rating in this bucket was judged by: its
    /// own arrivals so far plus the part of the previous bucket still in the window.
    pub max_estimate: f64,
    /// The limit ratings in this bucket were judged against.
    pub ucl: f64,
    /// Weights of the ratings written in this bucket.
    pub weight_milli_sum: i64,
    /// Running averages over all ratings up to the end of this bucket.
    pub raw_avg: Option<f64>,
    pub damped_avg: Option<f64>,
}

impl Row {
    fn idle(bucket: i64, ucl: f64, post: &PostModel) -> Self {
        Row {
            bucket,
            requests: 0,
            arrivals: 0,
            written: 0,
            max_estimate: 0.0,
            ucl,
            weight_milli_sum: 0,
            raw_avg: post.raw(),
            damped_avg: post.damped(),
        }
    }

    pub(crate) fn damped(&self) -> bool {
        self.weight_milli_sum < 1000 * self.written as i64
    }

    /// Mean weight of the ratings written in this bucket.
    pub(crate) fn mean_weight(&self) -> f64 {
        if self.written == 0 {
            return 1.0;
        }
        self.weight_milli_sum as f64 / 1000.0 / self.written as f64
    }
}

/// Runs the model over time-ordered `events` and returns one row per bucket, first to last.
pub(crate) fn table(events: &[Event], cfg: &BurstConfig) -> Vec<Row> {
    let bucket_ms = i64::from(cfg.bucket_secs) * 1000;
    let mut post = PostModel::new(*cfg);
    let mut rows: Vec<Row> = Vec::new();
    for e in events {
        let bucket = e.at_ms.div_euclid(bucket_ms);
        // Idle buckets get rows too, with the limit that held there.
        let next = rows.last().map_or(bucket, |r| r.bucket + 1);
        for idle in next..bucket {
            let ucl = post.state.ucl_at(idle * bucket_ms, cfg);
            rows.push(Row::idle(idle, ucl, &post));
        }
        if rows.last().is_none_or(|r| r.bucket != bucket) {
            rows.push(Row::idle(bucket, 0.0, &post));
        }
        let call = post.rate(e.at_ms, e.rater, e.score);
        if let Some(row) = rows.last_mut() {
            row.requests += 1;
            row.arrivals = post.state.arrivals;
            row.max_estimate = row.max_estimate.max(call.obs.estimate);
            row.ucl = call.obs.ucl;
            if call.written {
                row.written += 1;
                row.weight_milli_sum += i64::from(call.obs.weight_milli);
            }
            row.raw_avg = post.raw();
            row.damped_avg = post.damped();
        }
    }
    rows
}
