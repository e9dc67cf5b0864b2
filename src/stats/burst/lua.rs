//! The Lua scripts checked against the Rust model on a real Redis.

use std::collections::HashMap;

use super::properties::{acceptance_config, acceptance_events, acceptance_outcome, model_weights};
use super::*;
use crate::stats::burst::simulate::{PostModel, Rng};

async fn redis() -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // redis-rs gives up on an answer after 500 ms by default: too short on a loaded machine.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The keys of post `post` under a prefix no other test (or run) uses.
fn keys(name: &str, post: u32) -> BurstKeys {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let state = format!(
        "burst-test:{name}:{}:{nanos}:burst:{post}",
        std::process::id()
    );
    BurstKeys {
        raters: format!("{state}:raters"),
        state,
    }
}

async fn delete(conn: &mut redis::aio::MultiplexedConnection, keys: &BurstKeys) {
    let _: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(&keys.state)
        .arg(&keys.raters)
        .query_async(conn)
        .await;
}

/// Seconds to live of the state and the raters hash.
async fn ttls(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &BurstKeys,
) -> redis::RedisResult<(i64, i64)> {
    redis::pipe()
        .cmd("TTL")
        .arg(&keys.state)
        .cmd("TTL")
        .arg(&keys.raters)
        .query_async(conn)
        .await
}

/// Counts of what the match test exercised.
#[derive(Debug, Default)]
struct Seen {
    calls: u32,
    nonzero_previous: u32,
    lagging: u32,
    /// Calls of a rater already counted in the bucket.
    repeats: u32,
    /// Writes by such a rater (a flip).
    flips: u32,
    /// Undos that withdrew an arrival, that only lowered a call count, that came too late.
    withdrawn: u32,
    kept: u32,
    stale: u32,
}

/// Who calls in a phase: a new user each time, or one of a few who repeat and flip.
fn pick_rater(rng: &mut Rng, pool: u64, next_new: &mut i64) -> (i64, u8) {
    if pool == 0 {
        *next_new += 1;
        return (*next_new, (rng.next_u64() % 6) as u8);
    }
    // A small pool rating between two scores: repeats, flips and no-ops.
    (
        1 + (rng.next_u64() % pool) as i64,
        2 + (rng.next_u64() % 2) as u8,
    )
}

#[tokio::test]
async fn lua_script_matches_the_model() -> redis::RedisResult<()> {
    let mut conn = redis().await?;
    let keys = keys("match", 1);
    let cfg = BurstConfig {
        bucket_secs: 10,
        half_life_buckets: 7.5,
        k: 2.5,
        floor: 4.0,
    };
    let detector = BurstDetector::new(cfg);
    let mut post = PostModel::new(cfg);
    let (mut rng, mut t, mut next_new) = (Rng::new(7), 1_700_000_000_000i64, 1_000i64);
    let (mut worst, mut seen) = (0i32, Seen::default());
    // A no-op whose undo is held back until after the next call (which may open a new bucket).
    let mut late_undo: Option<(i64, i64)> = None;
    for _ in 0..80 {
        // Phases: steady trickle, a burst (often across a boundary), writers whose clocks lag
        // by up to two buckets, or an idle gap (up to ~3 years); raters new or from a pool.
        let (n, gap_ms, lag_ms) = match rng.next_u64() % 4 {
            0 => (rng.next_u64() % 40, rng.exp(3_000.0), 0),
            1 => (200 + rng.next_u64() % 300, rng.exp(20.0), 0),
            2 => (rng.next_u64() % 40, rng.exp(500.0), 20_000),
            _ => (1, rng.exp(1e7) * (1 + rng.next_u64() % 10_000) as f64, 0),
        };
        let pool = [0, 0, 3, 40][(rng.next_u64() % 4) as usize];
        for _ in 0..n {
            t += gap_ms as i64;
            let at = if lag_ms > 0 {
                t - (rng.next_u64() % lag_ms) as i64
            } else {
                t
            };
            let (rater, score) = pick_rater(&mut rng, pool, &mut next_new);
            let lua = detector.weight(&mut conn, &keys, rater, at).await?;
            let model = post.state.observe(at, Rater::User(rater), &cfg);
            worst = worst.max((lua.weight_milli - model.weight_milli).abs());
            assert_eq!(
                (lua.counted, lua.bucket),
                (model.counted, model.bucket),
                "call {} at {at}",
                seen.calls
            );
            if let Some((bucket, late)) = late_undo.take() {
                undo_both(
                    &detector, &mut conn, &keys, &mut post, late, bucket, &mut seen,
                )
                .await?;
            }
            let written = post.store(Rater::User(rater), score, model.weight_milli);
            if !written && rng.next_u64() % 8 == 0 {
                late_undo = Some((model.bucket, rater));
            } else if !written {
                undo_both(
                    &detector,
                    &mut conn,
                    &keys,
                    &mut post,
                    rater,
                    model.bucket,
                    &mut seen,
                )
                .await?;
            }
            assert_same_state(&mut conn, &keys, &post.state, seen.calls).await?;
            seen.calls += 1;
            seen.nonzero_previous += u32::from(post.state.previous > 0);
            seen.lagging += u32::from(model.bucket > at.div_euclid(10_000));
            seen.repeats += u32::from(!model.counted);
            seen.flips += u32::from(!model.counted && written);
        }
    }
    println!("{seen:?}; worst difference {worst}");
    let stored: (Option<f64>, Option<f64>) = redis::cmd("HMGET")
        .arg(&keys.state)
        .arg("mu")
        .arg("var")
        .query_async(&mut conn)
        .await?;
    let (ttl, raters_ttl) = ttls(&mut conn, &keys).await?;
    delete(&mut conn, &keys).await;
    assert!(seen.calls > 3_000, "{seen:?}");
    assert!(seen.lagging > 50, "{seen:?}");
    assert!(seen.nonzero_previous > 1_000, "{seen:?}");
    assert!(seen.repeats > 500 && seen.flips > 200, "{seen:?}");
    assert!(
        seen.withdrawn > 100 && seen.kept > 100 && seen.stale > 5,
        "{seen:?}"
    );
    assert!(
        worst <= 1,
        "Lua and model weights differ by {worst} thousandths"
    );
    let state = &post.state;
    let (mu, var) = (stored.0.unwrap_or(f64::NAN), stored.1.unwrap_or(f64::NAN));
    assert!(
        (mu - state.mu).abs() <= 1e-9 * state.mu.max(1.0),
        "mu {mu} vs {}",
        state.mu
    );
    assert!(
        (var - state.var).abs() <= 1e-9 * state.var.max(1.0),
        "var {var} vs {}",
        state.var
    );
    assert!(ttl > 0 && ttl as u64 <= cfg.state_ttl_secs(), "ttl {ttl}");
    assert!(
        raters_ttl > 0 && raters_ttl <= ttl,
        "raters ttl {raters_ttl}"
    );
    Ok(())
}

