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
/// `partition`, which is what lets the stats store fence off duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatingEvent {
    pub partition: i32,
    pub seq: i64,
    pub post_id: i64,
    /// When the rating change was committed (ms since the epoch): the event lag metric.
    pub committed_ms: i64,
    pub delta: StatsDelta,
}

const VERSION: u8 = 1;
/// version + partition + seq + post_id + committed_ms + 10 deltas.
const ENCODED_LEN: usize = 1 + 4 + 8 + 8 + 8 + 10 * 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event payload has {0} bytes, expected {ENCODED_LEN}")]
    Length(usize),
    #[error("unknown event format version {0}")]
    Version(u8),
}

impl RatingEvent {
    /// Fixed-size little-endian encoding: cheap to decode at hundreds of thousands per second.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
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

    /// The events of [`encode_all`](Self::encode_all).
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<RatingEvent>, DecodeError> {
        if !bytes.len().is_multiple_of(ENCODED_LEN) {
            return Err(DecodeError::Length(bytes.len() % ENCODED_LEN));
        }
        bytes
            .chunks_exact(ENCODED_LEN)
            .map(RatingEvent::decode)
            .collect()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != ENCODED_LEN {
            return Err(DecodeError::Length(bytes.len()));
        }
        if bytes[0] != VERSION {
            return Err(DecodeError::Version(bytes[0]));
        }
        let i64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            i64::from_le_bytes(b)
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(&bytes[1..5]);
        Ok(RatingEvent {
            partition: i32::from_le_bytes(p),
            seq: i64_at(5),
            post_id: i64_at(13),
            committed_ms: i64_at(21),
            delta: StatsDelta::from_array(std::array::from_fn(|n| i64_at(29 + 8 * n))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = RatingEvent {
            partition: 7,
            seq: 123_456_789,
            post_id: -1,
            committed_ms: 1_764_000_000_000,
            delta: StatsDelta {
                count: -1,
                score_sum: -4,
                hist: [0, 0, 0, 0, -1, 0],
                weight_sum: -731,
                weighted_sum: -2924,
            },
        };
        assert_eq!(RatingEvent::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn batches_round_trip_and_reject_a_torn_tail() {
        let events: Vec<RatingEvent> = (1..=3)
            .map(|seq| RatingEvent {
                partition: 2,
                seq,
                post_id: 10 + seq,
                committed_ms: seq * 1000,
                delta: StatsDelta {
                    count: 1,
                    ..StatsDelta::default()
                },
            })
            .collect();
        let bytes = RatingEvent::encode_all(&events);
        assert_eq!(RatingEvent::decode_all(&bytes), Ok(events));
        assert!(RatingEvent::decode_all(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(RatingEvent::decode(b"{}"), Err(DecodeError::Length(2)));
        let mut bytes = RatingEvent {
            partition: 0,
            seq: 1,
            post_id: 1,
            committed_ms: 0,
            delta: StatsDelta::default(),
        }
        .encode();
        bytes[0] = 9;
        assert_eq!(RatingEvent::decode(&bytes), Err(DecodeError::Version(9)));
    }
}
