//! Tests on a real Kafka-protocol broker (Tansu, started by scripts/kafka-broker): the
//! transport alone, and the whole service with KAFKA_BROKERS set.

#[path = "../api/common.rs"]
mod app;
mod cluster;
mod common;
mod events;
mod heal;
#[path = "../api/losses.rs"]
mod losses;
mod pipeline;
mod transport;
