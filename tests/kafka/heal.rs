//! Self-healing through Kafka with two instances (the issue's own run, on a test's time
//! scale): while 60 raters rate 20 posts, Redis is rolled back, then wiped, then loses 5
//! stats hashes; every post must end equal to PostgreSQL's truth within 30 s of the
//! traffic's end, with no 5xx. And a relay leader that cannot deliver steps down.

use std::time::Duration;

use post_rate::events::kafka;

use crate::broker::brokers;
use crate::common::losses::{self, Traffic};
use crate::common::{TestApp, JWT_SECRET};
use crate::service::{kafka_settings, EXACT_WITHIN};

const HEALED_WITHIN: Duration = Duration::from_secs(30);

async fn wait_joined(app: &TestApp) {
    app.wait_metric("post_rate_consumer_rebalances_total", EXACT_WITHIN, |n| {
        n > 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_heal_a_rollback_a_wipe_and_deleted_hashes_under_traffic() {
    let mut settings = kafka_settings(brokers());
    losses::quick_healing(&mut settings);
    let topic = settings.kafka_topic.clone();
    let mut a = TestApp::with_settings(settings.clone()).await;
    let mut b = TestApp::with_settings(settings.clone()).await;
    wait_joined(&a).await;
    wait_joined(&b).await;
    let author = a.register("author").await;
    let mut posts = Vec::new();
    for i in 0..20 {
        posts.push(a.create_post(&author, &format!("post {i}")).await);
    }
    let tokens: Vec<String> = losses::quick_users(&settings.database_url, JWT_SECRET, 60)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let store = losses::store(&settings);
    let traffic = Traffic::start(vec![a.base.clone(), b.base.clone()], posts.clone(), tokens);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let earlier = losses::dump(&store).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    losses::roll_back(&store, &earlier).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(store.delete_all().await.unwrap() > 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    losses::delete_stats(&store, &posts[..5]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = traffic.stop().await;
    assert!(seen.ok > 1000, "ratings flowed: {seen:?}");
    assert_eq!(seen.server_errors, 0, "no 5xx: {seen:?}");
    a.wait_idle().await;
    a.wait_exact(&posts, HEALED_WITHIN).await;
    b.wait_exact(&posts, Duration::from_secs(1)).await;
    b.stop().await;
    a.stop().await;
    kafka::delete_topic(brokers(), &topic).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_leader_that_cannot_deliver_steps_down_for_one_that_can() {
    let settings = kafka_settings(brokers());
    let topic = settings.kafka_topic.clone();
    // The first instance leads the relay but its broker address goes nowhere.
    let mut cut_off = settings.clone();
    cut_off.kafka_brokers = Some("127.0.0.1:9".into());
    cut_off.run_consumer = false;
    cut_off.heal.relay_max_failures = 1;
    let mut a = TestApp::with_settings(cut_off).await;
    let author = a.register("author").await;
    let rater = a.register("rater").await;
    let post = a.create_post(&author, "post").await;
    assert_eq!(a.rate(&rater, post, 4).await.status(), 200);
    a.wait_metric(
        "post_rate_relay_errors_total",
        Duration::from_secs(60),
        |n| n > 0.0,
    )
    .await;
    // A second instance with a working broker takes the lead and delivers.
    let mut b = TestApp::with_settings(settings.clone()).await;
    b.wait_exact(&[post], EXACT_WITHIN).await;
    assert!(b.metric("post_rate_relay_published_total").await > 0.0);
    assert_eq!(a.metric("post_rate_relay_published_total").await, 0.0);
    b.stop().await;
    a.stop().await;
    kafka::delete_topic(brokers(), &topic).await.unwrap();
}
