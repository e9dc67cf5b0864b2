//! Rating events as every service reads them: one JSON object per message, event type
//! `rating.changed`, schema version 1 (`docs/rating-event.schema.json`, and the topic in
//! `docs/asyncapi.yaml`). The message says what happened (who, the new and the previous score
//! and weight); the stats consumer derives its deltas from that.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::DecodeError;
use crate::model::{Change, RatingEvent};

pub const EVENT_TYPE: &str = "rating.changed";
pub const SCHEMA_VERSION: u32 = 1;

/// The message, field for field as the schema names them.
#[derive(Debug, Serialize, Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    post_id: i64,
    user_id: Option<i64>,
    score: Option<i16>,
    previous_score: Option<i16>,
    weight: Option<i32>,
    previous_weight: Option<i32>,
    #[serde(borrow)]
    at: Cow<'a, str>,
    partition: i32,
    sequence: i64,
    post_version: i64,
}

/// The JSON of `event` (schema 1). An event without a change (one read from a binary format)
/// has `user_id`, scores and weights `null`.
pub fn encode(event: &RatingEvent) -> Vec<u8> {
    let change = event.change.unwrap_or(Change {
        event_id: 0,
        user_id: None,
        score: None,
        previous_score: None,
        weight: None,
        previous_weight: None,
    });
    let at = DateTime::<Utc>::from_timestamp_millis(event.committed_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let message = Message {
        kind: Cow::Borrowed(EVENT_TYPE),
        schema_version: SCHEMA_VERSION,
        event_id: Cow::Owned(change.event_id.to_string()),
        post_id: event.post_id,
        user_id: change.user_id,
        score: change.score,
        previous_score: change.previous_score,
        weight: change.weight,
        previous_weight: change.previous_weight,
        at: Cow::Owned(at),
        partition: event.partition,
        sequence: event.seq,
        post_version: event.version,
    };
    // A struct of numbers, options and strings always serialises.
    serde_json::to_vec(&message).unwrap_or_default()
}

/// Reads one message of schema 1. A future schema version, another event type, or a value
/// outside the schema is an error (the consumer counts and skips it). A change that does not
/// say everything the stats need (written by a release before JSON events) comes back with
/// version 0, so the store repairs its post from PostgreSQL instead of guessing.
pub fn decode(bytes: &[u8]) -> Result<RatingEvent, DecodeError> {
    let m: Message<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if m.kind != EVENT_TYPE {
        return Err(DecodeError::EventType(m.kind.into_owned()));
    }
    if m.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::Schema(m.schema_version));
    }
    let invalid = |what: &str| DecodeError::Invalid(what.to_owned());
    for score in [m.score, m.previous_score].into_iter().flatten() {
        if !(0..=5).contains(&score) {
            return Err(invalid("score outside 0..5"));
        }
    }
    for weight in [m.weight, m.previous_weight].into_iter().flatten() {
        if !(0..=1000).contains(&weight) {
            return Err(invalid("weight outside 0..1000"));
        }
    }
    let event_id = m.event_id.parse().map_err(|_| invalid("event_id"))?;
    let committed_ms = DateTime::parse_from_rfc3339(&m.at)
        .map_err(|_| invalid("at"))?
        .timestamp_millis();
    let change = Change {
        event_id,
        user_id: m.user_id,
        score: m.score,
        previous_score: m.previous_score,
        weight: m.weight,
        previous_weight: m.previous_weight,
    };
    let complete = change.is_complete();
    Ok(RatingEvent {
        partition: m.partition,
        seq: m.sequence,
        post_id: m.post_id,
        version: if complete { m.post_version } else { 0 },
        committed_ms,
        delta: if complete {
            change.delta()
        } else {
            Default::default()
        },
        change: Some(change),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> RatingEvent {
        let change = Change {
            event_id: 991,
            user_id: Some(7),
            score: Some(4),
            previous_score: Some(1),
            weight: Some(812),
            previous_weight: Some(1000),
        };
        RatingEvent {
            partition: 3,
            seq: 1234,
            post_id: 42,
            version: 17,
            committed_ms: 1_764_482_400_123,
            delta: change.delta(),
            change: Some(change),
        }
    }

    #[test]
    fn round_trips_and_reads_as_the_schema_says() {
        let e = event();
        let bytes = encode(&e);
        assert_eq!(decode(&bytes), Ok(e));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "rating.changed", "schema_version": 1, "event_id": "991",
                "post_id": 42, "user_id": 7, "score": 4, "previous_score": 1,
                "weight": 812, "previous_weight": 1000, "at": "2025-11-30T06:00:00.123Z",
                "partition": 3, "sequence": 1234, "post_version": 17
            })
        );
    }

    #[test]
    fn a_first_rating_and_a_withdrawal_have_nulls() {
        let mut e = event();
        let c = e.change.as_mut().unwrap();
        c.previous_score = None;
        c.previous_weight = None;
        e.delta = c.delta();
        let v: serde_json::Value = serde_json::from_slice(&encode(&e)).unwrap();
        assert!(v["previous_score"].is_null() && v["previous_weight"].is_null());
        assert_eq!(decode(&encode(&e)), Ok(e));
        let c = e.change.as_mut().unwrap();
        (c.score, c.weight, c.previous_score, c.previous_weight) = (None, None, Some(3), Some(500));
        e.delta = c.delta();
        assert_eq!(decode(&encode(&e)).unwrap().delta.count, -1);
    }

    #[test]
    fn an_incomplete_change_is_left_to_a_repair() {
        let mut e = event();
        let c = e.change.as_mut().unwrap();
        c.user_id = None;
        c.weight = None;
        c.previous_weight = None;
        let got = decode(&encode(&e)).unwrap();
        assert_eq!(got.version, 0);
        assert_eq!(got.delta, Default::default());
    }

    #[test]
    fn refuses_what_is_not_a_schema_1_rating_change() {
        let good = String::from_utf8(encode(&event())).unwrap();
        let cases = [
            good.replace("rating.changed", "rating.deleted"),
            good.replace("\"schema_version\":1", "\"schema_version\":2"),
            good.replace("\"score\":4", "\"score\":6"),
            good.replace("\"weight\":812", "\"weight\":1001"),
            good.replace("\"event_id\":\"991\"", "\"event_id\":\"x\""),
            good.replace("2025-11-30T06:00:00.123Z", "yesterday"),
            good.replace("\"post_id\":42,", ""),
            "[]".to_owned(),
            "{".to_owned(),
        ];
        for bad in cases {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(matches!(
            decode(
                good.replace("\"schema_version\":1", "\"schema_version\":2")
                    .as_bytes()
            ),
            Err(DecodeError::Schema(2))
        ));
    }
}
