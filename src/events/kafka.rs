//! Kafka transport of rating events: topic setup, the relay's publisher, the stats consumer loop.
//!
//! Nothing here knows PostgreSQL or Redis: the relay hands `publish` a stamped batch, and the
//! consumer hands its `apply` callback decoded batches, committing offsets only after it succeeds.

mod admin;
mod consumer;
mod publisher;

pub use admin::{delete_topic, ensure_topic, BrokerProbe};
pub use consumer::{run_consumer, ConsumerConfig, ConsumerStats};
pub use publisher::{Publisher, PublisherConfig};

use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

/// Everything the transport can fail with. All of it is infrastructure trouble (broker down,
/// topic missing, timeouts) that callers retry or report as "Kafka unavailable". After a failed
/// `publish` the relay should call `ensure_topic` before republishing: a broker that lost the
/// topic reports it only as a delivery timeout.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client error: {0}")]
    Client(#[from] RdKafkaError),
    #[error("{op} topic {topic} failed: {code}")]
    Admin {
        op: &'static str,
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("topic {topic} did not appear in the broker's metadata within {waited_ms} ms")]
    TopicMetadata { topic: String, waited_ms: u64 },
    #[error("{failed} of {total} events were not delivered (first error: {first})")]
    Delivery {
        failed: usize,
        total: usize,
        first: RdKafkaError,
    },
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
