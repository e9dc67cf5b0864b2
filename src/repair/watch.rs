//! The store check's judgement: the Redis fences against the last sequence the relay stamped
//! per partition, about once a second. Events reveal most losses (apply sees a gap or a post
//! that does not follow on); this catches the ones no new event will reveal.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::stats::Cause;

/// The longest the grace of a partition that keeps falling behind grows to.
const MAX_GRACE: Duration = Duration::from_secs(300);

/// A partition whose fence is behind the relay, and since when it has not moved.
#[derive(Debug, Clone, Copy)]
struct Behind {
    fence: i64,
    since: Instant,
    grace: Duration,
}

/// Remembers which fences are behind and for how long.
#[derive(Debug)]
pub struct FenceWatch {
    grace: Duration,
    behind: HashMap<i32, Behind>,
    /// Whether fences were ever seen: only then does finding none mean a lost store.
    /// Before that it may be a new one whose first events are still on their way (they
    /// start at sequence 1 and apply as they come), so it is judged like fences behind.
    seen_fences: bool,
    /// Partitions whose fence was seen: one that disappears alone is a lost part of the
    /// store (a cluster node restarted empty), rebuilt at once.
    had_fence: HashSet<i32>,
}

/// A partition to repair: which, why, and the fence below which it is still needed.
pub type Finding = (i32, Cause, Option<i64>);

