//! The stats consumer loop: read a batch, hand it to `apply` (while the next batch is read),
//! and only then store and commit its offsets; commit again on revoke and on shutdown.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::ClientContext;
use tokio_util::sync::CancellationToken;

use super::KafkaError;
use crate::model::RatingEvent;
use batch::Batch;
pub use config::{ConsumerConfig, ConsumerStats};

mod batch;
mod config;

/// How long a consumer stopping before its first assignment waits for it (see `run_consumer`).
const JOIN_BEFORE_LEAVING: Duration = Duration::from_secs(6);

/// First and largest pause between attempts to apply a batch that failed.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
