//! `post-rate simulate`: replays a rating scenario through the burst model on a virtual clock
//! and prints a per-bucket table, so an operator can tune the BURST_* parameters offline.

use std::io::{self, Write};

use crate::stats::burst::{BurstConfig, BurstState};

/// Built-in traffic shapes (DESIGN §5) plus a user-given pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Organic ratings (mean 4.2) at --rate per minute for 24 hours.
    Steady,
    /// 10,000 organic ratings at 5 a minute, then 5,000 zeros within 2 minutes.
    Bomb,
    /// The bomb, then 50 organic ratings a minute for 24 hours.
    Shift,
    /// The arrivals given by --pattern.
    Custom,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    #[arg(long, value_enum, default_value_t = Scenario::Bomb)]
    pub scenario: Scenario,
    /// For --scenario custom: comma-separated segments BUCKETSxARRIVALS[@SCORE], e.g.
    /// "60x5,2x2500@0": 60 buckets of 5 ratings each, then 2 buckets of 2,500 zeros.
    /// Ratings are spread evenly over each bucket; without @SCORE they are organic
    /// (random, mean 4.2); "30x0" is 30 idle buckets.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Ratings per minute for --scenario steady (Poisson arrivals).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Overrides BURST_BUCKET_SECS.
    #[arg(long)]
    pub bucket_secs: Option<u32>,
    /// Overrides BURST_HALF_LIFE_BUCKETS.
    #[arg(long)]
    pub half_life_buckets: Option<f64>,
    /// Overrides BURST_K.
    #[arg(long)]
    pub k: Option<f64>,
    /// Overrides BURST_FLOOR.
    #[arg(long)]
    pub floor: Option<f64>,
    /// Seed of the random arrivals and scores; the same seed prints the same table.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print every Nth bucket (0 = about 40 rows); buckets where damping happened, the
    /// first and the last are always printed.
    #[arg(long, default_value_t = 0)]
    pub every: u64,
}

/// Patterns larger than this are refused rather than run for minutes.
const MAX_ARRIVALS: u64 = 20_000_000;
const MAX_BUCKETS: u64 = 10_000_000;

