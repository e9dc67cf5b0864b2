//! The outbox relay: one leader at a time (a session advisory lock on its own connection)
//! stamps outbox rows with gap-free per-partition sequences and per-post versions, hands
//! them to the sink, waits for the sink to acknowledge, then deletes them. A crashed
//! leader's stamped rows are delivered again, in order, by the next; the stats store's fence
//! drops the duplicates. A leader that fails to deliver `RELAY_MAX_FAILURES` times in a row
//! steps down for a while, so that an instance that can deliver takes the lead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use tokio_util::sync::CancellationToken;

use crate::db::{self, outbox, DbError};
use crate::events::kafka::{ensure_topic, KafkaError, Publisher, PublisherConfig};
use crate::events::wire;
use crate::metrics::Metrics;
use crate::model::RatingEvent;
use crate::stats::StatsStore;

/// Where stamped events go.
pub enum Sink {
    /// No broker: apply straight to Redis, with the same fence as the consumer.
    Embedded(StatsStore),
    /// The rating-events topic; the consumer applies them.
    Kafka(KafkaSink),
}

pub struct KafkaSink {
    pub publisher: Publisher,
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    /// Set once the topic is known to exist with enough partitions; cleared by a failure,
    /// since a broker may have lost it.
    topic_ready: AtomicBool,
}

impl KafkaSink {
    pub fn new(settings: &crate::config::Settings, brokers: &str) -> Result<Self, KafkaError> {
        let mut config = PublisherConfig::new(brokers, &settings.kafka_topic);
        config.message_timeout_ms = settings.kafka_message_timeout.as_millis() as u64;
        Ok(KafkaSink {
            publisher: Publisher::with_config(config)?,
            brokers: brokers.to_owned(),
            topic: settings.kafka_topic.clone(),
            partitions: settings.kafka_partitions,
            topic_ready: AtomicBool::new(false),
        })
    }

    async fn publish(&self, events: &[RatingEvent]) -> Result<(), String> {
        if !self.topic_ready.load(Ordering::Acquire) {
            let actual = ensure_topic(&self.brokers, &self.topic, self.partitions)
                .await
                .map_err(|e| e.to_string())?;
            if actual < self.partitions {
                return Err(format!(
                    "topic {} has {actual} partitions, fewer than KAFKA_PARTITIONS={}: \
                     add partitions to the topic or lower KAFKA_PARTITIONS",
                    self.topic, self.partitions
                ));
            }
            self.topic_ready.store(true, Ordering::Release);
        }
        let result = self.publisher.publish(events).await;
        if result.is_err() {
            // A broker that lost the topic reports it only as a timeout: check it again.
            self.topic_ready.store(false, Ordering::Release);
        }
        result.map_err(|e| e.to_string())
    }
}

impl Sink {
    async fn deliver(&self, events: &[RatingEvent], metrics: &Metrics) -> Result<(), String> {
        match self {
            Sink::Embedded(store) => {
                let report = store.apply(events).await.map_err(|e| {
                    metrics.redis_errors.inc();
                    e.to_string()
                })?;
                metrics.applied(&report, events);
                Ok(())
            }
            Sink::Kafka(kafka) => kafka.publish(events).await,
        }
    }
}

pub struct Relay {
    pub database_url: String,
    pub timeout: Duration,
    pub partitions: i32,
    pub batch_size: i64,
    pub poll: Duration,
    pub sink: Sink,
    pub metrics: Arc<Metrics>,
    /// Failed deliveries of one batch in a row before the leader steps down.
    pub max_failures: u32,
}

/// How long a stopping relay keeps delivering what is already committed.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a leader that stepped down waits before it tries to lead again: longer than a
/// follower waits between its tries, so another instance gets the lead first.
const STEP_DOWN: Duration = Duration::from_secs(5);

impl Relay {
    /// Runs until `shutdown`, then delivers what the outbox holds (for up to 5 s) and stops.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let drain = CancellationToken::new();
        let stop = {
            let drain = drain.clone();
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(DRAIN).await;
                drain.cancel();
            }
        };
        tokio::spawn(stop);
        while !drain.is_cancelled() {
            match self.lead(&shutdown, &drain).await {
                Ok(Lead::Done) => return,
                Ok(Lead::Follower) => backoff = Duration::from_secs(1),
                Ok(Lead::SteppedDown) => {
                    log::warn!(
                        "relay: {} deliveries failed in a row; giving up the lead for {STEP_DOWN:?}",
                        self.max_failures
                    );
                    backoff = STEP_DOWN;
                }
                Err(e) => {
                    self.metrics.relay_errors.inc();
                    log::warn!("relay: {e}; retrying in {backoff:?}");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn lead(
        &self,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) -> Result<Lead, DbError> {
        let mut conn = db::connect(&self.database_url, self.timeout).await?;
        if !outbox::try_lead(&mut conn).await? {
            return Ok(Lead::Follower);
        }
        log::info!("relay: leading");
        for batch in outbox::pending_batches(&mut conn, &wire::Codec).await? {
            log::info!(
                "relay: delivering {} events stamped by an earlier leader",
                batch.events.len()
            );
            match self.deliver(&mut conn, &batch, drain).await? {
                Delivered::Yes => {}
                Delivered::Draining => return Ok(Lead::Done),
                Delivered::Failing => return Ok(Lead::SteppedDown),
            }
        }
        loop {
            let Some(batch) =
                outbox::stamp(&mut conn, self.partitions, self.batch_size, &wire::Codec).await?
            else {
                if shutdown.is_cancelled() {
                    return Ok(Lead::Done);
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            };
            match self.deliver(&mut conn, &batch, drain).await? {
                Delivered::Yes => {}
                Delivered::Draining => return Ok(Lead::Done),
                Delivered::Failing => return Ok(Lead::SteppedDown),
            }
            // A full batch means more are waiting: go on at once.
            let full = batch.events.len() as i64 == self.batch_size;
            if !full && !shutdown.is_cancelled() {
                tokio::select! {
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// Delivers one stamped batch, retrying the whole batch until the sink takes it, then
    /// deletes it. The batch stays stamped when the drain deadline passes first, or when
    /// `max_failures` attempts in a row failed (for the next leader to deliver).
    async fn deliver(
        &self,
        conn: &mut AsyncPgConnection,
        batch: &outbox::Batch,
        drain: &CancellationToken,
    ) -> Result<Delivered, DbError> {
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0;
        loop {
            match self.sink.deliver(&batch.events, &self.metrics).await {
                Ok(()) => break,
                Err(e) => {
                    self.metrics.relay_errors.inc();
                    failures += 1;
                    log::warn!(
                        "relay: delivery of {} events failed ({failures} in a row): {e}",
                        batch.events.len()
                    );
                    if failures >= self.max_failures {
                        return Ok(Delivered::Failing);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = drain.cancelled() => return Ok(Delivered::Draining),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        outbox::delete_batch(conn, batch.id).await?;
        self.metrics
            .relay_published
            .inc_by(batch.events.len() as u64);
        Ok(Delivered::Yes)
    }
}

enum Lead {
    /// Another relay leads.
    Follower,
    /// Shut down after draining.
    Done,
    /// Gave up the lead after failing to deliver.
    SteppedDown,
}

enum Delivered {
    Yes,
    /// The drain deadline passed.
    Draining,
    /// Too many failures in a row.
    Failing,
}
