//! The consumer's settings (and the librdkafka configuration they make) and its counters.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rdkafka::ClientConfig;

/// `fetch.queue.backoff.ms`; see [`ConsumerConfig::client_config`].
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    /// A batch closes after this many messages...
    pub batch_max: usize,
    /// ...or this long after its first message arrived, whichever comes first.
    pub batch_wait_ms: u64,
    pub client_id: String,
    /// How long the group waits for a silent member (e.g. one killed with SIGKILL) before its
    /// partitions move to the others (`session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// `max.poll.interval.ms`, which is also the rebalance timeout the member announces: how
    /// long a rebalance may wait for members to rejoin. Some brokers (Tansu) wait that long
    /// for a member that died in the middle of joining, so it bounds a stalled group. A batch
    /// whose apply keeps failing for longer makes this member leave the group; it rejoins
    /// when the consumer is restarted, and the fence drops what is read twice.
    pub max_poll_interval_ms: u64,
    /// `fetch.wait.max.ms`: how long the broker may hold a fetch that has no new data.
    pub fetch_wait_ms: u64,
    /// Counters the loop updates; share the `Arc` with /metrics and readiness.
    pub stats: Arc<ConsumerStats>,
}

impl ConsumerConfig {
    /// The librdkafka settings of this consumer except `client.id`: a raw consumer that
    /// wants to read the topic the same way (loadgen's `consume-raw`) starts from them.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            // Offsets move only when the loop says so, after `apply` succeeded.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning: events published before the first
            // consumer joined still count.
            .set("auto.offset.reset", "earliest")
            // No transactions are used; Tansu's PostgreSQL storage also fails read_committed.
            .set("isolation.level", "read_uncommitted")
            // A fetch returns after this long even with no new data. The default (500 ms) is
            // what a broker that holds fetches until the deadline (Tansu does) adds to every
            // event's way into Redis; a few ms keep the commit-to-Redis lag low at the cost
            // of more, tiny fetch requests when idle.
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            // When the local queue is full librdkafka postpones the next fetch by this much
            // (default 1,000 ms). The loop empties the queue in batches and then waits for
            // Redis, so with the default it read a backlog at ~150k events/s while fetching
            // idled; a short backoff refills the queue during the apply.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval_ms.to_string(),
            );
        config
    }

    pub fn new(brokers: &str, topic: &str, group_id: &str) -> Self {
        ConsumerConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group_id: group_id.to_owned(),
            batch_max: 20_000,
            batch_wait_ms: 50,
            client_id: "post-rate-stats".to_owned(),
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 30_000,
            fetch_wait_ms: 10,
            stats: Arc::default(),
        }
    }
}

/// What the consumer has done so far. Monotonic counters except `assigned_partitions`.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Batches `apply` accepted.
    pub batches: AtomicU64,
    /// Events in those batches.
    pub applied: AtomicU64,
    /// Messages skipped because their payload was not a valid event.
    pub undecodable: AtomicU64,
    /// Failed `apply` calls (each is retried).
    pub apply_failures: AtomicU64,
    /// Offset commits started per batch (async) or completed on revoke/shutdown (sync), and
    /// commits that failed.
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub rebalances: AtomicU64,
    /// Partitions this member owns now.
    pub assigned_partitions: AtomicU64,
}
