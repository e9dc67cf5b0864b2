//! Command line of `loadgen`: the target, the data set, the traffic mix and the outputs; or
//! one of the Kafka subcommands the benchmark uses.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "Drive a running post-rate with realistic traffic, then check its stats exactly",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Without a subcommand loadgen drives the service (the options below).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Base URL of the running service (load only what you own: 127.0.0.1).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Users who rate and read (created through the API, signed in through /auth/token).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Users who write the posts; they never rate, so no request is a 403 "own post".
    #[arg(long, default_value_t = 5)]
    pub authors: usize,
    /// Posts to create.
    #[arg(long, default_value_t = 1000)]
    pub posts: usize,
    /// Insert the posts directly into this database instead of through the API (big sets).
    #[arg(long, value_name = "DATABASE_URL")]
    pub direct_db: Option<String>,
    /// Seconds of traffic after the set-up (0: set up only).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,
    /// Weights of the operations, `op=weight,...`; ops: list (signed-in first page), anon
    /// (anonymous first page), rate, rerate, withdraw, burst.
    #[arg(
        long,
        default_value = "list=40,anon=20,rate=25,rerate=8,withdraw=2,burst=5"
    )]
    pub mix: String,
    /// Write operations (rate, rerate, withdraw, burst) per second, open loop; reads keep
    /// their share of the mix. Latencies then count from when a request was due, so a slow
    /// server cannot hide its queueing. Without it every connection goes as fast as it can.
    #[arg(long, value_name = "RATINGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Zipf exponent of post popularity (1.0: the 2nd post is rated half as often as the 1st).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Seconds a burst keeps hitting one post before it moves on to another.
    #[arg(long, default_value_t = 5)]
    pub burst_secs: u64,
    /// Score of burst ratings (a review bomb); `-1` draws them like organic ones.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub burst_score: i16,
    /// Page size of the list requests.
    #[arg(long, default_value_t = 20)]
    pub page_limit: u32,
    /// The service's database: samples the outbox during the run and enables the exactness
    /// check after it (run the service with STATS_CACHE_TTL_SECS=0 for that).
    #[arg(long, value_name = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Skip the exactness check even when --database-url is given.
    #[arg(long)]
    pub no_check: bool,
    /// How long the check waits for the outbox to drain.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the raters' bearer tokens to this file, one a line (for wrk scripts).
    #[arg(long)]
    pub tokens_out: Option<PathBuf>,
    /// Write the post ids to this file, one a line (for wrk scripts).
    #[arg(long)]
    pub posts_out: Option<PathBuf>,
    /// Random seed (the same seed gives the same choices, not the same timings).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Password of every user loadgen registers.
    #[arg(long, default_value = "loadgen-password")]
    pub password: String,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Consume a topic from the beginning with a fresh group, counting messages and bytes
    /// without decoding or applying them: the baseline for the stats consumer's events/s.
    ConsumeRaw(RawArgs),
    /// Delete Kafka topics and consumer groups (missing ones are not an error).
    KafkaDelete(KafkaDeleteArgs),
    /// Poll a counter on the service's /metrics until it reaches a target; report the rate
    /// from its first nonzero value to the target.
    WatchMetric(WatchArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Base URL of the running service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The counter, e.g. post_rate_events_applied_total.
    #[arg(long)]
    pub metric: String,
    #[arg(long)]
    pub target: u64,
    /// Milliseconds between two reads of /metrics.
    #[arg(long, default_value_t = 5)]
    pub interval_ms: u64,
    /// Give up after this many seconds, or when /metrics has not answered for 3 s.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RawArgs {
    /// Bootstrap brokers, `host:port,...`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The topic to read.
    #[arg(long)]
    pub topic: String,
    /// Consumer group; a new one starts at the beginning of the topic.
    #[arg(long, default_value_t = format!("loadgen-raw-{}", std::process::id()))]
    pub group: String,
    /// Stop after this many messages; without it, at the high watermarks read at the start.
    #[arg(long)]
    pub events: Option<u64>,
    /// Give up after this many seconds (the result then says so, and the exit code is 1).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct KafkaDeleteArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// A topic to delete (repeatable).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// A consumer group to delete (repeatable); it must have no members left.
    #[arg(long = "group")]
    pub groups: Vec<String>,
}

/// The operations loadgen sends; each has its own row in the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    List,
    Anon,
    Rate,
    Rerate,
    Withdraw,
    Burst,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::List,
        Op::Anon,
        Op::Rate,
        Op::Rerate,
        Op::Withdraw,
        Op::Burst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Anon => "anon",
            Op::Rate => "rate",
            Op::Rerate => "rerate",
            Op::Withdraw => "withdraw",
            Op::Burst => "burst",
        }
    }

    /// What the operation sends, for the results table.
    pub fn request(self) -> &'static str {
        match self {
            Op::List => "GET /posts (bearer)",
            Op::Anon => "GET /posts",
            Op::Rate | Op::Rerate | Op::Burst => "PUT /posts/{id}/rating",
            Op::Withdraw => "DELETE /posts/{id}/rating",
        }
    }

    pub fn is_write(self) -> bool {
        !matches!(self, Op::List | Op::Anon)
    }

    pub fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// `list=40,rate=60` → weights indexed like [`Op::ALL`].
pub fn parse_mix(text: &str) -> Result<[u32; 6], String> {
    let mut weights = [0u32; 6];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("--mix: `{part}` is not op=weight"))?;
        let op = Op::ALL
            .iter()
            .find(|o| o.name() == name.trim())
            .ok_or_else(|| format!("--mix: unknown op `{name}`"))?;
        weights[op.index()] = weight
            .trim()
            .parse()
            .map_err(|_| format!("--mix: weight of `{name}` is not a whole number"))?;
    }
    if weights.iter().all(|w| *w == 0) {
        return Err("--mix: every weight is 0".into());
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_rejects() {
        assert_eq!(parse_mix("list=3, rate=1").unwrap(), [3, 0, 1, 0, 0, 0]);
        assert!(parse_mix("list").is_err());
        assert!(parse_mix("lists=1").is_err());
        assert!(parse_mix("list=0").is_err());
    }
}
