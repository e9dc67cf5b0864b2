//! The relay's producer: publishes a stamped batch to explicit partitions and waits for acks.
//! Each message is the event's JSON, keyed by the post id as a decimal string, with headers
//! naming its type, schema version and content type.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::KafkaError;
use crate::events::wire;
use crate::model::RatingEvent;

/// The headers every message carries.
fn headers() -> OwnedHeaders {
    let schema = wire::json::SCHEMA_VERSION.to_string();
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: wire::HEADER_EVENT_TYPE,
            value: Some(wire::json::EVENT_TYPE),
        })
        .insert(Header {
            key: wire::HEADER_SCHEMA_VERSION,
            value: Some(schema.as_str()),
        })
        .insert(Header {
            key: wire::HEADER_CONTENT_TYPE,
            value: Some(wire::CONTENT_TYPE),
        })
}

/// Producer settings. `new` gives the defaults; the fields are public for the service's config.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub brokers: String,
    pub topic: String,
    pub client_id: String,
    /// Upper bound on how long one event may wait for its ack (librdkafka `message.timeout.ms`,
    /// retries included). A down or paused broker turns into a `publish` error after this long,
    /// so the relay can back off and keep the rows in the outbox.
    pub message_timeout_ms: u64,
    /// How long librdkafka waits to fill a request before sending it (`linger.ms`).
    pub linger_ms: u64,
    /// Use the idempotent producer (5 requests in flight, broker-side dedup of retries).
    /// Off by default: Tansu accepts it until the first delivery timeout, then answers the
    /// epoch bump librdkafka makes (KIP-360) with PRODUCER_FENCED, a fatal error that leaves
    /// the producer unusable. Safe to turn on against Apache Kafka.
    pub idempotence: bool,
}

impl PublisherConfig {
    pub fn new(brokers: &str, topic: &str) -> Self {
        PublisherConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            client_id: "post-rate-relay".to_owned(),
            message_timeout_ms: 10_000,
            linger_ms: 5,
            idempotence: false,
        }
    }
}

/// Publishes rating events. Cheap to share: `publish` takes `&self`.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    message_timeout: Duration,
}

impl Publisher {
    /// A publisher with the defaults of [`PublisherConfig::new`].
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        Self::with_config(PublisherConfig::new(brokers, topic))
    }

    pub fn with_config(cfg: PublisherConfig) -> Result<Self, KafkaError> {
        let timeout_ms = cfg.message_timeout_ms.max(1);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &cfg.brokers)
            .set("client.id", &cfg.client_id)
            // An ack means every in-sync replica has the event: the relay deletes the outbox
            // row after it, so an acked event must survive a broker failure.
            .set("acks", "all")
            // The topic is created by `ensure_topic` with its partition count. Auto-creation
            // would make a wrong one, and Tansu (which forgets topics when it restarts) even
            // acks produces to a topic it only pretends to auto-create, losing the events.
            .set("allow.auto.create.topics", "false")
            // A broker that lost the topic is noticed within this interval (and publishing
            // then fails) rather than after librdkafka's default 5 minutes.
            .set("topic.metadata.refresh.interval.ms", "5000");
        // The consumer fences on the relay sequence per partition, so a partition must
        // receive events in the order they were sent, retries included.
        if cfg.idempotence {
            // The broker rejects out-of-sequence batches and librdkafka retries them in order,
            // without duplicates, with up to 5 requests in flight.
            config
                .set("enable.idempotence", "true")
                .set("max.in.flight.requests.per.connection", "5");
        } else {
            // One request in flight per broker: a retried request cannot be overtaken by the
            // next one. A retry after a lost ack may still duplicate (the fence drops it).
            config
                .set("enable.idempotence", "false")
                .set("max.in.flight.requests.per.connection", "1");
        }
        let producer: FutureProducer = config
            .set("message.timeout.ms", timeout_ms.to_string())
            // A request may not outlive the message it carries.
            .set("request.timeout.ms", timeout_ms.min(30_000).to_string())
            .set("linger.ms", cfg.linger_ms.to_string())
            .create()?;
        Ok(Publisher {
            producer,
            topic: cfg.topic,
            message_timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// Sends every event to its own `partition`, keyed by its post id, and waits for all the
    /// acks. `Ok` means every event is stored by the broker. On `Err` some may be stored and
    /// some not: the caller republishes the whole batch in order, and the consumer's sequence
    /// fence drops what arrives twice.
    ///
    /// Returns only after every event sent by this call has its delivery report, so a failed
    /// call leaves nothing in flight that could interleave with the republished batch.
    ///
    /// A failed call can leave a gap: an event that timed out while a later one of the same
    /// partition got through (no producer setting rules that out on a timeout). The republish
    /// fills it, so the consumer's fence must apply only `seq == last + 1`, drop `seq <= last`
    /// as a duplicate, and skip (not fence past) `seq > last + 1`, which will come again.
    pub async fn publish(&self, events: &[RatingEvent]) -> Result<(), KafkaError> {
        let mut pending = Vec::with_capacity(events.len());
        let mut first_error: Option<RdKafkaError> = None;
        // One key buffer for the whole batch: librdkafka copies key and payload on send.
        let mut key = String::with_capacity(20);
        let queue_deadline = Instant::now() + self.message_timeout;
        let headers = headers();

        'events: for event in events {
            key.clear();
            // Writing an integer into a String cannot fail.
            let _ = write!(key, "{}", event.post_id);
            let payload = wire::encode(event);
            let mut record = FutureRecord::to(&self.topic)
                .partition(event.partition)
                .key(key.as_str())
                .payload(&payload)
                .headers(headers.clone());
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    // The local queue is full: wait for acks to drain it, within the same
                    // bound a queued message would get.
                    Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < queue_deadline =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    // Stop sending: later events of this partition must not overtake this one.
                    Err((e, _)) => {
                        first_error = Some(e);
                        break 'events;
                    }
                }
            }
        }

        let mut failed = events.len() - pending.len();
        for delivery in pending {
            let error = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                // The producer dropped the report: the message's fate is unknown.
                Err(_) => RdKafkaError::Canceled,
            };
            failed += 1;
            first_error.get_or_insert(error);
        }
        match first_error {
            None => Ok(()),
            Some(first) => Err(KafkaError::Delivery {
                failed,
                total: events.len(),
                first,
            }),
        }
    }
}
