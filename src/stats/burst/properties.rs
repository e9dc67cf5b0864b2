//! The properties DESIGN §5 and issue 4 promise, checked on the Rust model with a virtual clock.

use super::{BurstConfig, BurstState, Rater};
use crate::stats::burst::simulate::{PostModel, Rng};

const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MIN_MS;

/// (damped, raw) averages of a post that has ratings.
pub(super) fn averages(s: &PostModel) -> (f64, f64) {
    (s.damped().unwrap_or(f64::NAN), s.raw().unwrap_or(f64::NAN))
}

/// Poisson arrival times from `start_ms` at `per_min`, until `end_ms` or `max` arrivals.
fn poisson(rng: &mut Rng, per_min: f64, start_ms: i64, end_ms: i64, max: usize) -> Vec<i64> {
    let (mut t, mut out) = (start_ms as f64, Vec::new());
    while out.len() < max {
        t += rng.exp(MIN_MS as f64 / per_min);
        if t >= end_ms as f64 {
            break;
        }
        out.push(t as i64);
    }
    out
}

#[test]
fn steady_organic_traffic_keeps_averages_together_and_full_weight() {
    for (per_min, seed) in [(1.0, 11), (10.0, 12), (100.0, 13), (1000.0, 14)] {
        let mut rng = Rng::new(seed);
        let mut s = PostModel::new(BurstConfig::default());
        let (mut late, mut late_full, mut max_gap) = (0u64, 0u64, 0f64);
        for at in poisson(&mut rng, per_min, 0, 24 * HOUR_MS, usize::MAX) {
            let score = rng.organic_score();
            let w = s.rate_once(at, score);
            if at >= HOUR_MS {
                late += 1;
                late_full += u64::from(w == 1000);
                let (damped, raw) = averages(&s);
                max_gap = max_gap.max((damped - raw).abs());
            }
        }
        let full = late_full as f64 / late as f64;
        let (damped, raw) = averages(&s);
        println!("steady {per_min}/min: max |damped-raw| after 1 h {max_gap:.5}, final {:.5}, full weight after 1 h {:.4}%", (damped - raw).abs(), 100.0 * full);
        assert!(
            max_gap < 0.02,
            "{per_min}/min: averages drifted apart by {max_gap}"
        );
        assert!(
            full >= 0.99,
            "{per_min}/min: only {full} of ratings after the first hour at full weight"
        );
    }
}

/// 10,000 organic ratings (mean 4.2) at 5 a minute; returns the stream and the next bucket start.
fn organic_history(seed: u64) -> (PostModel, i64) {
    let mut rng = Rng::new(seed);
    let mut s = PostModel::new(BurstConfig::default());
    let times = poisson(&mut rng, 5.0, 0, i64::MAX, 10_000);
    for &at in &times {
        s.rate_once(at, rng.organic_score());
    }
    let last = times.last().copied().unwrap_or(0);
    (s, (last / MIN_MS + 1) * MIN_MS)
}

/// 5,000 zeros spread evenly over the 2 minutes from `start_ms`.
fn bomb(s: &mut PostModel, start_ms: i64) {
    for i in 0..5_000 {
        s.rate_once(start_ms + i * 2 * MIN_MS / 5_000, 0);
    }
}

#[test]
fn a_bomb_barely_moves_the_average() {
    for seed in [21, 22, 23] {
        let (history, start) = organic_history(seed);
        let (damped, raw) = averages(&history);
        // "Within 2 minutes" of B = 60 s: from a boundary the bomb fills two whole buckets;
        // starting later it straddles three.
        for offset_s in [0, 15, 30, 45] {
            let mut s = history.clone();
            bomb(&mut s, start + offset_s * 1000);
            let (damped_after, raw_after) = averages(&s);
            let (moved, fell) = (damped - damped_after, raw - raw_after);
            println!(
                "bomb seed {seed} at +{offset_s:2} s: damped {damped:.4} -> {:.4} (moved {moved:.4}), raw fell {fell:.4}",
                damped_after
            );
            assert!(
                moved.abs() < 0.15,
                "seed {seed}, +{offset_s} s: the average moved by {moved}"
            );
            assert!(fell > 1.2, "the raw average fell by only {fell}");
        }
    }
}

#[test]
fn a_sustained_change_gets_through() {
    let (mut s, start) = organic_history(31);
    bomb(&mut s, start);
    let mut rng = Rng::new(32);
    let begin = start + 2 * MIN_MS;
    let (mut n, mut full) = (0u64, 0u64);
    for at in poisson(&mut rng, 50.0, begin, begin + 24 * HOUR_MS, usize::MAX) {
        let w = s.rate_once(at, rng.organic_score());
        if at >= begin + 18 * HOUR_MS {
            n += 1;
            full += u64::from(w == 1000);
        }
    }
    let share = full as f64 / n as f64;
    println!(
        "shift: {n} ratings in the last 6 h, {:.4}% at full weight",
        100.0 * share
    );
    assert!(n > 17_000, "the stream is too thin: {n}");
    assert!(share >= 0.99, "only {share} of the last 6 h at full weight");
}