impl FenceWatch {
    /// `grace`: how long a fence may stay still behind the relay before its partition is
    /// rebuilt (`STATS_REPAIR_GRACE_SECS`); it doubles for a partition that keeps needing it.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            behind: HashMap::new(),
            seen_fences: false,
            had_fence: HashSet::new(),
        }
    }

    /// Judges one observation: `fences` from Redis, `last` the relay's last sequence of every
    /// partition it has stamped.
    pub fn observe(
        &mut self,
        now: Instant,
        fences: &HashMap<i32, i64>,
        last: &[(i32, i64)],
    ) -> Vec<Finding> {
        if !fences.is_empty() {
            self.seen_fences = true;
        } else if self.seen_fences && last.iter().any(|(_, seq)| *seq > 0) {
            // Every apply writes its partition's fence: all gone, so is the store.
            self.behind.clear();
            self.had_fence.clear();
            return last
                .iter()
                .filter(|(_, seq)| *seq > 0)
                .map(|(part, _)| (*part, Cause::StoreLost, None))
                .collect();
        }
        let mut found = Vec::new();
        let stamped: HashMap<i32, i64> = last.iter().copied().collect();
        for (&part, &fence) in fences {
            if fence > stamped.get(&part).copied().unwrap_or(0) {
                found.push((part, Cause::FenceAhead, None));
            }
        }
        for &(part, seq) in last {
            if seq > 0 && !fences.contains_key(&part) && self.had_fence.remove(&part) {
                self.behind.remove(&part);
                found.push((part, Cause::StoreLost, None));
                continue;
            }
            let fence = fences.get(&part).copied().unwrap_or(0);
            if fence >= seq {
                self.behind.remove(&part);
                continue;
            }
            let grace = self.grace;
            let entry = self.behind.entry(part).or_insert(Behind {
                fence,
                since: now,
                grace,
            });
            if entry.fence != fence {
                // Moving: a consumer is applying; only a fence that stands still is stuck.
                *entry = Behind {
                    fence,
                    since: now,
                    grace: entry.grace,
                };
            } else if now.duration_since(entry.since) >= entry.grace {
                found.push((part, Cause::FenceBehind, Some(fence + 1)));
                entry.since = now;
                entry.grace = (entry.grace * 2).min(MAX_GRACE);
            }
        }
        self.had_fence.extend(fences.keys());
        found.sort_unstable_by_key(|f| f.0);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_that_disappears_alone_is_a_lost_part_of_the_store() {
        let mut w = FenceWatch::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let last = [(0, 5), (1, 7), (2, 9)];
        assert!(w
            .observe(t0, &fences(&[(0, 5), (1, 7), (2, 9)]), &last)
            .is_empty());
        // A node holding partition 1 came back empty: at once, not after the grace.
        assert_eq!(
            w.observe(t0, &fences(&[(0, 5), (2, 9)]), &last),
            vec![(1, Cause::StoreLost, None)]
        );
        // Once reported, it is judged like any fence behind until it is back.
        assert!(w.observe(t0, &fences(&[(0, 5), (2, 9)]), &last).is_empty());
    }

    fn fences(pairs: &[(i32, i64)]) -> HashMap<i32, i64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_lost_store_is_every_stamped_partition() {
        let grace = Duration::from_secs(10);
        let mut w = FenceWatch::new(grace);
        let t0 = Instant::now();
        // Nothing stamped yet: an empty store is simply new.
        assert!(w.observe(t0, &fences(&[]), &[]).is_empty());
        // Stamped but not applied yet: maybe on its way, so only after the grace.
        let last = [(0, 5), (1, 0), (2, 9)];
        assert!(w.observe(t0, &fences(&[]), &last).is_empty());
        assert_eq!(
            w.observe(t0 + grace, &fences(&[]), &last),
            vec![
                (0, Cause::FenceBehind, Some(1)),
                (2, Cause::FenceBehind, Some(1))
            ]
        );
        // Once fences were seen, their disappearance is a lost store, at once.
        assert!(w.observe(t0, &fences(&[(0, 5), (2, 9)]), &last).is_empty());
        let found = w.observe(t0, &fences(&[]), &last);
        assert_eq!(
            found,
            vec![(0, Cause::StoreLost, None), (2, Cause::StoreLost, None)]
        );
    }

    #[test]
    fn a_fence_ahead_of_the_relay_is_another_history() {
        let mut w = FenceWatch::new(Duration::from_secs(10));
        let found = w.observe(Instant::now(), &fences(&[(0, 7), (3, 2)]), &[(0, 5)]);
        assert_eq!(
            found,
            vec![(0, Cause::FenceAhead, None), (3, Cause::FenceAhead, None)]
        );
    }

    #[test]
    fn a_fence_standing_still_behind_is_repaired_after_the_grace_which_then_grows() {
        let grace = Duration::from_secs(10);
        let mut w = FenceWatch::new(grace);
        let t0 = Instant::now();
        let last = [(0, 50), (1, 8)];
        // Partition 1 is caught up; partition 0 is behind, and stays so.
        assert!(w.observe(t0, &fences(&[(0, 40), (1, 8)]), &last).is_empty());
        assert!(w
            .observe(t0 + grace / 2, &fences(&[(0, 40), (1, 8)]), &last)
            .is_empty());
        let found = w.observe(t0 + grace, &fences(&[(0, 40), (1, 8)]), &last);
        assert_eq!(found, vec![(0, Cause::FenceBehind, Some(41))]);
        // Still behind: next time only after twice the grace.
        assert!(w
            .observe(t0 + grace * 2, &fences(&[(0, 40), (1, 8)]), &last)
            .is_empty());
        assert_eq!(
            w.observe(t0 + grace * 3, &fences(&[(0, 40), (1, 8)]), &last),
            vec![(0, Cause::FenceBehind, Some(41))]
        );
    }

    #[test]
    fn a_moving_fence_is_a_consumer_at_work() {
        let grace = Duration::from_secs(10);
        let mut w = FenceWatch::new(grace);
        let t0 = Instant::now();
        for i in 0..30 {
            let now = t0 + Duration::from_secs(i);
            let found = w.observe(now, &fences(&[(0, 100 + i as i64)]), &[(0, 1000)]);
            assert!(found.is_empty(), "second {i}: {found:?}");
        }
        // A partition with events but no fence yet counts as behind from 0.
        let found = w.observe(t0, &fences(&[(0, 5)]), &[(0, 5), (1, 3)]);
        assert!(found.is_empty());
        let found = w.observe(t0 + grace, &fences(&[(0, 5)]), &[(0, 5), (1, 3)]);
        assert_eq!(found, vec![(1, Cause::FenceBehind, Some(1))]);
    }
}
