//! Self-healing stats (DESIGN §3, §8.3) in embedded mode: whatever Redis loses while ratings
//! flow, every post's stats come back to what `ratings` implies by themselves, and no reader
//! sees an impossible stat. The Kafka-mode run with two instances is tests/kafka/heal.rs.

use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use post_rate::db::outbox;
use post_rate::model::RatingEvent;
use serde_json::Value;

use crate::common::losses::{self, Traffic};
use crate::common::{test_settings, wait_until, TestApp, JWT_SECRET};

/// Stats must be back within this long after the traffic ends (DESIGN §8.3 says 30 s).
const HEALED_WITHIN: Duration = Duration::from_secs(30);

async fn app() -> TestApp {
    TestApp::builder().quick_healing().start().await
}

/// `n` posts by one author and `raters` other users' tokens.
async fn posts_and_raters(app: &TestApp, n: usize, raters: usize) -> (Vec<i64>, Vec<String>) {
    let author = app.register("author").await;
    let mut posts = Vec::new();
    for i in 0..n {
        posts.push(app.create_post(&author, &format!("post {i}")).await);
    }
    let tokens = losses::quick_users(&app.settings.database_url, JWT_SECRET, raters)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    (posts, tokens)
}

async fn repairs(app: &TestApp, cause: &str) -> f64 {
    app.metric(&format!(
        "post_rate_stats_repairs_total{{cause=\"{cause}\"}}"
    ))
    .await
}

/// Lets `tokens` rate `posts` for a second, then waits until the stats are exact.
async fn settle(app: &TestApp, posts: &[i64], tokens: Vec<String>) {
    let traffic = Traffic::start(vec![app.base.clone()], posts.to_vec(), tokens);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(traffic.stop().await.server_errors, 0);
    app.wait_idle().await;
    app.wait_exact(posts, HEALED_WITHIN).await;
}

