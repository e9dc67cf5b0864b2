//! The traffic of a run: built-in scenarios and the custom pattern, expanded into calls.

use std::io;

use super::{invalid, Rng, Scenario, SimulateArgs};
use crate::stats::burst::{BurstConfig, Rater};

/// Patterns larger than this are refused rather than run for minutes.
const MAX_ARRIVALS: u64 = 20_000_000;
const MAX_BUCKETS: u64 = 10_000_000;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The user id of the one spammer (organic raters are one-off).
pub(super) const SPAMMER: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Arrivals {
    /// Poisson arrivals for `duration_ms`, stopping early after `max_count` if given.
    Poisson {
        per_min: f64,
        duration_ms: i64,
        max_count: Option<u64>,
    },
    /// `count` arrivals spaced evenly over `duration_ms`.
    Even { count: u64, duration_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scores {
    /// Random, mean 4.2.
    Organic,
    /// Every call the same score.
    Fixed(u8),
    /// Calls alternate between two scores, the first one first.
    Flip(u8, u8),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Segment {
    pub arrivals: Arrivals,
    pub scores: Scores,
    /// `Some(user)`: every call is this one user's; `None`: each call a new rater.
    pub rater: Option<i64>,
    /// Starts with the previous segment and runs alongside it, instead of after it.
    pub alongside: bool,
}

/// One call: a rater setting a score at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Event {
    pub at_ms: i64,
    pub score: u8,
    pub rater: Rater,
}

impl Segment {
    fn organic(arrivals: Arrivals) -> Self {
        Segment {
            arrivals,
            scores: Scores::Organic,
            rater: None,
            alongside: false,
        }
    }
}

fn poisson(per_min: f64, duration_ms: i64) -> Arrivals {
    Arrivals::Poisson {
        per_min,
        duration_ms,
        max_count: None,
    }
}

fn bomb() -> Vec<Segment> {
    vec![
        Segment::organic(Arrivals::Poisson {
            per_min: 5.0,
            duration_ms: i64::MAX,
            max_count: Some(10_000),
        }),
        Segment {
            scores: Scores::Fixed(0),
            ..Segment::organic(Arrivals::Even {
                count: 5_000,
                duration_ms: 120_000,
            })
        },
    ]
}

/// Organic ratings at 5 a minute for an hour, while one user sends 100 calls a minute (under
/// the default write limit of 120): the same zero for half an hour, then flipping 0 and 1.
fn spammer() -> Vec<Segment> {
    let half_hour = 30 * 60_000;
    let spam = |scores| Segment {
        arrivals: Arrivals::Even {
            count: 3_000,
            duration_ms: half_hour,
        },
        scores,
        rater: Some(SPAMMER),
        alongside: true,
    };
    let organic = Segment::organic(poisson(5.0, half_hour));
    vec![
        organic,
        spam(Scores::Fixed(0)),
        organic,
        spam(Scores::Flip(0, 1)),
    ]
}

/// Parses the custom pattern syntax described on [`SimulateArgs::pattern`].
pub(super) fn parse_pattern(pattern: &str, cfg: &BurstConfig) -> io::Result<Vec<Segment>> {
    let bucket_ms = i64::from(cfg.bucket_secs) * 1000;
    let (mut buckets_total, mut arrivals_total) = (0u64, 0u64);
    let mut segments = Vec::new();
    for part in pattern.split(',').map(str::trim) {
        let bad = || {
            invalid(format!(
                "pattern segment {part:?}: expected BUCKETSxARRIVALS[@SCORE], e.g. 2x2500@0"
            ))
        };
        let (counts, scores) = match part.split_once('@') {
            Some((counts, score)) => match score.trim().parse::<u8>() {
                Ok(s) if s <= 5 => (counts, Scores::Fixed(s)),
                _ => {
                    return Err(invalid(format!(
                        "pattern segment {part:?}: score must be 0..5"
                    )))
                }
            },
            None => (part, Scores::Organic),
        };
        let (buckets, per_bucket) = counts.split_once(['x', 'X']).ok_or_else(bad)?;
        let buckets: u64 = buckets.trim().parse().map_err(|_| bad())?;
        let per_bucket: u64 = per_bucket.trim().parse().map_err(|_| bad())?;
        buckets_total = buckets_total.saturating_add(buckets);
        arrivals_total = arrivals_total.saturating_add(buckets.saturating_mul(per_bucket));
        if buckets == 0 || buckets_total > MAX_BUCKETS || arrivals_total > MAX_ARRIVALS {
            return Err(invalid(format!(
                "pattern {pattern:?}: each segment needs >= 1 bucket; at most {MAX_BUCKETS} buckets and {MAX_ARRIVALS} ratings in all"
            )));
        }
        segments.push(Segment {
            scores,
            ..Segment::organic(Arrivals::Even {
                count: buckets * per_bucket,
                duration_ms: buckets as i64 * bucket_ms,
            })
        });
    }
    Ok(segments)
}

/// The segments of a run; each segment starts on the bucket boundary after the previous one
/// (or with it, if it runs alongside).
pub(super) fn segments(args: &SimulateArgs, cfg: &BurstConfig) -> io::Result<Vec<Segment>> {
    let rate_ok = args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0;
    match args.scenario {
        Scenario::Steady if rate_ok => Ok(vec![Segment::organic(poisson(args.rate, DAY_MS))]),
        Scenario::Steady => Err(invalid(format!(
            "--rate must be in (0, 10000] per minute, got {}",
            args.rate
        ))),
        Scenario::Spammer => Ok(spammer()),
        Scenario::Bomb => Ok(bomb()),
        Scenario::Shift => Ok([bomb(), vec![Segment::organic(poisson(50.0, DAY_MS))]].concat()),
        Scenario::Custom => match &args.pattern {
            Some(p) => parse_pattern(p, cfg),
            None => Err(invalid(
                "--scenario custom needs --pattern, e.g. 60x5,2x2500@0".into(),
            )),
        },
    }
}

/// Expands segments into time-ordered calls.
pub(super) fn events(segments: &[Segment], cfg: &BurstConfig, rng: &mut Rng) -> Vec<Event> {
    let bucket_ms = i64::from(cfg.bucket_secs) * 1000;
    let mut out = Vec::new();
    // Where the last segment started, and where the next one that is not alongside starts.
    let (mut last_start, mut next_start) = (0i64, 0i64);
    for seg in segments {
        let start = if seg.alongside {
            last_start
        } else {
            next_start
        };
        let rater = seg.rater.map_or(Rater::Once, Rater::User);
        let mut n = 0usize;
        let mut push = |at_ms: i64, rng: &mut Rng| {
            let score = match seg.scores {
                Scores::Organic => rng.organic_score(),
                Scores::Fixed(s) => s,
                Scores::Flip(a, b) => [a, b][n % 2],
            };
            n += 1;
            out.push(Event {
                at_ms,
                score,
                rater,
            });
        };
        let end = match seg.arrivals {
            Arrivals::Poisson {
                per_min,
                duration_ms,
                max_count,
            } => {
                let (mut t, mut count, mean_gap) = (start as f64, 0u64, 60_000.0 / per_min);
                let limit = start.saturating_add(duration_ms);
                loop {
                    t += rng.exp(mean_gap);
                    if t >= limit as f64 || max_count.is_some_and(|m| count >= m) {
                        break;
                    }
                    push(t as i64, rng);
                    count += 1;
                }
                if duration_ms == i64::MAX {
                    t as i64
                } else {
                    limit
                }
            }
            Arrivals::Even { count, duration_ms } => {
                for i in 0..count {
                    let at = start
                        + (i128::from(i) * i128::from(duration_ms) / i128::from(count)) as i64;
                    push(at, rng);
                }
                start + duration_ms
            }
        };
        last_start = start;
        next_start = next_start.max((end + bucket_ms - 1).div_euclid(bucket_ms) * bucket_ms);
    }
    // Segments running alongside interleave; a stable sort keeps each one's own order.
    out.sort_by_key(|e| e.at_ms);
    out
}
