//! The rating-events topic as other services see it: JSON `rating.changed` events that a
//! client that is not ours (confluent-kafka, from Python) reads and checks against
//! docs/rating-event.schema.json; and a topic and an outbox holding records of the earlier
//! binary format, which drain exactly during a rolling upgrade.

use std::path::Path;
use std::time::Duration;

use diesel_async::RunQueryDsl;
use post_rate::db::outbox;
use post_rate::events::{kafka, wire};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::broker::brokers;
use crate::common::TestApp;
use crate::service::{kafka_settings, EXACT_WITHIN};

/// Reads `count` messages of `topic` with tests/kafka/read_topic.py (confluent-kafka), which
/// fails on any message that breaks the documented contract; returns them in topic order per
/// partition as `{key, headers, value}`.
async fn outside_reader(topic: &str, count: usize) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(root.join("tests/kafka/read_topic.py"))
        .arg(brokers())
        .arg(topic)
        .arg(count.to_string())
        .arg(root.join("docs/rating-event.schema.json"))
        .arg("40")
        .output()
        .await
        .expect("run python3 (scripts/test installs confluent-kafka and jsonschema)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the outside reader failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_service_reads_every_change_as_documented_json() {
    let settings = kafka_settings(brokers());
    let topic = settings.kafka_topic.clone();
    let mut app = TestApp::with_settings(settings).await;
    let author = app.register("author").await;
    let (ann, bob) = (app.register("ann").await, app.register("bob").await);
    let post = app.create_post(&author, "read me elsewhere").await;
    let rating = format!("/api/v1/posts/{post}/rating");
    for (user, score) in [(&ann, 4), (&ann, 1)] {
        assert_eq!(app.rate(user, post, score).await.status(), StatusCode::OK);
    }
    let res = app
        .request(Method::DELETE, &rating, Some(&ann.token), None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for (user, score) in [(&bob, 5), (&ann, 4)] {
        assert_eq!(app.rate(user, post, score).await.status(), StatusCode::OK);
    }
    app.wait_idle().await;
    app.wait_exact(&[post], EXACT_WITHIN).await;

    let messages = outside_reader(&topic, 5).await;
    let said: Vec<Value> = messages
        .iter()
        .map(|m| {
            let v = &m["value"];
            json!([
                v["user_id"],
                v["score"],
                v["previous_score"],
                v["weight"],
                v["previous_weight"]
            ])
        })
        .collect();
    assert_eq!(
        said,
        vec![
            json!([ann.id, 4, null, 1000, null]),
            json!([ann.id, 1, 4, 1000, 1000]),
            json!([ann.id, null, 1, null, 1000]),
            json!([bob.id, 5, null, 1000, null]),
            json!([ann.id, 4, null, 1000, null]),
        ]
    );
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["key"], json!(post.to_string()));
        assert_eq!(m["headers"]["event_type"], "rating.changed");
        assert_eq!(m["value"]["post_id"], json!(post));
        assert_eq!(m["value"]["post_version"], json!(i + 1));
    }
    let mut ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["value"]["event_id"].as_str())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one event id per change");
    app.stop().await;
    kafka::delete_topic(brokers(), &topic).await.unwrap();
}

/// A rolling upgrade: the topic already holds events an earlier release published (binary
/// format 2), and the outbox holds a change an earlier release wrote (deltas only). Both
/// drain into exact stats next to the new JSON events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_and_an_outbox_with_records_of_the_earlier_format_drain_exactly() {
    let settings = kafka_settings(brokers());
    let topic = settings.kafka_topic.clone();
    let mut writer_settings = settings.clone();
    writer_settings.run_relay = false;
    writer_settings.run_consumer = false;
    let mut writer = TestApp::with_settings(writer_settings).await;
    let author = writer.register("author").await;
    let raters = [
        writer.register("rater1").await,
        writer.register("rater2").await,
    ];
    let posts = [
        writer.create_post(&author, "a").await,
        writer.create_post(&author, "b").await,
    ];
    for (i, r) in raters.iter().enumerate() {
        for (j, &post) in posts.iter().enumerate() {
            let score = ((i + 2 * j) % 6) as i64;
            assert_eq!(writer.rate(r, post, score).await.status(), StatusCode::OK);
        }
    }
    // The earlier release's relay: stamps and publishes format 2 binary, then deletes.
    kafka::ensure_topic(brokers(), &topic, settings.kafka_partitions)
        .await
        .unwrap();
    let mut conn = writer.db().await;
    let batch = outbox::stamp(&mut conn, settings.kafka_partitions, 1000, &wire::Codec)
        .await
        .unwrap()
        .expect("stamped");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for e in &batch.events {
        let key = e.post_id.to_string();
        let payload = e.encode_format_2();
        let record = FutureRecord::to(&topic)
            .partition(e.partition)
            .key(&key)
            .payload(&payload);
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }
    outbox::delete_batch(&mut conn, batch.id).await.unwrap();
    // The earlier release's write path: an outbox row with only the deltas.
    assert_eq!(
        writer.rate(&raters[0], posts[0], 5).await.status(),
        StatusCode::OK
    );
    diesel::sql_query(
        "UPDATE rating_events SET user_id = NULL, score = NULL, prev_score = NULL,
             weight = NULL, prev_weight = NULL",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    writer.stop().await;

    // The new release takes over: relay and consumer.
    let mut app = TestApp::with_settings(settings).await;
    assert_eq!(
        app.rate(&raters[1], posts[1], 0).await.status(),
        StatusCode::OK
    );
    app.wait_idle().await;
    app.wait_exact(&posts, EXACT_WITHIN).await;
    // The second post has two binary events and one JSON event, none of them legacy: all
    // three are applied as they come. (The first post's binary events may be repaired with
    // its legacy change, when one batch holds them all.)
    assert!(
        app.metric("post_rate_events_applied_total").await >= 3.0,
        "the binary events were applied, not repaired"
    );
    assert!(
        app.metric("post_rate_stats_repairs_total{cause=\"legacy_event\"}")
            .await
            >= 1.0,
        "the change without a user or weights was repaired from PostgreSQL"
    );
    app.stop().await;
    kafka::delete_topic(brokers(), &topic).await.unwrap();
}
