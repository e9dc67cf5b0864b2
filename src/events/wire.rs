//! How rating events are written on the topic and in relay batches: JSON ([`json`], what the
//! relay writes), and the binary formats of earlier releases ([`binary`], still read). A
//! payload tells its format by its first byte: `{` for JSON, a format number for binary.

pub mod binary;
pub mod json;

use crate::model::RatingEvent;

/// Kafka headers on every message: what it is, so a reader can route or skip it unread.
pub const HEADER_EVENT_TYPE: &str = "event_type";
pub const HEADER_SCHEMA_VERSION: &str = "schema_version";
pub const HEADER_CONTENT_TYPE: &str = "content_type";
pub const CONTENT_TYPE: &str = "application/json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("binary event payload of format {format} has {len} bytes")]
    Length { format: u8, len: usize },
    #[error("empty event payload")]
    Empty,
    #[error("unknown binary event format {0}")]
    Version(u8),
    #[error("not a JSON rating event: {0}")]
    Json(String),
    #[error("event type {0:?}, not rating.changed")]
    EventType(String),
    #[error("schema version {0}, this release reads 1")]
    Schema(u32),
    #[error("invalid rating event: {0}")]
    Invalid(String),
}

/// The message value of one event: JSON.
pub fn encode(event: &RatingEvent) -> Vec<u8> {
    json::encode(event)
}

/// One message value, of any format this release reads.
pub fn decode(bytes: &[u8]) -> Result<RatingEvent, DecodeError> {
    match bytes.first() {
        Some(b'{') => json::decode(bytes),
        Some(_) => RatingEvent::decode_binary(bytes),
        None => Err(DecodeError::Empty),
    }
}

/// The relay stores its batches in this format (for [`crate::db::outbox`]).
pub struct Codec;

impl crate::db::outbox::BatchCodec for Codec {
    fn encode(&self, events: &[RatingEvent]) -> Vec<u8> {
        encode_batch(events)
    }

    fn decode(&self, payload: &[u8]) -> Result<Vec<RatingEvent>, String> {
        decode_batch(payload).map_err(|e| e.to_string())
    }
}

/// A relay batch as stored: the events' JSON, one per line.
pub fn encode_batch(events: &[RatingEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 256);
    for e in events {
        out.extend_from_slice(&encode(e));
        out.push(b'\n');
    }
    out
}

/// The events of a stored relay batch: JSON lines, or binary events back to back (written by
/// an earlier release).
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<RatingEvent>, DecodeError> {
    match bytes.first() {
        Some(f) if binary::FORMATS.contains(f) => RatingEvent::decode_binary_batch(bytes),
        _ => bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(json::decode)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, StatsDelta};

    fn event(seq: i64) -> RatingEvent {
        let change = Change {
            event_id: 100 + seq,
            user_id: Some(seq),
            score: Some((seq % 6) as i16),
            previous_score: None,
            weight: Some(1000),
            previous_weight: None,
        };
        RatingEvent {
            partition: 1,
            seq,
            post_id: 5,
            version: seq,
            committed_ms: 1_764_000_000_000 + seq,
            delta: change.delta(),
            change: Some(change),
        }
    }

    #[test]
    fn batches_are_json_lines_and_old_binary_batches_still_read() {
        let events: Vec<RatingEvent> = (1..=3).map(event).collect();
        let batch = encode_batch(&events);
        assert_eq!(batch.iter().filter(|&&b| b == b'\n').count(), 3);
        assert_eq!(decode_batch(&batch), Ok(events.clone()));
        // The same events as an earlier release stored them: the delta, no change.
        let old: Vec<u8> = events
            .iter()
            .flat_map(RatingEvent::encode_format_2)
            .collect();
        let read = decode_batch(&old).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].delta, events[2].delta);
        assert_eq!(read[2].change, None);
        assert!(decode_batch(b"{\"type\":\"x\"}\n").is_err());
    }

    #[test]
    fn a_message_of_any_format_decodes() {
        let e = event(4);
        assert_eq!(decode(&encode(&e)), Ok(e));
        let old = decode(&e.encode_format_2()).unwrap();
        assert_eq!((old.delta, old.version), (e.delta, 4));
        let older = decode(&e.encode_format_1()).unwrap();
        assert_eq!((older.delta, older.version), (e.delta, 0));
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        assert!(decode(b"\x07garbage").is_err());
        assert_ne!(e.delta, StatsDelta::default());
    }
}
