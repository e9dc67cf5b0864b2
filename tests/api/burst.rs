//! Burst damping through the real API with a real clock (1-second buckets, floor 2):
//! steady organic ratings keep the damped and raw averages together, and a bomb of as many
//! zeros within 2 s moves the damped average at most 60% as far as the raw one. And one
//! rater's repeated or flipped ratings count once, so they damp no one else (guarantee 7).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel_async::RunQueryDsl;
use futures::future::join_all;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::{test_settings, TestApp, JWT_SECRET};

/// Raters are inserted directly and signed in with tokens minted here: hundreds of argon2
/// registrations would only slow the test down.
async fn raters(app: &TestApp, n: usize) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let ids: Vec<Id> = diesel::sql_query(
        "INSERT INTO users (username, password_hash)
         SELECT 'burst' || g, 'not-a-hash' FROM generate_series(1, $1) g RETURNING id",
    )
    .bind::<diesel::sql_types::Integer, _>(n as i32)
    .load(&mut app.db().await)
    .await
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    ids.iter()
        .map(|u| {
            let claims =
                json!({ "sub": u.id.to_string(), "name": "burst", "iat": now, "exp": now + 3600 });
            encode(&Header::default(), &claims, &key).unwrap()
        })
        .collect()
}

/// Scores with mean 4.2 (deterministic, spread over the range).
fn organic_score(i: usize) -> i64 {
    const PATTERN: [i64; 10] = [5, 5, 5, 5, 5, 4, 4, 4, 3, 2];
    PATTERN[(i * 7) % 10]
}

/// The post's averages once its stats are exact (through a broker too, after its lag).
async fn averages(app: &TestApp, post: i64) -> (f64, f64) {
    app.wait_exact(&[post], Duration::from_secs(20)).await;
    let got: Value = app.get_post(post, None).await;
    (
        got["average_rating"].as_f64().unwrap(),
        got["raw_average_rating"].as_f64().unwrap(),
    )
}

async fn put(app: &TestApp, token: &str, post: i64, score: i64) {
    let res = app
        .client
        .put(app.url(&format!("/api/v1/posts/{post}/rating")))
        .bearer_auth(token)
        .json(&json!({ "score": score }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_after_steady_traffic_moves_the_damped_average_far_less() {
    let mut settings = test_settings();
    settings.burst.bucket_secs = 1;
    settings.burst.floor = 2.0;
    let app = TestApp::with_settings(settings).await;
    let author = app.register("burstauthor").await;
    let post = app.create_post(&author, "popular").await;
    let (organic, bomb) = (600usize, 600usize);
    let tokens = raters(&app, organic + bomb).await;

    // 60 s of steady organic traffic, 10 ratings a second.
    let started = Instant::now();
    for (i, token) in tokens[..organic].iter().enumerate() {
        let due = started + Duration::from_millis(100 * i as u64);
        tokio::time::sleep_until(due.into()).await;
        put(&app, token, post, organic_score(i)).await;
    }
    let (damped_before, raw_before) = averages(&app, post).await;
    assert!(
        (damped_before - raw_before).abs() <= 0.05,
        "steady traffic: damped {damped_before} vs raw {raw_before}"
    );

    // As many zeros within 2 s.
    let started = Instant::now();
    join_all(tokens[organic..].iter().enumerate().map(|(i, token)| {
        let app = &app;
        async move {
            let due = started + Duration::from_millis((2000 * i / bomb) as u64);
            tokio::time::sleep_until(due.into()).await;
            put(app, token, post, 0).await;
        }
    }))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the bomb took {:?}",
        started.elapsed()
    );
    let (damped_after, raw_after) = averages(&app, post).await;
    let (raw_move, damped_move) = (raw_before - raw_after, damped_before - damped_after);
    eprintln!(
        "burst through the API: before damped {damped_before:.4} raw {raw_before:.4}; \
         after damped {damped_after:.4} raw {raw_after:.4}; moved {:.1}% as far",
        100.0 * damped_move / raw_move
    );
    assert!(raw_move > 1.5, "the raw average fell by {raw_move}");
    assert!(
        damped_move <= 0.6 * raw_move,
        "damped moved {damped_move}, raw {raw_move}"
    );
    app.assert_exact(post).await;
    let damped: f64 = app.metric("post_rate_burst_damped_ratings_total").await;
    assert!(damped > 0.0);
}

/// The stored weights of a post's ratings, by user id.
async fn weights(app: &TestApp, post: i64) -> Vec<i32> {
    #[derive(diesel::QueryableByName)]
    struct Weight {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        weight: i32,
    }
    let rows: Vec<Weight> =
        diesel::sql_query("SELECT weight FROM ratings WHERE post_id = $1 ORDER BY user_id")
            .bind::<diesel::sql_types::BigInt, _>(post)
            .load(&mut app.db().await)
            .await
            .unwrap();
    rows.into_iter().map(|w| w.weight).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rater_repeating_or_flipping_does_not_damp_the_others() {
    let mut settings = test_settings();
    // 100 writes of one user within a minute, with the limit on.
    settings.rate_limit_writes_per_min = 1_000;
    let app = TestApp::with_settings(settings).await;
    let author = app.register("spamauthor").await;
    let tokens = raters(&app, 4).await;
    for (case, scores) in [("the same score", [1, 1]), ("flips", [1, 2])] {
        let post = app.create_post(&author, case).await;
        for i in 0..100 {
            put(&app, &tokens[0], post, scores[i % 2]).await;
        }
        for (token, score) in tokens[1..].iter().zip([5, 4, 5]) {
            put(&app, token, post, score).await;
        }
        let (damped, raw) = averages(&app, post).await;
        eprintln!(
            "one rater, {case} 100 times, then three others: average {damped:.4}, raw {raw:.4}"
        );
        assert!(
            (damped - raw).abs() <= 0.05,
            "{case}: average {damped} vs raw {raw}"
        );
        // The three others keep full weight, and so does the one rater's single rating.
        assert_eq!(weights(&app, post).await, [1000; 4], "{case}");
    }
}

/// The post's detector state in Redis: (arrivals in the current bucket, raters recorded).
async fn detector_state(app: &TestApp, post: i64) -> (i64, usize) {
    let store = app.state().service.stats.store();
    let (state, raters) = (store.burst_key(post), store.burst_raters_key(post));
    store
        .with_conn(|mut conn| async move {
            let x: Option<i64> = redis::cmd("HGET")
                .arg(&state)
                .arg("x")
                .query_async(&mut conn)
                .await?;
            let n: usize = redis::cmd("HLEN")
                .arg(&raters)
                .query_async(&mut conn)
                .await?;
            Ok((x.unwrap_or(-1), n))
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_score_counts_nothing_in_a_later_bucket() {
    let mut settings = test_settings();
    settings.burst.bucket_secs = 1;
    let app = TestApp::with_settings(settings).await;
    let author = app.register("sameauthor").await;
    let post = app.create_post(&author, "same").await;
    let tokens = raters(&app, 1).await;
    put(&app, &tokens[0], post, 3).await;
    assert_eq!(detector_state(&app, post).await, (1, 1));
    // In the buckets after the first, the same score writes nothing: each call that counts
    // the rater again is taken back once the upsert turns out to be a no-op.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..20 {
        put(&app, &tokens[0], post, 3).await;
    }
    assert_eq!(detector_state(&app, post).await, (0, 0));
    // A change counts again.
    put(&app, &tokens[0], post, 4).await;
    let (x, n) = detector_state(&app, post).await;
    assert!(x == 1 && n == 1, "x {x}, raters {n}");
    app.wait_exact(&[post], Duration::from_secs(20)).await;
}
