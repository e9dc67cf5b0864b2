//! Plain data shared by the layers: what a rating change does to a post's stats, a rating
//! event as the relay stamps it and the stats store applies it, what an apply did with its
//! events, and why a post or partition is repaired.

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
    /// an event whose change the stats cannot be sure of (format 1, stamped before versions
    /// existed, or a change written by a release older than JSON events): the store repairs
    /// its post instead of applying it.
    pub version: i64,
    /// When the rating change was committed (ms since the epoch).
    pub committed_ms: i64,
    /// What the change does to the post's stats.
    pub delta: StatsDelta,
    /// What happened, for events written since events became JSON; `None` for the binary
    /// formats, which carried only the delta.
    pub change: Option<Change>,
}

/// One rating change as it happened: who rated, the new and the previous score and weight
/// (`None` for no rating: a first rating has no previous one, a withdrawal no new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The outbox row's id: stable across redeliveries, unique per database.
    pub event_id: i64,
    /// `None` only for a change written by a release older than JSON events, during an
    /// upgrade; its weights are `None` too (that release kept only the stats delta).
    pub user_id: Option<i64>,
    pub score: Option<i16>,
    pub previous_score: Option<i16>,
    /// Weights in thousandths.
    pub weight: Option<i32>,
    pub previous_weight: Option<i32>,
}

impl Change {
    /// Whether the change says everything the stats need: a user, and a weight for each score.
    pub fn is_complete(&self) -> bool {
        self.user_id.is_some()
            && self.score.is_some() == self.weight.is_some()
            && self.previous_score.is_some() == self.previous_weight.is_some()
            && (self.score.is_some() || self.previous_score.is_some())
    }

    /// What the change does to the post's stats: the new rating in, the previous one out.
    pub fn delta(&self) -> StatsDelta {
        let mut d = StatsDelta::default();
        let rating = |score: Option<i16>, weight: Option<i32>| {
            score.zip(weight).map(|(s, w)| (i64::from(s), i64::from(w)))
        };
        for (rating, sign) in [
            (rating(self.score, self.weight), 1),
            (rating(self.previous_score, self.previous_weight), -1),
        ] {
            let Some((score, weight)) = rating else {
                continue;
            };
            d.count += sign;
            d.score_sum += sign * score;
            if let Some(bucket) = usize::try_from(score).ok().and_then(|s| d.hist.get_mut(s)) {
                *bucket += sign;
            }
            d.weight_sum += sign * weight;
            d.weighted_sum += sign * score * weight;
        }
        d
    }
}

/// What one apply did with its events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: u64,
    /// At or below the fence, or at or below their post's version: counted before.
    pub duplicates: u64,
    /// Beyond the fence with a hole before them: their partition is repaired.
    pub gaps: u64,
    /// Their post's hash did not follow on from them: the post is repaired.
    pub unfollowed: u64,
}

impl std::ops::Add for ApplyReport {
    type Output = ApplyReport;

    fn add(self, other: ApplyReport) -> ApplyReport {
        ApplyReport {
            applied: self.applied + other.applied,
            duplicates: self.duplicates + other.duplicates,
            gaps: self.gaps + other.gaps,
            unfollowed: self.unfollowed + other.unfollowed,
        }
    }
}

/// Why a partition or a post is repaired; the `cause` label of `post_rate_stats_repairs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// Fences are gone while the relay has stamped events: Redis (or a cluster node)
    /// restarted empty or was flushed.
    StoreLost,
    /// Events arrived beyond the partition's fence, or for a partition without a fence:
    /// earlier events are missing and nothing will deliver them again (a rollback).
    Gap,
    /// The fence stayed behind the relay's last sequence for longer than the grace: lost
    /// events on a partition with no new traffic, or a consumer that stopped applying.
    FenceBehind,
    /// The fence is beyond anything the relay stamped: Redis holds another history.
    FenceAhead,
    /// A post's events do not follow on from the version its hash has reached (deleted,
    /// evicted or rolled back hash).
    PostVersion,
    /// Events written before post versions existed: counted by a repair of their post.
    Legacy,
    /// A reader found an impossible stat (negative, or a histogram that does not sum).
    Impossible,
    /// The audit found stats that differ from `ratings` with no event in flight.
    AuditDrift,
    /// The audit saw a post's hash behind its version and still behind a grace later.
    AuditLost,
}

impl Cause {
    pub const ALL: [Cause; 9] = [
        Cause::StoreLost,
        Cause::Gap,
        Cause::FenceBehind,
        Cause::FenceAhead,
        Cause::PostVersion,
        Cause::Legacy,
        Cause::Impossible,
        Cause::AuditDrift,
        Cause::AuditLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::StoreLost => "store_lost",
            Cause::Gap => "gap",
            Cause::FenceBehind => "fence_behind",
            Cause::FenceAhead => "fence_ahead",
            Cause::PostVersion => "post_version",
            Cause::Legacy => "legacy_event",
            Cause::Impossible => "impossible",
            Cause::AuditDrift => "audit_drift",
            Cause::AuditLost => "audit_lost",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(score: Option<i16>, previous: Option<i16>) -> Change {
        Change {
            event_id: 1,
            user_id: Some(7),
            score,
            previous_score: previous,
            weight: score.map(|_| 800),
            previous_weight: previous.map(|_| 1000),
        }
    }

    #[test]
    fn a_change_derives_its_delta() {
        let first = change(Some(4), None).delta();
        assert_eq!(
            first,
            StatsDelta {
                count: 1,
                score_sum: 4,
                hist: [0, 0, 0, 0, 1, 0],
                weight_sum: 800,
                weighted_sum: 3200,
            }
        );
        let rerate = change(Some(1), Some(5)).delta();
        assert_eq!(
            rerate,
            StatsDelta {
                count: 0,
                score_sum: -4,
                hist: [0, 1, 0, 0, 0, -1],
                weight_sum: -200,
                weighted_sum: 800 - 5000,
            }
        );
        let withdrawal = change(None, Some(3)).delta();
        assert_eq!(withdrawal.count, -1);
        assert_eq!(withdrawal.hist, [0, 0, 0, -1, 0, 0]);
        assert_eq!(withdrawal.weighted_sum, -3000);
        assert!(change(Some(4), None).is_complete());
        let old = Change {
            user_id: None,
            weight: None,
            ..change(Some(4), Some(2))
        };
        assert!(!old.is_complete());
    }
}
