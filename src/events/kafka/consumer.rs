//! The stats consumer loop: read a batch, hand it to `apply` (while the next batch is read),
//! and only then store and commit its offsets; commit again on revoke and on shutdown.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, ClientContext};
use tokio_util::sync::CancellationToken;

use super::KafkaError;
use crate::model::RatingEvent;
use batch::Batch;

mod batch;

/// How long a consumer stopping before its first assignment waits for it (see `run_consumer`).
const JOIN_BEFORE_LEAVING: Duration = Duration::from_secs(6);

/// First and largest pause between attempts to apply a batch that failed.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
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

/// Hooks librdkafka calls from inside our own `poll`, i.e. between two `recv`s of the loop,
/// never while `apply` runs.
struct BatchContext {
    stats: Arc<ConsumerStats>,
    /// Partitions revoked since the loop last looked; their unapplied messages must go.
    revoked: Mutex<Vec<i32>>,
    any_revoked: AtomicBool,
}

impl ClientContext for BatchContext {}

impl ConsumerContext for BatchContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // The stored offsets are exactly the applied batches: commit them while we still
                // own the partitions, so the next owner starts right after them.
                commit_sync(consumer, &self.stats, "revoke");
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(tpl.elements().iter().map(|e| e.partition()));
                self.any_revoked.store(true, Ordering::Release);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => log::warn!("consumer group rebalance failed: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats
            .assigned_partitions
            .store(owned as u64, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => log::info!("assigned {} partitions", tpl.count()),
            Rebalance::Revoke(tpl) => log::info!("revoked {} partitions", tpl.count()),
            Rebalance::Error(_) => {}
        }
    }
}

impl BatchContext {
    /// Removes the messages of revoked partitions from the unapplied batch: their new owner
    /// reads them again from the committed offset, and we may no longer store offsets for them.
    /// Must run before a message received after the rebalance joins the batch.
    fn drop_revoked(&self, batch: &mut Batch) {
        if !self.any_revoked.swap(false, Ordering::Acquire) {
            return;
        }
        let revoked = std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()));
        batch.drop_partitions(&revoked);
    }
}

fn is_no_offset(e: &RdKafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset)
}

/// Commits the stored offsets and waits for the broker; failures are logged (the uncommitted
/// batches are read again later and fenced off by the stats store).
fn commit_sync<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    stats: &ConsumerStats,
    when: &str,
) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            log::debug!("committed applied offsets on {when}");
        }
        Err(e) if is_no_offset(&e) => {}
        Err(e) => {
            stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!("committing applied offsets on {when} failed: {e}");
        }
    }
}

enum Gathered {
    Batch,
    Shutdown,
}

