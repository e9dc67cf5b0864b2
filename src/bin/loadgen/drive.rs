//! The traffic: C workers, each with one request in flight, drawing operations from the mix
//! and posts from a Zipf popularity, closed loop or paced to a fixed write rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use reqwest::Method;
use serde_json::json;

use crate::args::{Args, Op};
use crate::client::Api;
use crate::record::{Live, Tally};
use crate::setup::World;

/// Score shares of organic ratings, 0..5: the J shape of most rating sites.
const ORGANIC: [u32; 6] = [4, 3, 6, 14, 33, 40];
/// Ratings a worker remembers for re-rates and withdrawals.
const REMEMBERED: usize = 20_000;

struct Shared {
    api: Api,
    raters: Vec<(i64, String)>,
    posts: Vec<i64>,
    /// Popularity rank → index into `posts`: the hottest posts are not simply the newest.
    by_rank: Vec<usize>,
    zipf: Zipf<f64>,
    cumulative: [u32; 6],
    list_path: String,
    burst_secs: u64,
    burst_score: i16,
    burst_user: AtomicU64,
    seed: u64,
    started: Instant,
    deadline: Instant,
    /// Open loop: seconds between request slots, and the next slot to hand out.
    pace: Option<f64>,
    next_slot: AtomicU64,
    live: Arc<Live>,
}

pub struct Outcome {
    pub tally: Tally,
    pub secs: f64,
    /// Requests per second the pacing aimed at (all operations), when --rate was given.
    pub target_rps: Option<f64>,
}

pub async fn run(
    args: &Args,
    api: &Api,
    world: &World,
    live: Arc<Live>,
    weights: [u32; 6],
) -> Result<Outcome, String> {
    if world.raters.is_empty() || world.posts.is_empty() {
        return Err("nothing to drive: no users or no posts".into());
    }
    let total: u32 = weights.iter().sum();
    let writes: u32 = Op::ALL
        .iter()
        .filter(|o| o.is_write())
        .map(|o| weights[o.index()])
        .sum();
    let target_rps = match args.rate {
        Some(r) if writes == 0 => return Err(format!("--rate {r}: the mix has no writes")),
        Some(r) if r <= 0.0 => return Err("--rate must be positive".into()),
        Some(r) => Some(r * total as f64 / writes as f64),
        None => None,
    };
    let mut cumulative = [0u32; 6];
    let mut acc = 0;
    for (c, w) in cumulative.iter_mut().zip(weights) {
        acc += w;
        *c = acc;
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut by_rank: Vec<usize> = (0..world.posts.len()).collect();
    by_rank.shuffle(&mut rng);
    let zipf =
        Zipf::new(world.posts.len() as f64, args.zipf_s).map_err(|e| format!("--zipf-s: {e}"))?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        api: api.clone(),
        raters: world.raters.clone(),
        posts: world.posts.clone(),
        by_rank,
        zipf,
        cumulative,
        list_path: format!("/api/v1/posts?limit={}", args.page_limit),
        burst_secs: args.burst_secs.max(1),
        burst_score: args.burst_score,
        burst_user: AtomicU64::new(0),
        seed: args.seed,
        started,
        deadline: started + Duration::from_secs(args.duration),
        pace: target_rps.map(|r| 1.0 / r),
        next_slot: AtomicU64::new(0),
        live,
    });
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| tokio::spawn(worker(shared.clone(), args.seed.wrapping_add(1 + i as u64))))
        .collect();
    let mut tally = Tally::new();
    for w in workers {
        tally.merge(w.await.map_err(|e| format!("worker: {e}"))?);
    }
    Ok(Outcome {
        tally,
        secs: started.elapsed().as_secs_f64(),
        target_rps,
    })
}

/// A rating this worker made: (rater index, post index, score).
type Rated = (usize, usize, i16);

