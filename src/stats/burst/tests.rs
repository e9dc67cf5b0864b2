//! Unit tests of the burst model.

use super::*;

const MIN: i64 = 60_000;

fn cfg() -> BurstConfig {
    BurstConfig::default()
}

/// Feeds `n` ratings into the bucket that starts at `bucket_start_ms`; returns the weights.
fn fill(s: &mut BurstState, bucket_start_ms: i64, n: u64) -> Vec<i32> {
    (0..n)
        .map(|i| {
            s.observe(bucket_start_ms + (i % 1000) as i64, Rater::Once, &cfg())
                .weight_milli
        })
        .collect()
}

#[test]
fn first_bucket_of_a_new_post_is_limited_by_the_floor() {
    let mut s = BurstState::default();
    let w = fill(&mut s, 5 * MIN, 20);
    // No history: mu = var = 0, so UCL = floor = 10 and the first 10 ratings count fully.
    assert_eq!(s.ucl(&cfg()), 10.0);
    assert!(w[..10].iter().all(|&w| w == 1000), "{w:?}");
    assert_eq!(w[10], 909); // 10/11
    assert_eq!(w[19], 500); // 10/20
}

#[test]
fn rollover_folds_the_finished_bucket() {
    let mut s = BurstState::default();
    fill(&mut s, 0, 5);
    let o = s.observe(MIN + 1, Rater::Once, &cfg());
    let a = cfg().alpha();
    assert!((a - 0.022_840_6).abs() < 1e-6, "alpha {a}");
    assert!((s.mu - a * 5.0).abs() < 1e-12);
    assert!((s.var - (1.0 - a) * a * 25.0).abs() < 1e-12);
    assert_eq!((o.bucket, o.arrivals, o.weight_milli), (1, 1, 1000));
    assert!((o.ucl - (s.mu + 3.0 * s.var.sqrt() + 10.0)).abs() < 1e-12);
}

#[test]
fn idle_buckets_decay_in_closed_form() {
    // A baseline of ~50/bucket, then 29 idle buckets and one rating in the 30th.
    let mut s = BurstState::default();
    for b in 0..400 {
        fill(&mut s, b * MIN, 50);
    }
    let before = s.clone();
    s.observe(429 * MIN, Rater::Once, &cfg());
    // Reference: fold the last bucket, then 29 zero buckets one at a time.
    let a = cfg().alpha();
    let fold = |(mu, var): (f64, f64), x: f64| {
        let d = x.min(mu + 3.0 * var.sqrt() + 10.0) - mu;
        (mu + a * d, (1.0 - a) * (var + a * d * d))
    };
    let last = fold((before.mu, before.var), 50.0);
    let after_last = last.0;
    let (mu, var) = (0..29).fold(last, |st, _| fold(st, 0.0));
    assert!((s.mu - mu).abs() < 1e-9 * mu, "{} vs {mu}", s.mu);
    assert!((s.var - var).abs() < 1e-9 * var, "{} vs {var}", s.var);
    // 29 of H = 30 buckets: the mean has almost halved.
    assert!((s.mu / after_last - 2f64.powf(-29.0 / 30.0)).abs() < 1e-9);
    // A post idle for years is back to a new post's limit, in O(1).
    s.observe(429 * MIN + 1_000_000_000 * MIN, Rater::Once, &cfg());
    assert!(s.mu < 1e-12 && s.var < 1e-12);
    assert!((s.ucl(&cfg()) - 10.0).abs() < 1e-9);
}

#[test]
fn an_attack_cannot_train_the_baseline_upward() {
    let mut s = BurstState::default();
    for b in 0..500 {
        fill(&mut s, b * MIN, 5);
    }
    // The first rating of bucket 500 folds bucket 499: from here the state is the baseline.
    let first = s.observe(500 * MIN, Rater::Once, &cfg());
    let (mu0, ucl0) = (s.mu, first.ucl);
    assert!(
        (4.5..5.5).contains(&mu0) && ucl0 < 18.0,
        "mu {mu0}, ucl {ucl0}"
    );
    // One bucket of 10,000 raises mu by alpha * (UCL - mu) at most, not alpha * 10,000.
    fill(&mut s, 500 * MIN, 9_999);
    s.observe(501 * MIN, Rater::Once, &cfg());
    let bound = mu0 + cfg().alpha() * (ucl0 - mu0);
    assert!((s.mu - bound).abs() < 1e-9, "mu {} vs capped {bound}", s.mu);
    // Ten more attack buckets: the limit grows geometrically (that is how a real, lasting
    // change gets through) but stays far below the attack; uncapped, mu would be ~2,250.
    for b in 501..511 {
        fill(&mut s, b * MIN, 10_000);
    }
    let w = s.observe(511 * MIN - 1, Rater::Once, &cfg());
    println!(
        "after 11 attack buckets: mu {} var {} ucl {} weight {}",
        s.mu, s.var, w.ucl, w.weight_milli
    );
    assert!(w.ucl < 80.0, "ucl {} (was {ucl0})", w.ucl);
    assert!(s.mu < 15.0, "mu {}", s.mu);
    assert!(w.weight_milli <= 8, "weight {}", w.weight_milli);
}

