//! Topic administration: create the rating-events topic when the broker lacks it, delete it.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::KafkaError;

/// How long one `ensure_topic`/`delete_topic` call may take before it reports the broker as down.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

fn admin_client(brokers: &str) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "post-rate-admin")
        .create()?)
}

/// Creates `topic` with `partitions` partitions unless it exists, and returns the partition
/// count the broker reports. Call it at start and again whenever publishing says the topic is
/// unknown: a broker with memory storage forgets its topics when it restarts.
///
/// An existing topic keeps its partition count (which may differ from `partitions`): the
/// relay must route by the count returned here, never by the configured one.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<i32, KafkaError> {
    let admin = admin_client(brokers)?;
    let opts = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    // Replication -1 asks for the broker's default.replication.factor (KIP-464), so the same
    // code gives 1 on a dev broker and 3 on a production cluster.
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) => log::info!("created topic {topic} with {partitions} partitions"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(KafkaError::Admin {
                    op: "creating",
                    topic: topic.to_owned(),
                    code,
                })
            }
        }
    }
    let actual = partition_count(admin, topic.to_owned()).await?;
    if actual != partitions {
        log::warn!("topic {topic} has {actual} partitions, not the configured {partitions}");
    }
    Ok(actual)
}

/// Reads the topic's partition count, retrying briefly: right after a create the metadata may
/// not list the topic yet.
async fn partition_count(
    admin: AdminClient<DefaultClientContext>,
    topic: String,
) -> Result<i32, KafkaError> {
    // fetch_metadata blocks its thread, so it runs off the async workers.
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len());
            match found {
                Some(n) if n > 0 => return Ok(n as i32),
                _ if start.elapsed() >= ADMIN_TIMEOUT => {
                    return Err(KafkaError::TopicMetadata {
                        topic,
                        waited_ms: start.elapsed().as_millis() as u64,
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
    .await?
}

/// Deletes `topic`; a topic that does not exist is not an error. Used by tests to clean up.
pub async fn delete_topic(brokers: &str, topic: &str) -> Result<(), KafkaError> {
    let admin = admin_client(brokers)?;
    let opts = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    for result in admin.delete_topics(&[topic], &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => {
                return Err(KafkaError::Admin {
                    op: "deleting",
                    topic: topic.to_owned(),
                    code,
                })
            }
        }
    }
    Ok(())
}

/// A long-lived client for readiness checks: its broker connections are opened once and
/// reused, instead of a new client (threads, connections) per check.
#[derive(Clone)]
pub struct BrokerProbe {
    admin: std::sync::Arc<AdminClient<DefaultClientContext>>,
}

impl BrokerProbe {
    pub fn new(brokers: &str) -> Result<Self, KafkaError> {
        Ok(BrokerProbe {
            admin: std::sync::Arc::new(admin_client(brokers)?),
        })
    }

    /// Whether the brokers answer a metadata request within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), KafkaError> {
        let admin = self.admin.clone();
        // fetch_metadata blocks its thread.
        tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(None, timeout)?;
            Ok(())
        })
        .await?
    }
}