/// Runs `loss` while ratings flow (2 s before, 2 s after), then checks that every post ends
/// exact with no 5xx on the way.
async fn loss_under_traffic<F, Fut>(app: &TestApp, posts: &[i64], tokens: Vec<String>, loss: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let traffic = Traffic::start(vec![app.base.clone()], posts.to_vec(), tokens);
    tokio::time::sleep(Duration::from_secs(2)).await;
    loss().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = traffic.stop().await;
    assert!(seen.ok > 100, "ratings flowed: {seen:?}");
    assert_eq!(seen.server_errors, 0, "no 5xx: {seen:?}");
    app.wait_idle().await;
    app.wait_exact(posts, HEALED_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rolled_back_by_seconds_heals_itself() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 10, 20).await;
    let store = losses::store(&app.settings);
    let traffic = Traffic::start(vec![app.base.clone()], posts.clone(), tokens.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = losses::dump(&store).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = traffic.stop().await;
    assert_eq!(seen.server_errors, 0);
    // The fences and stats go back two seconds; what was applied since is gone.
    loss_under_traffic(&app, &posts, tokens, || losses::roll_back(&store, &before)).await;
    assert!(repairs(&app, "gap").await + repairs(&app, "fence_behind").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_redis_heals_itself() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 10, 20).await;
    let store = losses::store(&app.settings);
    loss_under_traffic(&app, &posts, tokens, || async {
        assert!(store.delete_all().await.unwrap() > 0);
    })
    .await;
    assert!(repairs(&app, "store_lost").await + repairs(&app, "gap").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stats_hashes_are_rebuilt_from_the_next_events() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 10, 20).await;
    let store = losses::store(&app.settings);
    loss_under_traffic(&app, &posts, tokens, || {
        losses::delete_stats(&store, &posts[..5])
    })
    .await;
    assert!(repairs(&app, "post_version").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_hash_nobody_rates_any_more_is_found_by_the_audit() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 3, 6).await;
    settle(&app, &posts, tokens).await;
    let store = losses::store(&app.settings);
    losses::delete_stats(&store, &posts[..1]).await;
    assert_eq!(
        app.get_post(posts[0], None).await["rating_count"],
        0,
        "the loss is visible until the audit finds it"
    );
    app.wait_exact(&posts, HEALED_WITHIN).await;
    assert!(repairs(&app, "audit_lost").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_stat_is_never_shown_and_is_repaired() {
    let mut settings = test_settings();
    losses::quick_healing(&mut settings);
    // No audit: the reader's own sighting must be enough.
    settings.heal.audit_interval = Duration::ZERO;
    let app = TestApp::with_settings(settings).await;
    let (posts, tokens) = posts_and_raters(&app, 2, 4).await;
    for t in &tokens {
        let res = app
            .client
            .put(app.url(&format!("/api/v1/posts/{}/rating", posts[0])))
            .bearer_auth(t)
            .json(&serde_json::json!({ "score": 4 }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    app.wait_idle().await;
    app.assert_exact(posts[0]).await;
    let store = losses::store(&app.settings);
    losses::set_stat(&store, posts[0], "c", -5).await;
    // Shown without stats, never as -5, until the repair puts the truth back.
    let (app_ref, post) = (&app, posts[0]);
    wait_until(
        "the impossible stat repaired",
        HEALED_WITHIN,
        || async move {
            let got: Value = app_ref.get_post(post, None).await;
            let count = &got["rating_count"];
            assert!(count.is_null() || count == 4, "shown: {got}");
            count == 4
        },
    )
    .await;
    app.assert_exact(posts[0]).await;
    assert!(repairs(&app, "impossible").await > 0.0);
    // A disabled audit is no task at all, not one that stops and is restarted.
    let restarts = app
        .metric("post_rate_task_restarts_total{task=\"audit\"}")
        .await;
    assert_eq!(restarts, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_deleted_in_sql_are_found_by_the_audit() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 4, 8).await;
    settle(&app, &posts, tokens).await;
    // An operator removes ratings by hand: no event tells the stats.
    let deleted = diesel::sql_query("DELETE FROM ratings WHERE post_id = $1")
        .bind::<diesel::sql_types::BigInt, _>(posts[1])
        .execute(&mut app.db().await)
        .await
        .unwrap();
    assert!(deleted > 0);
    app.wait_exact(&posts, HEALED_WITHIN).await;
    assert!(app.metric("post_rate_stats_audit_drift_total").await > 0.0);
    assert_eq!(app.get_post(posts[1], None).await["rating_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_ahead_of_the_relay_is_repaired_and_new_ratings_count() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 4, 8).await;
    let store = losses::store(&app.settings);
    loss_under_traffic(&app, &posts, tokens, || async {
        // Redis from another history: every partition's fence far ahead.
        for part in 0..12 {
            let key = store.fence_key(part);
            store
                .with_conn(|mut conn| async move {
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(1_000_000_000)
                        .query_async(&mut conn)
                        .await?;
                    Ok(())
                })
                .await
                .unwrap();
        }
    })
    .await;
    assert!(repairs(&app, "fence_ahead").await > 0.0);
}

/// Events stamped before post versions existed (format 1, no `post_versions` rows) are
/// counted by a repair of their posts, not lost and not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_versions_existed_drain_exactly() {
    let mut settings = test_settings();
    losses::quick_healing(&mut settings);
    settings.run_relay = false;
    let mut writer = TestApp::with_settings(settings.clone()).await;
    let (posts, tokens) = posts_and_raters(&writer, 3, 6).await;
    let traffic = Traffic::start(vec![writer.base.clone()], posts.clone(), tokens);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(traffic.stop().await.server_errors, 0);
    // Stamp the outbox as an older relay did: format 1 payloads, no post versions.
    let mut conn = writer.db().await;
    let batch = outbox::stamp(
        &mut conn,
        settings.kafka_partitions,
        100_000,
        &post_rate::events::wire::Codec,
    )
    .await
    .unwrap()
    .expect("events to stamp");
    let old: Vec<u8> = batch
        .events
        .iter()
        .flat_map(RatingEvent::encode_format_1)
        .collect();
    diesel::sql_query("UPDATE relay_batches SET payload = $1 WHERE id = $2")
        .bind::<diesel::sql_types::Binary, _>(&old)
        .bind::<diesel::sql_types::BigInt, _>(batch.id)
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("DELETE FROM post_versions")
        .execute(&mut conn)
        .await
        .unwrap();
    writer.stop().await;
    settings.run_relay = true;
    let app = TestApp::with_settings(settings).await;
    app.wait_idle().await;
    app.wait_exact(&posts, HEALED_WITHIN).await;
    assert!(repairs(&app, "legacy_event").await > 0.0);
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Waits until `/readyz` (a snapshot up to a second old) satisfies `want`; returns it.
async fn readyz_until(app: &TestApp, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + HEALED_WITHIN;
    loop {
        let (status, body) = readyz(app).await;
        assert_eq!(status, 200, "still ready: {body}");
        if want(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_store_under_repair_and_stays_ready() {
    let app = app().await;
    let (posts, tokens) = posts_and_raters(&app, 2, 4).await;
    settle(&app, &posts, tokens).await;
    // Holding the stamp lock (as a long reconcile does) keeps the next repair waiting.
    let mut lock = app.db().await;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(post_rate::db::locks::STAMP)
        .execute(&mut lock)
        .await
        .unwrap();
    losses::delete_stats(&losses::store(&app.settings), &posts).await;
    let body = readyz_until(&app, "the repair is named", |b| {
        b["checks"]["stats"]["status"] == "degraded"
    })
    .await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["stats"]["repairing"], true);
    drop(lock);
    readyz_until(&app, "ready again once repaired", |b| {
        b["status"] == "ready"
    })
    .await;
    app.wait_exact(&posts, HEALED_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_stuck_pipeline_and_stays_ready() {
    let mut settings = test_settings();
    losses::quick_healing(&mut settings);
    settings.run_relay = false;
    settings.heal.pipeline_stuck = Duration::from_secs(1);
    let app = TestApp::with_settings(settings).await;
    let (posts, tokens) = posts_and_raters(&app, 1, 1).await;
    let res = app
        .client
        .put(app.url(&format!("/api/v1/posts/{}/rating", posts[0])))
        .bearer_auth(&tokens[0])
        .json(&serde_json::json!({ "score": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = readyz_until(&app, "the stuck pipeline is named", |b| {
        let stuck = b["checks"]["pipeline"]["stuck"].as_str().unwrap_or("");
        stuck.contains("no relay leads") && stuck.contains("events wait undelivered")
    })
    .await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["pipeline"]["status"], "degraded");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
}
