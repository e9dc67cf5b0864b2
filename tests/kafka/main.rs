//! Tests on a real Kafka-protocol broker (Tansu, started by scripts/kafka-broker): the
//! transport alone, and the whole service with KAFKA_BROKERS set.

mod broker;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod events;
mod heal;
mod pipeline;
mod service;
mod transport;
