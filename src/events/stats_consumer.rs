//! The stats consumer as the service runs it: the Kafka consumer loop with the fenced Redis
//! apply as its callback, restarted with backoff when the broker fails it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::events::kafka::{ensure_topic, run_consumer, ConsumerConfig, ConsumerStats};
use crate::metrics::Metrics;
use crate::model::RatingEvent;
use crate::stats::StatsStore;

pub struct StatsConsumer {
    pub config: ConsumerConfig,
    pub partitions: i32,
    pub store: StatsStore,
    pub metrics: Arc<Metrics>,
}

impl StatsConsumer {
    pub fn new(
        settings: &Settings,
        brokers: &str,
        store: StatsStore,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut config =
            ConsumerConfig::new(brokers, &settings.kafka_topic, &settings.kafka_group_id);
        config.batch_max = settings.consumer_batch_size;
        config.batch_wait_ms = settings.consumer_batch_wait.as_millis() as u64;
        config.session_timeout_ms = settings.kafka_session_timeout.as_millis() as u64;
        config.max_poll_interval_ms = settings.kafka_max_poll_interval.as_millis() as u64;
        StatsConsumer {
            config,
            partitions: settings.kafka_partitions,
            store,
            metrics,
        }
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.config.stats.clone()
    }

    /// Consumes until `shutdown`, then commits what was applied.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            // Subscribing to a topic the broker does not have would wait for nothing.
            let ready =
                ensure_topic(&self.config.brokers, &self.config.topic, self.partitions).await;
            let result = match ready {
                Ok(_) => {
                    let store = self.store.clone();
                    let metrics = self.metrics.clone();
                    let apply = move |events: Vec<RatingEvent>| {
                        let store = store.clone();
                        let metrics = metrics.clone();
                        async move {
                            let report = store.apply(&events).await.inspect_err(|_| {
                                metrics.redis_errors.inc();
                            })?;
                            metrics.consumer_batch_size.observe(events.len() as f64);
                            metrics.applied(&report, &events);
                            Ok::<(), crate::stats::StatsError>(())
                        }
                    };
                    run_consumer(self.config.clone(), apply, shutdown.clone())
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    log::warn!("stats consumer: {e}; restarting in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