/// Issue 4's acceptance traffic with BURST_BUCKET_SECS=1, BURST_FLOOR=2: 60 s of organic
/// ratings at `per_sec` (Poisson or evenly spaced) on a new post, then as many zeros within
/// 2 s starting `offset_ms` after a second boundary. Returns (events, organic count).
pub(super) fn acceptance_events(
    per_sec: f64,
    poisson_arrivals: bool,
    offset_ms: i64,
    seed: u64,
) -> (Vec<(i64, u8)>, usize) {
    let base = 1_700_000_000_000i64;
    let mut rng = Rng::new(seed);
    let times: Vec<i64> = if poisson_arrivals {
        poisson(&mut rng, per_sec * 60.0, base, base + MIN_MS, usize::MAX)
    } else {
        let n = (per_sec * 60.0) as i64;
        (0..n).map(|i| base + i * MIN_MS / n).collect()
    };
    let mut events: Vec<(i64, u8)> = times.iter().map(|&t| (t, rng.organic_score())).collect();
    let n = events.len() as i64;
    let bomb_at = base + MIN_MS + 1_000 + offset_ms;
    events.extend((0..n).map(|i| (bomb_at + i * 2_000 / n, 0)));
    (events, n as usize)
}

pub(super) fn acceptance_config() -> BurstConfig {
    BurstConfig {
        bucket_secs: 1,
        floor: 2.0,
        ..BurstConfig::default()
    }
}

/// (|damped - raw| after the organic minute, damped move / raw move after the bomb).
pub(super) fn acceptance_outcome(
    events: &[(i64, u8)],
    organic: usize,
    weights: &[i32],
) -> (f64, f64) {
    let mut s = PostModel::new(acceptance_config());
    let mut before = (0.0, 0.0);
    for (i, (&(_, score), &w)) in events.iter().zip(weights).enumerate() {
        if i == organic {
            before = averages(&s);
        }
        s.store(Rater::Once, score, w);
    }
    let after = averages(&s);
    (
        (before.0 - before.1).abs(),
        (before.0 - after.0) / (before.1 - after.1),
    )
}

pub(super) fn model_weights(events: &[(i64, u8)]) -> Vec<i32> {
    let (cfg, mut state) = (acceptance_config(), BurstState::default());
    events
        .iter()
        .map(|&(at, _)| state.observe(at, Rater::Once, &cfg).weight_milli)
        .collect()
}

fn acceptance(per_sec: f64, poisson_arrivals: bool, offset_ms: i64, seed: u64) -> (f64, f64) {
    let (events, organic) = acceptance_events(per_sec, poisson_arrivals, offset_ms, seed);
    acceptance_outcome(&events, organic, &model_weights(&events))
}

#[test]
fn one_second_buckets_pass_the_issue_4_acceptance() {
    // Poisson and evenly spaced traffic; the bomb starts 0..750 ms after a second boundary
    // (0 = it fills 2 buckets, otherwise it straddles 3).
    for per_sec in [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0] {
        for poisson_arrivals in [true, false] {
            let (mut worst_gap, mut worst_ratio) = (0f64, 0f64);
            for offset in [0, 250, 500, 750] {
                for seed in [41, 42, 43] {
                    let (gap, ratio) = acceptance(per_sec, poisson_arrivals, offset, seed);
                    assert!(
                        gap <= 0.05,
                        "{per_sec}/s poisson={poisson_arrivals} seed {seed}: averages {gap} apart"
                    );
                    assert!(
                        ratio <= 0.6,
                        "{per_sec}/s poisson={poisson_arrivals} offset {offset} seed {seed}: damped moved {ratio} of raw"
                    );
                    (worst_gap, worst_ratio) = (worst_gap.max(gap), worst_ratio.max(ratio));
                }
            }
            println!(
                "1-s buckets, {per_sec}/s poisson={poisson_arrivals}: worst |damped-raw| {worst_gap:.4}, worst damped/raw move {worst_ratio:.3}"
            );
        }
    }
}

/// What the defaults still miss (README, "Still missed"): over many seeds and bomb offsets,
/// rates below 1/s, a few 1/s Poisson draws, and new posts rated ~500/s or more in their first
/// minute (400/s, which passes, is there for the edge). Run with `--ignored --nocapture` for
/// the numbers; kept as failing checks, not loosened ones.
#[test]
#[ignore = "known gap: < 1/s, 1/s Poisson on a few seeds, and >= ~500/s on a new post"]
fn known_gaps() {
    let mut failed = Vec::new();
    let cases = [
        (0.5, true, 100..150),
        (0.5, false, 100..150),
        (1.0, true, 100..150),
        (400.0, true, 100..105),
        (500.0, true, 100..105),
        (1000.0, true, 100..105),
    ];
    for (per_sec, poisson_arrivals, seeds) in cases {
        let (mut ratios, mut organic_weight) = (Vec::new(), Vec::new());
        for offset in [0, 100, 250, 400, 500, 600, 750, 900] {
            for seed in seeds.clone() {
                let (events, organic) = acceptance_events(per_sec, poisson_arrivals, offset, seed);
                let weights = model_weights(&events);
                ratios.push(acceptance_outcome(&events, organic, &weights).1);
                let w: i64 = weights[..organic].iter().map(|&w| i64::from(w)).sum();
                organic_weight.push(w as f64 / 1000.0 / organic as f64);
            }
        }
        for v in [&mut ratios, &mut organic_weight] {
            v.sort_by(f64::total_cmp);
        }
        let (n, over) = (ratios.len(), ratios.iter().filter(|&&r| r > 0.6).count());
        println!(
            "{per_sec}/s poisson={poisson_arrivals}: damped/raw move median {:.3}, max {:.3}, {over} of {n} runs above 0.6; organic ratings keep {:.1}% of their weight (median)",
            ratios[n / 2],
            ratios[n - 1],
            100.0 * organic_weight[n / 2]
        );
        if over > 0 {
            failed.push(per_sec);
        }
    }
    assert!(failed.is_empty(), "above 0.6 at {failed:?}/s");
}
