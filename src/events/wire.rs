//! The rating-event wire format shared by the outbox relay, Kafka and the stats consumer.

/// How one rating change moves a post's stats. Every field is an exact integer: scores are
/// 0..=5 and weights are thousandths, so sums never need floating point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsDelta {
    pub count: i64,
    pub score_sum: i64,
    /// Change of each histogram bucket n0..n5.
    pub hist: [i64; 6],
    pub weight_sum: i64,
    pub weighted_sum: i64,
}

impl StatsDelta {
    pub fn add(&mut self, other: &StatsDelta) {
        self.count += other.count;
        self.score_sum += other.score_sum;
        for (a, b) in self.hist.iter_mut().zip(other.hist) {
            *a += b;
        }
        self.weight_sum += other.weight_sum;
        self.weighted_sum += other.weighted_sum;
    }

    /// count, score sum, n0..n5, weight sum, weighted sum: the order of the Redis hash
    /// fields and of every array form.
    pub fn to_array(&self) -> [i64; 10] {
        let h = self.hist;
        [
            self.count,
            self.score_sum,
            h[0],
            h[1],
            h[2],
            h[3],
            h[4],
            h[5],
            self.weight_sum,
            self.weighted_sum,
        ]
    }

    pub fn from_array(v: [i64; 10]) -> Self {
        StatsDelta {
            count: v[0],
            score_sum: v[1],
            hist: [v[2], v[3], v[4], v[5], v[6], v[7]],
            weight_sum: v[8],
            weighted_sum: v[9],
        }
    }
}

/// One outbox row after the relay stamped it: `seq` is gap-free and increasing within
/// `partition`, which is what lets the stats store fence off duplicates; `version` is
/// gap-free and increasing per post, which lets it see a post whose stats lost events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatingEvent {
    pub partition: i32,
    pub seq: i64,
    pub post_id: i64,
    /// The post's version after this event: the number of its events stamped so far. 0 for
    /// an event of format 1, stamped before versions existed (the store repairs its post).
    pub version: i64,
    /// When the rating change was committed (ms since the epoch): the event lag metric.
    pub committed_ms: i64,
    pub delta: StatsDelta,
}

/// Format 2: format byte, partition, seq, post_id, version, committed_ms, 10 deltas.
const FORMAT: u8 = 2;
const ENCODED_LEN: usize = 1 + 4 + 8 + 8 + 8 + 8 + 10 * 8;
/// Format 1 (before post versions): the same without `version`. Still read, so that relay
/// batches and topic messages written before an upgrade drain.
const FORMAT_1: u8 = 1;
const FORMAT_1_LEN: usize = ENCODED_LEN - 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event payload of format {format} has {len} bytes")]
    Length { format: u8, len: usize },
    #[error("empty event payload")]
    Empty,
    #[error("unknown event format {0}")]
    Version(u8),
}

/// The encoded length of an event of this format.
fn encoded_len(format: u8) -> Result<usize, DecodeError> {
    match format {
        FORMAT => Ok(ENCODED_LEN),
        FORMAT_1 => Ok(FORMAT_1_LEN),
        other => Err(DecodeError::Version(other)),
    }
}

impl RatingEvent {
    /// Fixed-size little-endian encoding: cheap to decode at hundreds of thousands per second.
    pub fn encode(&self) -> Vec<u8> {
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

    /// Events back to back, as a relay batch stores them.
    pub fn encode_all(events: &[RatingEvent]) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.len() * ENCODED_LEN);
        for e in events {
            out.extend_from_slice(&e.encode());
        }
        out
    }

    /// The events of [`encode_all`](Self::encode_all) (of any format this build reads).
    pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<RatingEvent>, DecodeError> {
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
            events.push(RatingEvent::decode(event)?);
            bytes = rest;
        }
        Ok(events)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
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
        }
    }

    #[test]
    fn round_trips() {
        let e = event(123_456_789);
        assert_eq!(RatingEvent::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn batches_round_trip_and_reject_a_torn_tail() {
        let events: Vec<RatingEvent> = (1..=3).map(event).collect();
        let bytes = RatingEvent::encode_all(&events);
        assert_eq!(RatingEvent::decode_all(&bytes), Ok(events));
        assert!(RatingEvent::decode_all(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn reads_format_1_as_version_0() {
        let e = event(5);
        let old = e.encode_format_1();
        assert_eq!(old.len(), FORMAT_1_LEN);
        let want = RatingEvent { version: 0, ..e };
        assert_eq!(RatingEvent::decode(&old), Ok(want));
        // A batch written before the upgrade, then one written after it.
        let mut both = [old.clone(), old].concat();
        assert_eq!(RatingEvent::decode_all(&both), Ok(vec![want, want]));
        both.extend(e.encode());
        assert_eq!(RatingEvent::decode_all(&both), Ok(vec![want, want, e]));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(RatingEvent::decode(b"{}"), Err(DecodeError::Version(b'{')));
        assert_eq!(RatingEvent::decode(b""), Err(DecodeError::Empty));
        assert_eq!(
            RatingEvent::decode(&[FORMAT, 0, 0]),
            Err(DecodeError::Length {
                format: FORMAT,
                len: 3
            })
        );
        let mut bytes = event(1).encode();
        bytes[0] = 9;
        assert_eq!(RatingEvent::decode(&bytes), Err(DecodeError::Version(9)));
    }
}
