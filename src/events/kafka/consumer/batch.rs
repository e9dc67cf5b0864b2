//! The batch being gathered: decoded events in arrival order and the offsets they span.

use std::sync::atomic::Ordering;

use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::ConsumerStats;
use crate::model::RatingEvent;

/// The messages read but not yet applied.
#[derive(Default)]
pub(super) struct Batch {
    /// Decoded events with the partition they came from, in arrival order.
    pub(super) entries: Vec<(i32, RatingEvent)>,
    /// Highest offset read per partition, undecodable messages included (they are skipped by
    /// committing past them).
    pub(super) offsets: Vec<(i32, i64)>,
    /// Messages read, decodable or not; bounded by `batch_max`.
    pub(super) messages: usize,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.offsets.clear();
        self.messages = 0;
    }

    pub(super) fn push(&mut self, msg: &BorrowedMessage<'_>, stats: &ConsumerStats) {
        let (partition, offset) = (msg.partition(), msg.offset());
        self.messages += 1;
        // Messages arrive in runs per partition, so the last entry is almost always the one.
        match self.offsets.iter_mut().rev().find(|(p, _)| *p == partition) {
            Some((_, o)) => *o = (*o).max(offset),
            None => self.offsets.push((partition, offset)),
        }
        match msg.payload().map(crate::events::wire::decode) {
            Some(Ok(event)) => self.entries.push((partition, event)),
            Some(Err(e)) => {
                stats.undecodable.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "skipping undecodable message {}/{partition}@{offset}: {e}",
                    msg.topic()
                );
            }
            None => {
                stats.undecodable.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "skipping empty message {}/{partition}@{offset}",
                    msg.topic()
                );
            }
        }
    }

    /// Forgets everything read from `partitions` (revoked: their new owner reads it again).
    pub(super) fn drop_partitions(&mut self, partitions: &[i32]) {
        self.entries.retain(|(p, _)| !partitions.contains(p));
        self.offsets.retain(|(p, _)| !partitions.contains(p));
        // Undecodable messages of the kept partitions are no longer counted: harmless, the
        // bound only sizes batches.
        self.messages = self.entries.len();
    }

    /// The offsets to commit once the batch is applied: one past the last message read.
    pub(super) fn commit_list(&self, topic: &str) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(self.offsets.len());
        for &(partition, offset) in &self.offsets {
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
        }
        Ok(tpl)
    }
}
