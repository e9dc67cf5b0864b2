//! Transport tests against a real Tansu broker (scripts/kafka-broker starts it when needed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::*;
use post_rate::events::kafka::{self, Publisher, PublisherConfig};
use post_rate::model::RatingEvent;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_consumes_every_event_in_partition_order() {
    let topic = TestTopic::new(4).await;
    let publisher = Publisher::new(brokers(), &topic.name).unwrap();
    // Three relay batches of 4 x 250 events each.
    for b in 0..3 {
        let batch = interleaved(4, 250, 1 + b * 250);
        publisher.publish(&batch).await.unwrap();
    }

    let group = unique("group");
    let consumer = Running::start(consumer_config(&topic.name, &group));
    wait_for("3000 events", || consumer.applied().len() >= 3000).await;
    let seen = consumer.stop().await;

    assert_eq!(seen.len(), 3000);
    assert_partition_order(&seen, 4, 1, 750);
    assert_eq!(
        committed(&group, &topic.name, 4).await,
        vec![Some(750); 4],
        "shutdown commits every applied batch"
    );
    topic.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_apply_is_retried_and_nothing_is_committed_before_it_succeeds() {
    let topic = TestTopic::new(1).await;
    let publisher = Publisher::new(brokers(), &topic.name).unwrap();
    publisher.publish(&events(0, 1, 10)).await.unwrap();

    let group = unique("group");
    let mut cfg = consumer_config(&topic.name, &group);
    // All ten events are in the broker before the consumer starts: one batch.
    cfg.batch_wait_ms = 500;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen_calls = calls.clone();
    let (g, t) = (group.clone(), topic.name.clone());
    let consumer = Running::start_with(cfg, move |events| {
        let (calls, g, t) = (seen_calls.clone(), g.clone(), t.clone());
        async move {
            let committed_before = committed(&g, &t, 1).await[0];
            let mut calls = calls.lock().unwrap();
            calls.push((events, committed_before));
            if calls.len() <= 2 {
                Err(format!("redis unavailable (attempt {})", calls.len()))
            } else {
                Ok(())
            }
        }
    });
    wait_for("the batch to be applied", || consumer.applied().len() >= 10).await;
    let stats = consumer.stats.clone();
    let seen = consumer.stop().await;

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "two failures, then one success");
    for (events, committed_before) in &calls {
        assert_eq!(events, &calls[0].0, "the same batch is retried");
        assert_eq!(*committed_before, None, "nothing committed before success");
    }
    assert_eq!(seen, events(0, 1, 10));
    assert_eq!(stats.apply_failures.load(Ordering::Relaxed), 2);
    assert_eq!(committed(&group, &topic.name, 1).await, vec![Some(10)]);
    topic.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_consumer_resumes_after_the_committed_offset() {
    let topic = TestTopic::new(2).await;
    let publisher = Publisher::new(brokers(), &topic.name).unwrap();
    let group = unique("group");

    // First consumer applies batch A, then cannot apply batch B until it is stopped.
    let failing = Arc::new(AtomicUsize::new(0));
    let fail = failing.clone();
    let first = Running::start_with(consumer_config(&topic.name, &group), move |_| {
        let fail = fail.clone();
        async move {
            if fail.load(Ordering::Relaxed) > 0 {
                fail.fetch_add(1, Ordering::Relaxed);
                return Err("redis unavailable".to_owned());
            }
            Ok(())
        }
    });
    publisher.publish(&interleaved(2, 5, 1)).await.unwrap();
    wait_for("batch A", || first.applied().len() >= 10).await;
    wait_for("A committed", || {
        first.stats.commits.load(Ordering::Relaxed) > 0
    })
    .await;
    failing.store(1, Ordering::Relaxed);
    publisher.publish(&interleaved(2, 5, 6)).await.unwrap();
    wait_for("a failed apply of B", || {
        failing.load(Ordering::Relaxed) > 1
    })
    .await;
    let applied_by_first = first.stop().await;
    assert_partition_order(&applied_by_first, 2, 1, 5);
    assert_eq!(committed(&group, &topic.name, 2).await, vec![Some(5); 2]);

    // The second member of the group gets B (never applied) and not A (committed).
    let second = Running::start(consumer_config(&topic.name, &group));
    wait_for("batch B", || second.applied().len() >= 10).await;
    // Anything re-delivered past B would show up within a few more batch windows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied_by_second = second.stop().await;
    assert_partition_order(&applied_by_second, 2, 6, 5);
    assert_eq!(committed(&group, &topic.name, 2).await, vec![Some(10); 2]);
    topic.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_of_one_group_split_the_partitions() {
    let topic = TestTopic::new(4).await;
    let group = unique("group");
    let publisher = Publisher::new(brokers(), &topic.name).unwrap();
    let a = Running::start(consumer_config(&topic.name, &group));
    wait_for("first member owns all", || a.assigned() == 4).await;
    publisher.publish(&interleaved(4, 100, 1)).await.unwrap();
    wait_for("the first 400 events", || a.applied().len() >= 400).await;

    // The rebalance revokes everything from `a`, which commits what it applied first: the
    // new owners must not see those 400 again.
    let b = Running::start(consumer_config(&topic.name, &group));
    wait_for("the rebalance", || {
        a.assigned() > 0 && b.assigned() > 0 && a.assigned() + b.assigned() == 4
    })
    .await;
    publisher.publish(&interleaved(4, 100, 101)).await.unwrap();
    wait_for("800 events", || {
        a.applied().len() + b.applied().len() >= 800
    })
    .await;
    // Any redelivery would arrive within a few more batch windows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (from_a, from_b) = (a.stop().await, b.stop().await);

    let second_round = |evs: &[RatingEvent]| {
        let mut p: Vec<i32> = evs
            .iter()
            .filter(|e| e.seq > 100)
            .map(|e| e.partition)
            .collect();
        p.sort();
        p.dedup();
        p
    };
    let (pa, pb) = (second_round(&from_a), second_round(&from_b));
    assert!(!pa.is_empty() && !pb.is_empty(), "both members got work");
    assert!(
        pa.iter().all(|p| !pb.contains(p)),
        "{pa:?} and {pb:?} overlap"
    );
    assert!(
        from_b.iter().all(|e| e.seq > 100),
        "b re-read applied events"
    );
    let mut all: Vec<_> = from_a.clone();
    all.extend(from_b.iter().copied());
    assert_eq!(all.len(), 800, "every event exactly once");
    // Per partition: a's events (1..=100, maybe more) then b's, each in order.
    all.sort_by_key(|e| (e.partition, e.seq));
    assert_partition_order(&all, 4, 1, 200);
    for evs in [&from_a, &from_b] {
        for p in 0..4 {
            let seqs: Vec<i64> = evs
                .iter()
                .filter(|e| e.partition == p)
                .map(|e| e.seq)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "partition {p} out of order"
            );
        }
    }
    assert_eq!(committed(&group, &topic.name, 4).await, vec![Some(200); 4]);
    topic.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_is_skipped_counted_and_committed_past() {
    let topic = TestTopic::new(1).await;
    let publisher = Publisher::new(brokers(), &topic.name).unwrap();
    publisher.publish(&events(0, 1, 2)).await.unwrap();
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    raw.send(
        FutureRecord::to(&topic.name)
            .partition(0)
            .key("7")
            .payload("{\"not\": \"an event\"}"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    publisher.publish(&events(0, 3, 2)).await.unwrap();

    let group = unique("group");
    let consumer = Running::start(consumer_config(&topic.name, &group));
    wait_for("the valid events", || consumer.applied().len() >= 4).await;
    wait_for("the skip counted", || {
        consumer.stats.undecodable.load(Ordering::Relaxed) == 1
    })
    .await;
    let seen = consumer.stop().await;
    assert_eq!(seen, events(0, 1, 4));
    assert_eq!(committed(&group, &topic.name, 1).await, vec![Some(5)]);
    topic.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topic_recreates_a_lost_topic() {
    let topic = TestTopic::new(3).await;
    assert_eq!(
        kafka::ensure_topic(brokers(), &topic.name, 3)
            .await
            .unwrap(),
        3,
        "an existing topic is fine"
    );
    kafka::delete_topic(brokers(), &topic.name).await.unwrap();
    assert_eq!(
        kafka::ensure_topic(brokers(), &topic.name, 3)
            .await
            .unwrap(),
        3
    );
    let publisher = Publisher::new(brokers(), &topic.name).unwrap();
    publisher.publish(&interleaved(3, 2, 1)).await.unwrap();
    topic.cleanup().await;
}

/// Stops the outage test's private broker even when an assertion fails.
struct PrivateBroker(u16);

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        broker_script(self.0, &["stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_broker_fails_publish_within_the_timeout_and_recovers() {
    // Its own broker: pausing the shared one would stall the other tests.
    let port = 19_193;
    broker_script(port, &["start"]);
    let _guard = PrivateBroker(port);
    let brokers = format!("127.0.0.1:{port}");
    let topic = unique("outage");
    assert_eq!(kafka::ensure_topic(&brokers, &topic, 2).await.unwrap(), 2);
    let mut cfg = PublisherConfig::new(&brokers, &topic);
    cfg.message_timeout_ms = 2_000;
    let publisher = Publisher::with_config(cfg).unwrap();
    publisher.publish(&interleaved(2, 5, 1)).await.unwrap();

    broker_script(port, &["pause"]);
    let start = Instant::now();
    let result = publisher.publish(&interleaved(2, 5, 6)).await;
    let took = start.elapsed();
    broker_script(port, &["resume"]);
    let err = result.expect_err("publishing to a paused broker fails");
    assert!(
        took < Duration::from_millis(2_000 + 1_500),
        "the error came after {took:?}"
    );
    eprintln!("paused broker: {err} after {took:?}");

    // The relay republishes the whole batch; after the resume it goes through.
    publisher.publish(&interleaved(2, 5, 6)).await.unwrap();
    kafka::delete_topic(&brokers, &topic).await.unwrap();
}