#[test]
fn a_lagging_clock_counts_into_the_current_bucket() {
    let mut s = BurstState::default();
    fill(&mut s, 9 * MIN, 4);
    let o = s.observe(10 * MIN + MIN / 2, Rater::Once, &cfg());
    assert_eq!((o.bucket, o.arrivals, o.estimate), (10, 1, 3.0));
    // Half a bucket behind: still bucket 10, judged as at its start (all of p counts).
    let o = s.observe(9 * MIN + MIN / 2, Rater::Once, &cfg());
    assert_eq!((o.bucket, o.arrivals, o.estimate), (10, 2, 6.0));
    assert_eq!(s.previous, 4);
}

#[test]
fn the_previous_bucket_counts_only_while_inside_the_window() {
    let mut s = BurstState::default();
    let o = s.observe(0, Rater::Once, &cfg());
    assert_eq!((s.previous, o.estimate), (0, 1.0));
    fill(&mut s, 0, 7);
    // A quarter into the next bucket, three quarters of the previous 8 are still in the window.
    let o = s.observe(MIN + MIN / 4, Rater::Once, &cfg());
    assert_eq!((s.previous, o.arrivals, o.estimate), (8, 1, 7.0));
    let o = s.observe(2 * MIN - 1, Rater::Once, &cfg());
    assert!((o.estimate - (2.0 + 8.0 / 60_000.0)).abs() < 1e-12, "{o:?}");
    // After an idle bucket the previous bucket is empty.
    let o = s.observe(3 * MIN, Rater::Once, &cfg());
    assert_eq!((s.previous, o.estimate), (0, 1.0));
}

#[test]
fn a_bucket_boundary_does_not_reset_a_bomb() {
    let mut s = BurstState::default();
    for b in 0..500 {
        fill(&mut s, b * MIN, 5);
    }
    // 5,000 zeros spread evenly over buckets 500 and 501.
    let obs: Vec<Observation> = (0..5_000)
        .map(|i| s.observe(500 * MIN + i * 2 * MIN / 5_000, Rater::Once, &cfg()))
        .collect();
    let (first, second) = obs.split_at(2_500);
    let total = |o: &[Observation]| o.iter().map(|o| i64::from(o.weight_milli)).sum::<i64>();
    let ucl = second[0].ucl;
    println!(
        "bomb over 2 buckets: weight {} then {} (UCL {:.2} then {ucl:.2})",
        total(first) as f64 / 1000.0,
        total(second) as f64 / 1000.0,
        first[0].ucl
    );
    // The count since the boundary alone would give the second bucket's first UCL ratings
    // full weight again; the sliding window still sees the 2,500 of the minute before.
    let below = second
        .iter()
        .take_while(|o| o.arrivals as f64 <= o.ucl)
        .count();
    assert_eq!(below, ucl.floor() as usize);
    assert_eq!(second[0].estimate, 2_501.0);
    assert!(second.iter().all(|o| o.estimate >= 2_500.0), "{second:?}");
    assert!(second.iter().all(|o| o.weight_milli < 15));
    // So the second bucket weighs about one UCL in all, not UCL x (1 + ln(2,500 / UCL)).
    assert!(
        (total(second) as f64) < 1_100.0 * ucl,
        "second bucket weighs {}",
        total(second)
    );
    // The first bucket's full-weight ratings are those below the limit, less the 5 of
    // the organic bucket before it still in the window.
    let full = first.iter().take_while(|o| o.weight_milli == 1000).count();
    assert!(
        (first[0].ucl - 6.0..=first[0].ucl - 4.0).contains(&(full as f64)),
        "{full} full-weight ratings under UCL {}",
        first[0].ucl
    );
}

#[test]
fn config_is_validated() {
    assert_eq!(cfg().validate(), Ok(()));
    assert_eq!(cfg().state_ttl_secs(), 57_600);
    let bad = |f: fn(&mut BurstConfig)| {
        let mut c = cfg();
        f(&mut c);
        c.validate().is_err()
    };
    assert!(bad(|c| c.bucket_secs = 0));
    assert!(bad(|c| c.half_life_buckets = 0.0));
    assert!(bad(|c| c.k = f64::NAN));
    assert!(bad(|c| c.floor = 0.5));
}