/// Consumes the topic as a member of `cfg.group_id` until `shutdown` is cancelled.
///
/// Each batch (up to `batch_max` messages, or `batch_wait_ms` after its first one) goes to
/// `apply` as decoded events in arrival order; events of one partition keep their order. Its
/// offsets are stored and committed only after `apply` returns `Ok`. When `apply` fails the
/// same batch is offered again after a growing pause, until it succeeds or shutdown comes;
/// nothing past a failed batch is ever committed. So every event reaches a successful `apply`
/// at least once, and `apply` must fence off repeats (the relay sequence does that).
///
/// On shutdown an `apply` already running is awaited (not cancelled), the applied offsets are
/// committed synchronously and the consumer leaves the group. Read but unapplied messages are
/// simply read again by whoever owns their partition next.
pub async fn run_consumer<F, Fut, E>(
    cfg: ConsumerConfig,
    apply: F,
    shutdown: CancellationToken,
) -> Result<(), KafkaError>
where
    F: FnMut(Vec<RatingEvent>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let context = BatchContext {
        stats: cfg.stats.clone(),
        revoked: Mutex::default(),
        any_revoked: AtomicBool::new(false),
    };
    let consumer: StreamConsumer<BatchContext> = cfg
        .client_config()
        .set("client.id", &cfg.client_id)
        .create_with_context(context)?;
    consumer.subscribe(&[cfg.topic.as_str()])?;
    let rebalances_before = cfg.stats.rebalances.load(Ordering::Relaxed);

    let result = consume(&consumer, &cfg, apply, &shutdown).await;

    // Leaving in the middle of the first join stalls the group on some brokers (Tansu makes
    // the next member wait until the rebalance timeout): let the join finish first. What
    // arrives meanwhile is not applied and not committed; the next owner reads it.
    if cfg.stats.rebalances.load(Ordering::Relaxed) == rebalances_before {
        let deadline = tokio::time::Instant::now() + JOIN_BEFORE_LEAVING;
        let mut stream = consumer.stream();
        while cfg.stats.rebalances.load(Ordering::Relaxed) == rebalances_before {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    // Closing waits for the broker (final commit, leaving the group): off the async workers.
    let stats = cfg.stats.clone();
    tokio::task::spawn_blocking(move || {
        commit_sync(&consumer, &stats, "shutdown");
        // Dropping leaves the group; its revoke callback commits once more (a no-op).
        drop(consumer);
    })
    .await?;
    result
}

async fn consume<F, Fut, E>(
    consumer: &StreamConsumer<BatchContext>,
    cfg: &ConsumerConfig,
    mut apply: F,
    shutdown: &CancellationToken,
) -> Result<(), KafkaError>
where
    F: FnMut(Vec<RatingEvent>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let batch_max = cfg.batch_max.max(1);
    let mut stream = consumer.stream();
    let mut gathering = Batch::default();
    // The batch being applied while the next one is read and decoded, so that Redis works on
    // one while this task works on the other. Its offsets are stored as soon as its apply
    // succeeds, before the next batch is handed over: batches still apply one at a time, in
    // order. (Partitions revoked meanwhile are re-read by their next owner; the stats store's
    // fence drops what was applied twice.)
    let mut applying: Option<Batch> = None;
    loop {
        gathering.clear();
        let events = applying
            .as_ref()
            .map(|b| b.entries.iter().map(|&(_, e)| e).collect())
            .unwrap_or_default();
        let applied = apply_until_done(&mut apply, events, &cfg.stats, shutdown);
        tokio::pin!(applied);
        let mut apply_pending = applying.is_some();
        let gathered = {
            let gather = gather(
                &mut stream,
                consumer.context(),
                &mut gathering,
                cfg,
                batch_max,
                shutdown,
            );
            tokio::pin!(gather);
            loop {
                tokio::select! {
                    ok = &mut applied, if apply_pending => {
                        apply_pending = false;
                        let done = applying.take().expect("a batch is being applied");
                        if !ok {
                            return Ok(());
                        }
                        store_and_commit(consumer, cfg, &done);
                    }
                    gathered = &mut gather => break gathered,
                }
            }
        };
        if apply_pending {
            let done = applying.take().expect("a batch is being applied");
            if !applied.await {
                return Ok(());
            }
            store_and_commit(consumer, cfg, &done);
        }
        match gathered? {
            Gathered::Shutdown => return Ok(()),
            Gathered::Batch if gathering.is_empty() => continue,
            Gathered::Batch => applying = Some(std::mem::take(&mut gathering)),
        }
    }
}

/// Applies `events` (none: a batch of only undecodable messages, committed past without an
/// apply), retrying after a growing pause until it succeeds (`true`) or shutdown comes
/// (`false`). An apply already running is never cancelled.
async fn apply_until_done<F, Fut, E>(
    apply: &mut F,
    events: Vec<RatingEvent>,
    stats: &ConsumerStats,
    shutdown: &CancellationToken,
) -> bool
where
    F: FnMut(Vec<RatingEvent>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    if events.is_empty() {
        return true;
    }
    let count = events.len();
    let mut pause = RETRY_FIRST;
    while let Err(e) = apply(events.clone()).await {
        stats.apply_failures.fetch_add(1, Ordering::Relaxed);
        log::warn!("applying a batch of {count} events failed, retrying in {pause:?}: {e}");
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.applied.fetch_add(count as u64, Ordering::Relaxed);
    true
}

/// Stores the offsets of an applied batch and starts their commit.
fn store_and_commit(consumer: &StreamConsumer<BatchContext>, cfg: &ConsumerConfig, batch: &Batch) {
    let stored = batch
        .commit_list(&cfg.topic)
        .and_then(|tpl| consumer.store_offsets(&tpl));
    if let Err(e) = stored {
        // Only when the partitions were taken away during the apply: their new owner
        // re-reads the batch and the stats store's fence drops the repeats.
        log::warn!("storing offsets of an applied batch failed: {e}");
        return;
    }
    // Async: the next batch need not wait for the broker. rdkafka 0.39 installs no
    // offset-commit callback, so a failed async commit is only logged by librdkafka
    // (COMMITFAIL); the revoke/shutdown commits are synchronous and checked.
    match consumer.commit_consumer_state(CommitMode::Async) {
        Ok(()) => {
            cfg.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if is_no_offset(&e) => {}
        Err(e) => {
            cfg.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!("starting an offset commit failed: {e}");
        }
    }
}

/// Fills `batch`: waits as long as needed for a first message, then up to `batch_wait_ms` more
/// or until `batch_max` messages.
async fn gather(
    stream: &mut MessageStream<'_, BatchContext>,
    context: &BatchContext,
    batch: &mut Batch,
    cfg: &ConsumerConfig,
    batch_max: usize,
    shutdown: &CancellationToken,
) -> Result<Gathered, KafkaError> {
    while batch.is_empty() {
        let item = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(Gathered::Shutdown),
            item = stream.next() => item,
        };
        receive(item, batch, context, &cfg.stats)?;
    }
    let deadline = tokio::time::sleep(Duration::from_millis(cfg.batch_wait_ms));
    tokio::pin!(deadline);
    while batch.messages < batch_max {
        // Biased towards the stream: while messages are ready, take them without timer work.
        let item = tokio::select! {
            biased;
            item = stream.next() => item,
            _ = &mut deadline => break,
            _ = shutdown.cancelled() => return Ok(Gathered::Shutdown),
        };
        receive(item, batch, context, &cfg.stats)?;
    }
    // A rebalance may have run in the last poll without yielding a message.
    context.drop_revoked(batch);
    Ok(Gathered::Batch)
}

fn receive(
    item: Option<KafkaResult<BorrowedMessage<'_>>>,
    batch: &mut Batch,
    context: &BatchContext,
    stats: &ConsumerStats,
) -> Result<(), KafkaError> {
    // A rebalance runs inside a poll that yields no message, so any revocation seen now
    // happened before this item: it concerns what the batch already holds, never this item
    // (which may come from the same partition, assigned again).
    context.drop_revoked(batch);
    match item {
        Some(Ok(msg)) => batch.push(&msg, stats),
        // Broker and fetch errors are reported here but librdkafka recovers from them itself.
        Some(Err(e)) => log::warn!("kafka consumer error: {e}"),
        // rdkafka documents that its message streams never end.
        None => return Err(KafkaError::Client(RdKafkaError::Canceled)),
    }
    Ok(())
}
