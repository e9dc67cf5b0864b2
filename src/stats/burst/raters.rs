//! Arrivals count raters, not requests (DESIGN §5, guarantee 7), on a virtual clock: one
//! rater's repeats, flips and no-ops do not damp anyone else.

use super::*;
use crate::stats::burst::simulate::{PostModel, Rng};

const MIN: i64 = 60_000;

/// One user's 100 calls, one every `gap_ms` from `start_ms`, scores from `score(i)`; then
/// three other users rate 5, 4 and 5. Returns the others' weights.
fn spam_then_others(
    post: &mut PostModel,
    start_ms: i64,
    gap_ms: i64,
    score: impl Fn(i64) -> u8,
) -> Vec<i32> {
    for i in 0..100 {
        post.rate(start_ms + i * gap_ms, Rater::User(1), score(i));
    }
    let after = start_ms + 100 * gap_ms;
    [(2, 5), (3, 4), (4, 5)]
        .into_iter()
        .map(|(user, s)| {
            post.rate(after + user, Rater::User(user), s);
            post.weight_of(user).unwrap_or(-1)
        })
        .collect()
}

fn assert_averages_agree(post: &PostModel, case: &str) {
    let (raw, damped) = (post.raw().unwrap_or(0.0), post.damped().unwrap_or(9.0));
    assert!(
        (raw - damped).abs() <= 0.05,
        "{case}: average {damped} vs raw {raw}"
    );
}

/// A new post, and one with an hour of organic history at 5 a minute.
fn posts() -> Vec<(&'static str, PostModel, i64)> {
    let new = PostModel::new(BurstConfig::default());
    let mut known = new.clone();
    let mut rng = Rng::new(5);
    let mut t = 0.0;
    while t < 60.0 * MIN as f64 {
        t += rng.exp(MIN as f64 / 5.0);
        known.rate_once(t as i64, rng.organic_score());
    }
    vec![("new post", new, 10 * MIN), ("known post", known, 61 * MIN)]
}

#[test]
fn one_rater_repeating_a_score_100_times_leaves_others_at_full_weight() {
    // 100 calls within 10 s (one bucket), or one every 2 s (across four buckets).
    for gap_ms in [100, 2_000] {
        for (case, mut post, start) in posts() {
            let others = spam_then_others(&mut post, start, gap_ms, |_| 0);
            assert_eq!(others, [1000; 3], "{case}, every {gap_ms} ms");
            assert_eq!(post.weight_of(1), Some(1000), "{case}");
            assert_averages_agree(&post, case);
        }
    }
    // The repeats are no-ops: the bucket counts the rater once, then three others.
    let (_, mut post, start) = posts().remove(0);
    spam_then_others(&mut post, start, 100, |_| 0);
    assert_eq!(post.state.arrivals, 4);
}

#[test]
fn one_rater_flipping_100_times_leaves_others_at_full_weight() {
    for gap_ms in [100, 2_000] {
        for (case, mut post, start) in posts() {
            let others = spam_then_others(&mut post, start, gap_ms, |i| 1 + (i % 2) as u8);
            assert_eq!(others, [1000; 3], "{case}, every {gap_ms} ms");
            assert_averages_agree(&post, case);
        }
    }
    let (_, mut post, start) = posts().remove(0);
    spam_then_others(&mut post, start, 100, |i| 1 + (i % 2) as u8);
    assert_eq!(post.state.arrivals, 4);
}

#[test]
fn an_unchanged_score_counts_nothing() {
    let cfg = BurstConfig::default();
    let mut post = PostModel::new(cfg);
    post.rate(0, Rater::User(1), 3);
    // In later buckets the same score writes nothing and leaves no arrival behind.
    for b in 1..5 {
        let call = post.rate(b * MIN + 5, Rater::User(1), 3);
        assert!(call.obs.counted && !call.written, "bucket {b}: {call:?}");
        assert_eq!((post.state.arrivals, post.state.raters.len()), (0, 0));
    }
    // A change counts again, once.
    post.rate(5 * MIN, Rater::User(1), 4);
    post.rate(5 * MIN + 1, Rater::User(1), 4);
    assert_eq!(post.state.arrivals, 1);
}

#[test]
fn a_repeat_is_judged_like_any_other_rating_of_its_bucket() {
    let cfg = BurstConfig::default();
    let mut s = BurstState::default();
    for user in 0..20 {
        s.observe(user, Rater::User(user), &cfg);
    }
    let next = s.clone().observe(30, Rater::User(99), &cfg);
    let repeat = s.observe(30, Rater::User(7), &cfg);
    // Not counted, so judged by the 20 arrivals so far: UCL 10 / 20.
    assert!(!repeat.counted);
    assert_eq!((repeat.arrivals, repeat.weight_milli), (20, 500));
    assert_eq!((next.arrivals, next.weight_milli), (21, 476));
}

#[test]
fn an_undo_keeps_a_rater_whose_other_call_wrote() {
    let cfg = BurstConfig::default();
    let mut s = BurstState::default();
    // Two overlapping calls of one user: the first turns out a no-op, the second a change.
    let first = s.observe(1_000, Rater::User(1), &cfg);
    let second = s.observe(1_001, Rater::User(1), &cfg);
    assert!(first.counted && !second.counted);
    assert!(!s.undo(first.bucket, 1));
    assert_eq!(s.arrivals, 1, "the write of the second call still counts");
    // Had both been no-ops, the rater would count nothing.
    assert!(s.undo(second.bucket, 1));
    assert_eq!((s.arrivals, s.raters.len()), (0, 0));
    // Undoing again, or for someone never seen, changes nothing.
    assert!(!s.undo(second.bucket, 1) && !s.undo(second.bucket, 2));
    assert_eq!(s.arrivals, 0);
}

#[test]
fn an_undo_after_the_bucket_moved_on_changes_nothing() {
    let cfg = BurstConfig::default();
    let mut s = BurstState::default();
    let call = s.observe(1_000, Rater::User(1), &cfg);
    s.observe(MIN + 1, Rater::User(2), &cfg);
    let before = s.clone();
    assert!(!s.undo(call.bucket, 1));
    assert_eq!(s, before);
    assert_eq!((s.previous, s.arrivals), (1, 1));
}
