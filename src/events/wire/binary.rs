//! The binary event formats 1 and 2, private to post-rate, that the relay wrote before rating
//! events became JSON ([`super::json`]). Still read, so that relay batches and topic messages
//! written by an earlier release drain during an upgrade; written only by tests of that.

use super::DecodeError;
use crate::model::{RatingEvent, StatsDelta};

/// The first byte of every binary event: its format.
pub const FORMATS: [u8; 2] = [FORMAT_1, FORMAT];

/// Format 2: format byte, partition, seq, post_id, version, committed_ms, 10 deltas.
const FORMAT: u8 = 2;
const ENCODED_LEN: usize = 1 + 4 + 8 + 8 + 8 + 8 + 10 * 8;
/// Format 1 (before post versions): the same without `version`. Still read, so that relay
/// batches and topic messages written before an upgrade drain.
const FORMAT_1: u8 = 1;
const FORMAT_1_LEN: usize = ENCODED_LEN - 8;

/// The encoded length of an event of this format.
fn encoded_len(format: u8) -> Result<usize, DecodeError> {
    match format {
        FORMAT => Ok(ENCODED_LEN),
        FORMAT_1 => Ok(FORMAT_1_LEN),
        other => Err(DecodeError::Version(other)),
    }
}

impl RatingEvent {
    /// Format 2: fixed-size little-endian, the delta without the change.
    pub fn encode_format_2(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.post_id.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.committed_ms.to_le_bytes());
        for v in self.delta.to_array() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Format 1, as releases before post versions wrote it (no `version`): for tests of an
    /// upgrade that finds such events in a relay batch or on the topic.
    pub fn encode_format_1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FORMAT_1_LEN);
        out.push(FORMAT_1);
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.post_id.to_le_bytes());
        out.extend_from_slice(&self.committed_ms.to_le_bytes());
        for v in self.delta.to_array() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Binary events back to back, as a relay batch stored them.
    pub fn decode_binary_batch(mut bytes: &[u8]) -> Result<Vec<RatingEvent>, DecodeError> {
        let mut events = Vec::with_capacity(bytes.len() / ENCODED_LEN);
        while let Some(&format) = bytes.first() {
            let len = encoded_len(format)?;
            if bytes.len() < len {
                return Err(DecodeError::Length {
                    format,
                    len: bytes.len(),
                });
            }
            let (event, rest) = bytes.split_at(len);
            events.push(RatingEvent::decode_binary(event)?);
            bytes = rest;
        }
        Ok(events)
    }

    /// One binary event, of format 1 or 2.
    pub fn decode_binary(bytes: &[u8]) -> Result<Self, DecodeError> {
        let format = *bytes.first().ok_or(DecodeError::Empty)?;
        if bytes.len() != encoded_len(format)? {
            return Err(DecodeError::Length {
                format,
                len: bytes.len(),
            });
        }
        let i64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            i64::from_le_bytes(b)
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(&bytes[1..5]);
        // Format 1 has no version: the fields after post_id start 8 bytes earlier.
        let (version, rest) = if format == FORMAT_1 {
            (0, 21)
        } else {
            (i64_at(21), 29)
        };
        Ok(RatingEvent {
            partition: i32::from_le_bytes(p),
            seq: i64_at(5),
            post_id: i64_at(13),
            version,
            committed_ms: i64_at(rest),
            delta: StatsDelta::from_array(std::array::from_fn(|n| i64_at(rest + 8 + 8 * n))),
            change: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> RatingEvent {
        RatingEvent {
            partition: 7,
            seq,
            post_id: -1,
            version: seq + 40,
            committed_ms: 1_764_000_000_000,
            delta: StatsDelta {
                count: -1,
                score_sum: -4,
                hist: [0, 0, 0, 0, -1, 0],
                weight_sum: -731,
                weighted_sum: -2924,
            },
            change: None,
        }
    }

    #[test]
    fn round_trips() {
        let e = event(123_456_789);
        assert_eq!(RatingEvent::decode_binary(&e.encode_format_2()), Ok(e));
    }

    #[test]
    fn batches_round_trip_and_reject_a_torn_tail() {
        let events: Vec<RatingEvent> = (1..=3).map(event).collect();
        let bytes: Vec<u8> = events
            .iter()
            .flat_map(RatingEvent::encode_format_2)
            .collect();
        assert_eq!(RatingEvent::decode_binary_batch(&bytes), Ok(events));
        assert!(RatingEvent::decode_binary_batch(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn reads_format_1_as_version_0() {
        let e = event(5);
        let old = e.encode_format_1();
        assert_eq!(old.len(), FORMAT_1_LEN);
        let want = RatingEvent { version: 0, ..e };
        assert_eq!(RatingEvent::decode_binary(&old), Ok(want));
        // A batch written before the upgrade, then one written after it.
        let mut both = [old.clone(), old].concat();
        assert_eq!(
            RatingEvent::decode_binary_batch(&both),
            Ok(vec![want, want])
        );
        both.extend(e.encode_format_2());
        assert_eq!(
            RatingEvent::decode_binary_batch(&both),
            Ok(vec![want, want, e])
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            RatingEvent::decode_binary(b"{}"),
            Err(DecodeError::Version(b'{'))
        );
        assert_eq!(RatingEvent::decode_binary(b""), Err(DecodeError::Empty));
        assert_eq!(
            RatingEvent::decode_binary(&[FORMAT, 0, 0]),
            Err(DecodeError::Length {
                format: FORMAT,
                len: 3
            })
        );
        let mut bytes = event(1).encode_format_2();
        bytes[0] = 9;
        assert_eq!(
            RatingEvent::decode_binary(&bytes),
            Err(DecodeError::Version(9))
        );
    }
}
