//! `post-rate simulate`: replays a rating scenario through the burst model on a virtual clock
//! and prints a per-bucket table, so an operator can tune the BURST_* parameters offline.

use std::io::{self, Write};

use crate::stats::burst::BurstConfig;

mod model;
mod rng;
mod scenario;
mod table;

#[cfg(test)]
pub(crate) use model::PostModel;
pub(crate) use rng::Rng;
use scenario::{events, segments};
use table::table;

/// Built-in traffic shapes (DESIGN §5) plus a user-given pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Organic ratings (mean 4.2) at --rate per minute for 24 hours.
    Steady,
    /// 10,000 organic ratings at 5 a minute, then 5,000 zeros within 2 minutes.
    Bomb,
    /// The bomb, then 50 organic ratings a minute for 24 hours.
    Shift,
    /// Organic ratings at 5 a minute for an hour while one user sends 100 calls a minute:
    /// a zero again and again for half an hour, then flipping between 0 and 1.
    Spammer,
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

/// The table's columns and their widths (the rows below use the same widths).
const COLUMNS: [(&str, usize); 9] = [
    ("bucket", 8),
    ("time", 9),
    ("requests", 8),
    ("arrivals", 8),
    ("max_x_est", 9),
    ("UCL", 9),
    ("mean_w", 7),
    ("raw_avg", 9),
    ("damped_avg", 10),
];

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
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
    let written: u64 = rows.iter().map(|r| r.written).sum();
    writeln!(
        out,
        "burst simulation: B={}s H={} buckets k={} floor={}, {} calls ({written} ratings written) in {} buckets (every {every}th bucket and every damped one shown)",
        cfg.bucket_secs, cfg.half_life_buckets, cfg.k, cfg.floor, events.len(), rows.len()
    )?;
    let header: Vec<String> = COLUMNS.iter().map(|(c, w)| format!("{c:>w$}")).collect();
    writeln!(out, "{}", header.join(" "))?;
    let avg = |a: Option<f64>| a.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    for (i, r) in rows.iter().enumerate() {
        let last = i + 1 == rows.len();
        if (i as u64).is_multiple_of(every) || r.damped() || last {
            let secs = r.bucket * i64::from(cfg.bucket_secs);
            let time = format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            let max_estimate = if r.requests == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", r.max_estimate)
            };
            writeln!(
                out,
                "{:>8} {:>9} {:>8} {:>8} {:>9} {:>9.1} {:>7.3} {:>9} {:>10}",
                r.bucket,
                time,
                r.requests,
                r.arrivals,
                max_estimate,
                r.ucl,
                r.mean_weight(),
                avg(r.raw_avg),
                avg(r.damped_avg)
            )?;
        }
    }
    let damped: u64 = rows.iter().filter(|r| r.damped()).map(|r| r.written).sum();
    let weight: i64 = rows.iter().map(|r| r.weight_milli_sum).sum();
    let n = written.max(1) as f64;
    writeln!(
        out,
        "{:.2}% of written ratings fell in damped buckets; mean weight {:.4}",
        100.0 * damped as f64 / n,
        weight as f64 / 1000.0 / n
    )
}

#[cfg(test)]
mod tests;
