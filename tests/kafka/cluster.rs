//! The run on a Redis Cluster: 3 masters, two instances through Kafka, one killed
//! with SIGKILL and restarted during 30 s of rating traffic; every post ends equal to
//! PostgreSQL's truth, keys on every master, no 5xx.

use std::time::Duration;

use post_rate::events::kafka;

use crate::broker::brokers;
use crate::common::losses::{self, Traffic};
use crate::common::{redis_cluster, TestApp, JWT_SECRET};
use crate::service::{free_port, kafka_settings, Process, EXACT_WITHIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_one_killed_and_restarted_end_exact_on_every_node() {
    let mut settings = kafka_settings(brokers());
    settings.redis_url = redis_cluster();
    settings.redis_cluster = true;
    // 12 partitions: their hash tags spread over every master.
    settings.kafka_partitions = 12;
    // The in-process app prepares the database, users and posts and checks the result; the
    // instances under test are real `post-rate serve` processes.
    let mut helper = settings.clone();
    helper.run_relay = false;
    helper.run_consumer = false;
    let app = TestApp::with_settings(helper).await;
    let author = app.register("author").await;
    let mut posts = Vec::new();
    for i in 0..24 {
        posts.push(app.create_post(&author, &format!("post {i}")).await);
    }
    let tokens = losses::quick_tokens(&app.settings.database_url, JWT_SECRET, 16).await;

    let (port_a, port_b) = (free_port(), free_port());
    let a = Process::start(&settings, port_a);
    let b = Process::start(&settings, port_b);
    a.wait_ready().await;
    b.wait_ready().await;
    a.wait_joined().await;
    b.wait_joined().await;
    let traffic = Traffic::start(vec![a.base.clone(), b.base.clone()], posts.clone(), tokens);
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let a = Process::start(&settings, port_a);
    a.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let seen = traffic.stop().await;
    assert!(seen.ok > 500, "ratings flowed: {seen:?}");
    assert_eq!(seen.server_errors, 0, "no 5xx: {seen:?}");

    app.wait_idle().await;
    app.wait_exact(&posts, EXACT_WITHIN).await;
    let store = losses::store(&app.settings);
    let per_node = store.keys_per_node().await.expect("scan");
    assert_eq!(per_node.len(), 3, "{:?}", per_node.keys());
    for (node, keys) in &per_node {
        assert!(
            keys.iter().any(|k| k.contains("stats:")),
            "stats on {node}: {keys:?}"
        );
    }
    a.kill9();
    b.kill9();
    kafka::delete_topic(brokers(), &settings.kafka_topic)
        .await
        .unwrap();
}