/// A small deterministic generator (SplitMix64), so runs are reproducible without a crate.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean: gaps of a Poisson process.
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }

    /// An organic score: P(0..=5) = 3, 2, 4, 10, 25, 56 %, mean exactly 4.2.
    pub(crate) fn organic_score(&mut self) -> u8 {
        let mut u = self.next_u64() % 100;
        for (score, pct) in [3u64, 2, 4, 10, 25, 56].into_iter().enumerate() {
            if u < pct {
                return score as u8;
            }
            u -= pct;
        }
        5
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arrivals {
    /// Poisson arrivals for `duration_ms`, stopping early after `max_count` if given.
    Poisson {
        per_min: f64,
        duration_ms: i64,
        max_count: Option<u64>,
    },
    /// `count` arrivals spaced evenly over `duration_ms`.
    Even { count: u64, duration_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    arrivals: Arrivals,
    /// `None` = organic scores.
    score: Option<u8>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn bomb() -> Vec<Segment> {
    vec![
        Segment {
            arrivals: Arrivals::Poisson {
                per_min: 5.0,
                duration_ms: i64::MAX,
                max_count: Some(10_000),
            },
            score: None,
        },
        Segment {
            arrivals: Arrivals::Even {
                count: 5_000,
                duration_ms: 120_000,
            },
            score: Some(0),
        },
    ]
}

/// Parses the custom pattern syntax described on [`SimulateArgs::pattern`].
fn parse_pattern(pattern: &str, cfg: &BurstConfig) -> io::Result<Vec<Segment>> {
    let bucket_ms = i64::from(cfg.bucket_secs) * 1000;
    let (mut buckets_total, mut arrivals_total) = (0u64, 0u64);
    let mut segments = Vec::new();
    for part in pattern.split(',').map(str::trim) {
        let bad = || {
            invalid(format!(
                "pattern segment {part:?}: expected BUCKETSxARRIVALS[@SCORE], e.g. 2x2500@0"
            ))
        };
        let (counts, score) = match part.split_once('@') {
            Some((counts, score)) => match score.trim().parse::<u8>() {
                Ok(s) if s <= 5 => (counts, Some(s)),
                _ => {
                    return Err(invalid(format!(
                        "pattern segment {part:?}: score must be 0..5"
                    )))
                }
            },
            None => (part, None),
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
        let duration_ms = buckets as i64 * bucket_ms;
        segments.push(Segment {
            arrivals: Arrivals::Even {
                count: buckets * per_bucket,
                duration_ms,
            },
            score,
        });
    }
    Ok(segments)
}

/// The segments of a run; each segment starts on the bucket boundary after the previous one.
fn segments(args: &SimulateArgs, cfg: &BurstConfig) -> io::Result<Vec<Segment>> {
    let organic = |per_min: f64| Segment {
        arrivals: Arrivals::Poisson {
            per_min,
            duration_ms: DAY_MS,
            max_count: None,
        },
        score: None,
    };
    match args.scenario {
        Scenario::Steady if args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0 => {
            Ok(vec![organic(args.rate)])
        }
        Scenario::Steady => Err(invalid(format!(
            "--rate must be in (0, 10000] per minute, got {}",
            args.rate
        ))),
        Scenario::Bomb => Ok(bomb()),
        Scenario::Shift => Ok([bomb(), vec![organic(50.0)]].concat()),
        Scenario::Custom => match &args.pattern {
            Some(p) => parse_pattern(p, cfg),
            None => Err(invalid(
                "--scenario custom needs --pattern, e.g. 60x5,2x2500@0".into(),
            )),
        },
    }
}

/// Expands segments into time-ordered (ms, score) events.
fn events(segments: &[Segment], cfg: &BurstConfig, rng: &mut Rng) -> Vec<(i64, u8)> {
    let bucket_ms = i64::from(cfg.bucket_secs) * 1000;
    let mut out = Vec::new();
    let mut start = 0i64;
    for seg in segments {
        let score = |rng: &mut Rng| seg.score.unwrap_or_else(|| rng.organic_score());
        let end = match seg.arrivals {
            Arrivals::Poisson {
                per_min,
                duration_ms,
                max_count,
            } => {
                let (mut t, mut n, mean_gap) = (start as f64, 0u64, 60_000.0 / per_min);
                let limit = start.saturating_add(duration_ms);
                loop {
                    t += rng.exp(mean_gap);
                    if t >= limit as f64 || max_count.is_some_and(|m| n >= m) {
                        break;
                    }
                    out.push((t as i64, score(rng)));
                    n += 1;
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
                    out.push((at, score(rng)));
                }
                start + duration_ms
            }
        };
        start = (end + bucket_ms - 1).div_euclid(bucket_ms) * bucket_ms;
    }
    out
}

/// One bucket of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Row {
    pub bucket: i64,
    /// Arrivals counted in this bucket (`x` at its end).
    pub arrivals: u64,
    /// The largest sliding-window estimate `x_est` a rating in this bucket was judged by: its
    /// own arrivals so far plus the part of the previous bucket still in the window.
    pub max_estimate: f64,
    /// The limit ratings in this bucket were judged against.
    pub ucl: f64,
    pub weight_milli_sum: i64,
    /// Running averages over all ratings up to the end of this bucket.
    pub raw_avg: Option<f64>,
    pub damped_avg: Option<f64>,
}

impl Row {
    pub(crate) fn damped(&self) -> bool {
        self.weight_milli_sum < 1000 * self.arrivals as i64
    }

    pub(crate) fn mean_weight(&self) -> f64 {
        if self.arrivals == 0 {
            return 1.0;
        }
        self.weight_milli_sum as f64 / 1000.0 / self.arrivals as f64
    }
}

/// Running plain and weighted sums, as the stats store keeps them.
#[derive(Debug, Default)]
struct Totals {
    n: u64,
    sum: u64,
    w_sum: i64,
    ws_sum: i64,
}

impl Totals {
    fn raw(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    fn damped(&self) -> Option<f64> {
        (self.w_sum > 0).then(|| self.ws_sum as f64 / self.w_sum as f64)
    }
}

/// Runs with the default parameters, overridden by the flags in `args`.
pub fn run(args: &SimulateArgs, out: &mut impl Write) -> io::Result<()> {
    run_with_base(args, BurstConfig::default(), out)
}

/// Runs with `base` (e.g. the service's env configuration), overridden by the flags in `args`.
pub fn run_with_base(
    args: &SimulateArgs,
    base: BurstConfig,
    out: &mut impl Write,
) -> io::Result<()> {
    let cfg = BurstConfig {
        bucket_secs: args.bucket_secs.unwrap_or(base.bucket_secs),
        half_life_buckets: args.half_life_buckets.unwrap_or(base.half_life_buckets),
        k: args.k.unwrap_or(base.k),
        floor: args.floor.unwrap_or(base.floor),
    };
    cfg.validate().map_err(|e| invalid(e.to_string()))?;
    let events = events(&segments(args, &cfg)?, &cfg, &mut Rng::new(args.seed));
    let rows = table(&events, &cfg);
    let every = if args.every > 0 {
        args.every
    } else {
        (rows.len() as u64 / 40).max(1)
    };
    writeln!(
        out,
        "burst simulation: B={}s H={} buckets k={} floor={}, {} ratings in {} buckets (every {every}th bucket and every damped one shown)",
        cfg.bucket_secs, cfg.half_life_buckets, cfg.k, cfg.floor, events.len(), rows.len()
    )?;
    writeln!(
        out,
        "{:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
        "bucket", "time", "arrivals", "max_x_est", "UCL", "mean_w", "raw_avg", "damped_avg"
    )?;
    let avg = |a: Option<f64>| a.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    for (i, r) in rows.iter().enumerate() {
        let last = i + 1 == rows.len();
        if (i as u64).is_multiple_of(every) || r.damped() || last {
            let secs = r.bucket * i64::from(cfg.bucket_secs);
            let time = format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            let max_estimate = if r.arrivals == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", r.max_estimate)
            };
            writeln!(
                out,
                "{:>8} {:>9} {:>9} {:>9} {:>9.1} {:>7.3} {:>9} {:>10}",
                r.bucket,
                time,
                r.arrivals,
                max_estimate,
                r.ucl,
                r.mean_weight(),
                avg(r.raw_avg),
                avg(r.damped_avg)
            )?;
        }
    }
    let damped: u64 = rows.iter().filter(|r| r.damped()).map(|r| r.arrivals).sum();
    let weight: i64 = rows.iter().map(|r| r.weight_milli_sum).sum();
    let n = events.len().max(1) as f64;
    writeln!(
        out,
        "{:.2}% of ratings fell in damped buckets; mean weight {:.4}",
        100.0 * damped as f64 / n,
        weight as f64 / 1000.0 / n
    )
}

/// Runs the model over time-ordered `events` and returns one row per bucket, first to last.
pub(crate) fn table(events: &[(i64, u8)], cfg: &BurstConfig) -> Vec<Row> {
    let bucket_ms = i64::from(cfg.bucket_secs) * 1000;
    let mut state = BurstState::default();
    let mut totals = Totals::default();
    let mut rows: Vec<Row> = Vec::new();
    for &(at, score) in events {
        let bucket = at.div_euclid(bucket_ms);
        // Idle buckets get rows too, with the limit that held there.
        let next = rows.last().map_or(bucket, |r| r.bucket + 1);
        for idle in next..bucket {
            rows.push(Row {
                bucket: idle,
                arrivals: 0,
                max_estimate: 0.0,
                ucl: state.ucl_at(idle * bucket_ms, cfg),
                weight_milli_sum: 0,
                raw_avg: totals.raw(),
                damped_avg: totals.damped(),
            });
        }
        if rows.last().is_none_or(|r| r.bucket != bucket) {
            rows.push(Row {
                bucket,
                arrivals: 0,
                max_estimate: 0.0,
                ucl: 0.0,
                weight_milli_sum: 0,
                raw_avg: None,
                damped_avg: None,
            });
        }
        let obs = state.observe(at, cfg);
        totals.n += 1;
        totals.sum += u64::from(score);
        totals.w_sum += i64::from(obs.weight_milli);
        totals.ws_sum += i64::from(obs.weight_milli) * i64::from(score);
        if let Some(row) = rows.last_mut() {
            row.arrivals += 1;
            row.max_estimate = row.max_estimate.max(obs.estimate);
            row.ucl = obs.ucl;
            row.weight_milli_sum += i64::from(obs.weight_milli);
            row.raw_avg = totals.raw();
            row.damped_avg = totals.damped();
        }
    }
    rows
}

#[cfg(test)]
mod tests;
