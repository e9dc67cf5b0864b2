//! Test helpers: a real Tansu broker started by scripts/kafka-broker, unique names, waiting.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use post_rate::events::kafka::{self, ConsumerConfig, ConsumerStats};
use post_rate::model::{Change, RatingEvent};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::common::wait_until;

/// Everything a test may wait for (group assignment, a rebalance, delivery) gets this long.
pub const WAIT: Duration = Duration::from_secs(15);

/// Runs scripts/kafka-broker with `args` for the broker on `port`; panics when it fails.
pub fn broker_script(port: u16, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker");
    let status = Command::new(script)
        .args(args)
        .env("KAFKA_PORT", port.to_string())
        .status()
        .expect("run scripts/kafka-broker");
    assert!(status.success(), "scripts/kafka-broker {args:?} failed");
}

/// The shared test broker: `KAFKA_BROKERS` if set, else a Tansu on 127.0.0.1:9092 that the
/// script starts once per test binary (a no-op when it already runs).
pub fn brokers() -> &'static str {
    let _ = env_logger::builder().is_test(true).try_init();
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| match std::env::var("KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => b,
        _ => {
            broker_script(9092, &["start"]);
            "127.0.0.1:9092".to_owned()
        }
    })
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh topic for one test; the test deletes it with `cleanup` (Drop cannot await).
pub struct TestTopic {
    pub name: String,
    pub partitions: i32,
}

impl TestTopic {
    pub async fn new(partitions: i32) -> TestTopic {
        let name = unique("rating-events-test");
        let actual = kafka::ensure_topic(brokers(), &name, partitions)
            .await
            .unwrap();
        assert_eq!(actual, partitions);
        TestTopic { name, partitions }
    }

    pub async fn cleanup(self) {
        kafka::delete_topic(brokers(), &self.name).await.unwrap();
    }
}

/// `count` events for `partition`, with sequences `first_seq..`, post ids spread over 50 posts.
pub fn events(partition: i32, first_seq: i64, count: usize) -> Vec<RatingEvent> {
    (0..count as i64)
        .map(|i| {
            let seq = first_seq + i;
            let change = Change {
                event_id: seq,
                user_id: Some(seq),
                score: Some((seq % 6) as i16),
                previous_score: None,
                weight: Some(1000),
                previous_weight: None,
            };
            RatingEvent {
                partition,
                seq,
                post_id: 1000 + seq % 50,
                version: seq,
                committed_ms: 1_764_000_000_000 + seq,
                delta: change.delta(),
                change: Some(change),
            }
        })
        .collect()
}

/// Events for every partition, interleaved round-robin like a relay batch would be.
pub fn interleaved(partitions: i32, per_partition: usize, first_seq: i64) -> Vec<RatingEvent> {
    let mut out = Vec::with_capacity(partitions as usize * per_partition);
    for i in 0..per_partition as i64 {
        for p in 0..partitions {
            out.extend(events(p, first_seq + i, 1));
        }
    }
    out
}

pub fn consumer_config(topic: &str, group: &str) -> ConsumerConfig {
    let mut cfg = ConsumerConfig::new(brokers(), topic, group);
    cfg.batch_max = 500;
    cfg.batch_wait_ms = 50;
    cfg.client_id = unique("test-consumer");
    cfg
}

/// [`wait_until`] for a condition that needs no I/O, with the transport tests' `WAIT`.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    wait_until(what, WAIT, || std::future::ready(done())).await;
}

/// A running `run_consumer` that records every batch it applied.
pub struct Running {
    pub stats: Arc<ConsumerStats>,
    pub batches: Arc<Mutex<Vec<Vec<RatingEvent>>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a consumer whose apply records the batch and succeeds.
    pub fn start(cfg: ConsumerConfig) -> Running {
        Self::start_with(cfg, |_| async { Ok::<(), String>(()) })
    }

    /// Starts a consumer whose apply runs `check` first and records the batch only on `Ok`.
    pub fn start_with<F, Fut>(cfg: ConsumerConfig, mut check: F) -> Running
    where
        F: FnMut(Vec<RatingEvent>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let stats = cfg.stats.clone();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let recorded = batches.clone();
        let apply = move |events: Vec<RatingEvent>| {
            let checked = check(events.clone());
            let recorded = recorded.clone();
            async move {
                checked.await?;
                recorded.lock().unwrap().push(events);
                Ok::<(), String>(())
            }
        };
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            kafka::run_consumer(cfg, apply, token).await.unwrap();
        });
        Running {
            stats,
            batches,
            shutdown,
            task,
        }
    }

    pub fn applied(&self) -> Vec<RatingEvent> {
        recorded(&self.batches)
    }

    pub fn assigned(&self) -> u64 {
        self.stats.assigned_partitions.load(Ordering::Relaxed)
    }

    /// Cancels the consumer and waits for its final commit.
    pub async fn stop(self) -> Vec<RatingEvent> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("consumer stops")
            .unwrap();
        recorded(&self.batches)
    }
}

/// Every event of the recorded batches, in the order they were applied.
fn recorded(batches: &Mutex<Vec<Vec<RatingEvent>>>) -> Vec<RatingEvent> {
    batches.lock().unwrap().iter().flatten().copied().collect()
}

/// The group's committed offset for each partition (None when nothing is committed).
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = client
            .committed_offsets(tpl, Duration::from_secs(5))
            .unwrap();
        (0..partitions)
            .map(
                |p| match got.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect()
    })
    .await
    .unwrap()
}

/// Asserts that for every partition the events carry sequences `first..first+n` in order.
pub fn assert_partition_order(events: &[RatingEvent], partitions: i32, first: i64, n: usize) {
    for p in 0..partitions {
        let seqs: Vec<i64> = events
            .iter()
            .filter(|e| e.partition == p)
            .map(|e| e.seq)
            .collect();
        let expected: Vec<i64> = (first..first + n as i64).collect();
        assert_eq!(seqs, expected, "partition {p}");
    }
}
