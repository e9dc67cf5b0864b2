//! RATE_LIMIT_WRITES_PER_MIN (per user) and RATE_LIMIT_AUTH_PER_MIN (per client address):
//! 429 problem+json with Retry-After, nothing stored for a refused request.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use post_rate::db::schema::users;
use reqwest::Method;
use serde_json::json;

use post_rate::config::RateLimitStore;

use crate::common::{problem, test_settings, TestApp};

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in whole seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_requests_are_limited_per_client_address() {
    let mut settings = test_settings();
    settings.rate_limit_auth_per_min = 3;
    let mut app = TestApp::with_settings(settings).await;
    // register + token = 2 of the 3 attempts.
    let alice = app.register("alice").await;
    let creds = json!({ "username": "alice", "password": "password123" });
    let res = app
        .request(
            Method::POST,
            "/api/v1/auth/token",
            None,
            Some(creds.clone()),
        )
        .await;
    assert_eq!(res.status(), 200, "third attempt is within the limit");

    let res = app
        .request(Method::POST, "/api/v1/auth/token", None, Some(creds))
        .await;
    let wait = retry_after(&res);
    assert!(
        (1..=20).contains(&wait),
        "one attempt per 20 s comes back: {wait}"
    );
    let body = problem(res, 429).await;
    assert_eq!(body["type"], "/problems/too-many-requests");

    // A refused registration stores nothing, and even a malformed body is refused first.
    let res = app
        .request(
            Method::POST,
            "/api/v1/users",
            None,
            Some(json!({ "username": "bob", "password": "password123" })),
        )
        .await;
    problem(res, 429).await;
    let res = app
        .request(Method::POST, "/api/v1/users", None, Some(json!([])))
        .await;
    problem(res, 429).await;
    let read = app
        .request(
            Method::GET,
            "/api/v1/posts?limit=1",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(read.status(), 200, "reads are not limited");
    let mut conn = app.db().await;
    let names: Vec<String> = users::table
        .select(users::username)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(names, vec!["alice".to_owned()]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_limited_per_user() {
    let mut settings = test_settings();
    settings.rate_limit_writes_per_min = 4;
    let mut app = TestApp::with_settings(settings).await;
    let author = app.register("author").await;
    let rater = app.register("rater").await;
    let other = app.register("other").await;
    // Author: 1 post write of 4.
    let post = app.create_post(&author, "limited").await;
    // Rater: rate, re-rate, withdraw, rate = 4 writes, then the fifth is refused.
    assert_eq!(app.rate(&rater, post, 3).await.status(), 200);
    assert_eq!(app.rate(&rater, post, 4).await.status(), 200);
    let path = format!("/api/v1/posts/{post}/rating");
    let res = app
        .request(Method::DELETE, &path, Some(&rater.token), None)
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.rate(&rater, post, 5).await.status(), 200);
    let res = app.rate(&rater, post, 1).await;
    assert!(retry_after(&res) >= 1);
    problem(res, 429).await;
    let res = app
        .request(Method::DELETE, &path, Some(&rater.token), None)
        .await;
    problem(res, 429).await;

    // The refused writes changed nothing; another user is not affected.
    let seen = app.get_post(post, Some(&rater)).await;
    assert_eq!(seen["user_rating"], json!(5));
    assert_eq!(app.rate(&other, post, 2).await.status(), 200);
    // A bad token is still a 401, not a 429.
    let res = app
        .request(Method::DELETE, &path, Some("not-a-token"), None)
        .await;
    problem(res, 401).await;
    app.wait_exact(&[post], std::time::Duration::from_secs(10))
        .await;
    app.stop().await;
}

/// Settings with the limits kept in Redis (RATE_LIMIT_STORE=redis) and `auth_per_min`.
fn shared_limits(auth_per_min: u32) -> post_rate::config::Settings {
    let mut settings = test_settings();
    settings.rate_limit_store = RateLimitStore::Redis;
    settings.rate_limit_auth_per_min = auth_per_min;
    settings
}

/// Token attempts of one client; returns the 1-based number of the first 429, if any.
/// The credentials are empty (422): counted like any attempt, but answered without hashing
/// a password, so the attempts take milliseconds and no allowance comes back between them
/// however busy the machine is.
async fn first_refusal(apps: &[&TestApp], attempts: usize) -> Option<usize> {
    let creds = json!({ "username": "", "password": "" });
    for n in 1..=attempts {
        let app = apps[n % apps.len()];
        let res = app
            .request(
                Method::POST,
                "/api/v1/auth/token",
                None,
                Some(creds.clone()),
            )
            .await;
        match res.status().as_u16() {
            429 => {
                assert!(retry_after(&res) >= 1);
                return Some(n);
            }
            422 => {}
            other => panic!("attempt {n}: {other}"),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_kept_in_redis_are_shared_by_every_instance() {
    let settings = shared_limits(30);
    let a = TestApp::with_settings(settings.clone()).await;
    let b = TestApp::with_settings(settings).await;
    // Alternating between the two: with limits per instance each would allow 30.
    let refused = first_refusal(&[&a, &b], 40).await;
    // 30 at once, plus one more per 2 s that may have come back while the 30 were answered.
    assert!(
        refused.is_some_and(|n| (31..=32).contains(&n)),
        "first 429 at attempt {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_kept_in_redis_fail_open_when_redis_is_away() {
    let mut settings = shared_limits(2);
    // Nothing listens there.
    settings.redis_url = "redis://127.0.0.1:1".into();
    settings.redis_timeout = std::time::Duration::from_millis(300);
    let app = TestApp::with_settings(settings).await;
    assert_eq!(first_refusal(&[&app], 5).await, None);
    assert!(app.metric("post_rate_rate_limit_store_errors_total").await >= 5.0);
}
