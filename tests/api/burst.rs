//! Burst damping through the real API with a real clock (1-second buckets, floor 2):
//! steady organic ratings keep the damped and raw averages together, and a bomb of as many
//! zeros within 2 s moves the damped average at most 60% as far as the raw one.

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

async fn averages(app: &TestApp, post: i64) -> (f64, f64) {
    app.wait_idle().await;
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