/// Undoes a no-op call in Redis and in the model; both must agree on what it did.
async fn undo_both(
    detector: &BurstDetector,
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &BurstKeys,
    post: &mut PostModel,
    rater: i64,
    bucket: i64,
    seen: &mut Seen,
) -> redis::RedisResult<()> {
    let calls_before = post.state.raters.get(&rater).copied();
    let lua = detector.undo(conn, keys, rater, bucket).await?;
    let model = post.state.undo(bucket, rater);
    assert_eq!(lua, model, "undo of {rater} in bucket {bucket}");
    match (model, post.state.bucket == Some(bucket)) {
        (true, _) => seen.withdrawn += 1,
        (false, true) if calls_before.is_some() => seen.kept += 1,
        _ => seen.stale += 1,
    }
    Ok(())
}

/// The Redis hashes hold what the model holds: bucket, arrivals, previous, and the raters.
async fn assert_same_state(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &BurstKeys,
    state: &BurstState,
    call: u32,
) -> redis::RedisResult<()> {
    let (b, x, p): (Option<i64>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
        .arg(&keys.state)
        .arg("b")
        .arg("x")
        .arg("p")
        .query_async(conn)
        .await?;
    let raters: HashMap<i64, u64> = redis::cmd("HGETALL")
        .arg(&keys.raters)
        .query_async(conn)
        .await?;
    assert_eq!(
        (b, x, p),
        (state.bucket, Some(state.arrivals), Some(state.previous)),
        "call {call}"
    );
    assert_eq!(raters, state.raters, "call {call}");
    // Arrivals are the raters with a call that counts.
    assert_eq!(state.arrivals, state.raters.len() as u64, "call {call}");
    Ok(())
}

#[tokio::test]
async fn one_second_acceptance_through_redis() -> redis::RedisResult<()> {
    let mut conn = redis().await?;
    let detector = BurstDetector::new(acceptance_config());
    let mut results = Vec::new();
    for (i, (per_sec, offset)) in [(10.0, 0), (10.0, 500), (1.0, 0), (1.0, 500)]
        .into_iter()
        .enumerate()
    {
        let keys = keys("acceptance", i as u32);
        let (events, organic) = acceptance_events(per_sec, true, offset, 41);
        let mut weights = Vec::with_capacity(events.len());
        for (rater, &(at, _)) in events.iter().enumerate() {
            let arrival = detector.weight(&mut conn, &keys, rater as i64, at).await?;
            weights.push(arrival.weight_milli);
        }
        delete(&mut conn, &keys).await;
        let model = model_weights(&events);
        let diff = weights
            .iter()
            .zip(&model)
            .map(|(a, b)| (a - b).abs())
            .max()
            .unwrap_or(0);
        results.push((acceptance_outcome(&events, organic, &weights), diff));
    }
    for ((gap, ratio), diff) in results {
        assert!(diff <= 1, "Lua vs model: {diff}");
        assert!(gap <= 0.05, "damped and raw {gap} apart after 60 s");
        assert!(ratio <= 0.6, "damped moved {ratio} of the raw move");
    }
    Ok(())
}

#[tokio::test]
async fn a_fresh_key_gives_full_weight_and_expires() -> redis::RedisResult<()> {
    let mut conn = redis().await?;
    let keys = keys("fresh", 9);
    let detector = BurstDetector::new(BurstConfig::default());
    let arrival = detector.weight(&mut conn, &keys, 42, 123_456).await?;
    let (ttl, raters_ttl) = ttls(&mut conn, &keys).await?;
    delete(&mut conn, &keys).await;
    assert_eq!(
        arrival,
        Arrival {
            weight_milli: 1000,
            counted: true,
            bucket: 2
        }
    );
    for ttl in [ttl, raters_ttl] {
        assert!((57_000..=57_600).contains(&ttl), "ttl {ttl}");
    }
    Ok(())
}
