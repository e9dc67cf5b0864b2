//! Rating events on their way from the outbox to the stats: wire format, relay, consumer.

pub mod kafka;
pub mod relay;
pub mod stats_consumer;
pub mod wire;