async fn worker(s: Arc<Shared>, seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::new();
    let mut rated: Vec<Rated> = Vec::new();
    loop {
        let due = match s.pace {
            Some(interval) => {
                let slot = s.next_slot.fetch_add(1, Ordering::Relaxed);
                let due = s.started + Duration::from_secs_f64(slot as f64 * interval);
                if due >= s.deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= s.deadline {
                    break;
                }
                now
            }
        };
        let draw = rng.random_range(0..s.cumulative[5]);
        let op = Op::ALL[s.cumulative.iter().position(|c| draw < *c).unwrap_or(0)];
        let (op, outcome) = send(&s, op, &mut rng, &mut rated).await;
        tally.record(op, due.elapsed(), outcome, &s.live);
    }
    tally
}

/// Sends one operation; re-rates and withdrawals become rates while the worker has rated
/// nothing yet. Returns the operation actually sent.
async fn send(
    s: &Shared,
    op: Op,
    rng: &mut StdRng,
    rated: &mut Vec<Rated>,
) -> (Op, Result<u16, String>) {
    let op = match op {
        Op::Rerate | Op::Withdraw if rated.is_empty() => Op::Rate,
        other => other,
    };
    let status = match op {
        Op::List => {
            let token = &s.raters[rng.random_range(0..s.raters.len())].1;
            s.api
                .send(Method::GET, &s.list_path, Some(token), None)
                .await
        }
        Op::Anon => s.api.send(Method::GET, &s.list_path, None, None).await,
        Op::Rate => {
            let user = rng.random_range(0..s.raters.len());
            let rank = s.zipf.sample(rng) as usize;
            let post = s.by_rank[rank.clamp(1, s.posts.len()) - 1];
            let score = organic(rng);
            remember(rated, (user, post, score), rng);
            put(s, user, post, score).await
        }
        Op::Rerate => {
            let i = rng.random_range(0..rated.len());
            let (user, post, old) = rated[i];
            let score = (old + rng.random_range(1..6)) % 6;
            rated[i].2 = score;
            put(s, user, post, score).await
        }
        Op::Withdraw => {
            let (user, post, _) = rated.swap_remove(rng.random_range(0..rated.len()));
            let path = format!("/api/v1/posts/{}/rating", s.posts[post]);
            s.api
                .send(Method::DELETE, &path, Some(&s.raters[user].1), None)
                .await
        }
        Op::Burst => {
            // The target changes every `burst_secs`; the raters are distinct, in turn.
            let epoch = s.started.elapsed().as_secs() / s.burst_secs;
            let post = (mix64(s.seed ^ epoch) % s.posts.len() as u64) as usize;
            let user =
                (s.burst_user.fetch_add(1, Ordering::Relaxed) % s.raters.len() as u64) as usize;
            let score = if (0..=5).contains(&s.burst_score) {
                s.burst_score
            } else {
                organic(rng)
            };
            remember(rated, (user, post, score), rng);
            put(s, user, post, score).await
        }
    };
    (op, status.map(|st| st.as_u16()))
}

async fn put(
    s: &Shared,
    user: usize,
    post: usize,
    score: i16,
) -> Result<reqwest::StatusCode, String> {
    let path = format!("/api/v1/posts/{}/rating", s.posts[post]);
    let body = json!({ "score": score });
    s.api
        .send(Method::PUT, &path, Some(&s.raters[user].1), Some(&body))
        .await
}

fn organic(rng: &mut StdRng) -> i16 {
    let total: u32 = ORGANIC.iter().sum();
    let mut draw = rng.random_range(0..total);
    for (score, share) in ORGANIC.iter().enumerate() {
        if draw < *share {
            return score as i16;
        }
        draw -= share;
    }
    5
}

fn remember(rated: &mut Vec<Rated>, r: Rated, rng: &mut StdRng) {
    if rated.len() < REMEMBERED {
        rated.push(r);
    } else {
        let i = rng.random_range(0..rated.len());
        rated[i] = r;
    }
}

/// splitmix64: spreads consecutive burst epochs over unrelated posts.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
