//! The fenced apply: events in delivery order, split into runs of consecutive sequence
//! numbers per partition, one script call per slot.

use std::collections::HashMap;

use futures::future::try_join_all;

use super::{unexpected_reply, StatsStore};
use crate::model::ApplyReport;
use crate::model::RatingEvent;
use crate::stats::repairs::Cause;
use crate::stats::{PostStats, StatsError};

/// A run of consecutive sequence numbers of one partition, deltas summed per post.
struct Segment<'a> {
    partition: i32,
    events: &'a [RatingEvent],
}

/// Per post of one segment: the key index, number of events, first and last version, deltas.
struct PostRun {
    post_id: i64,
    events: i64,
    first: i64,
    last: i64,
    delta: PostStats,
}

impl StatsStore {
    /// Applies events (in delivery order) exactly once, whatever was applied before: the
    /// script skips what its partition fence or its post's version has seen. Events that
    /// cannot be applied because earlier ones are lost are skipped, and their partition or
    /// post is queued for repair. Safe to call again after an error.
    pub async fn apply(&self, events: &[RatingEvent]) -> Result<ApplyReport, StatsError> {
        // A stable sort: each partition keeps its delivery order, and the runs get long.
        let mut sorted = events.to_vec();
        sorted.sort_by_key(|e| e.partition);
        let groups = self.by_slot(segments(&sorted), |s| s.partition);
        let reports = try_join_all(groups.into_iter().map(|g| self.apply_segments(g))).await?;
        Ok(reports
            .into_iter()
            .fold(ApplyReport::default(), |a, r| a + r))
    }

    /// One script call (again, after a reply that asks to trim) for segments whose keys
    /// share a slot in a cluster.
    async fn apply_segments(
        &self,
        mut segments: Vec<Segment<'_>>,
    ) -> Result<ApplyReport, StatsError> {
        // Per post, the version a repair already counted: its events up to it are dropped.
        let mut counted: HashMap<i64, i64> = HashMap::new();
        loop {
            if segments.is_empty() {
                return Ok(ApplyReport::default());
            }
            let (keys, args, posts) = self.script_input(&segments, &counted);
            let script = self.apply_script.clone();
            let reply: Vec<i64> = self
                .with_conn(|mut conn| async move {
                    let mut invocation = script.prepare_invoke();
                    invocation.key(keys).arg(args);
                    Ok(invocation.invoke_async(&mut conn).await?)
                })
                .await?;
            let post_at = |index: i64| posts.get((index - 1) as usize).copied().flatten();
            match reply.as_slice() {
                [0, rest @ ..] => return self.applied(rest, post_at),
                // A segment straddles its fence: drop the part already applied and retry.
                [-1, index, fence] => {
                    let seg = &mut segments[(*index - 1) as usize];
                    let keep = seg.events.iter().position(|e| e.seq > *fence).unwrap_or(0);
                    seg.events = &seg.events[keep..];
                }
                // Posts a repair counted part-way through this batch: drop what it counted.
                [-2, pairs @ ..] if !pairs.is_empty() && pairs.len() % 2 == 0 => {
                    for pair in pairs.chunks_exact(2) {
                        let post =
                            post_at(pair[0]).ok_or_else(|| unexpected_reply("apply", &reply))?;
                        counted.insert(post, pair[1]);
                    }
                }
                other => return Err(unexpected_reply("apply", other)),
            }
        }
    }

    /// Reads the apply script's report and queues the repairs it asks for.
    fn applied(
        &self,
        reply: &[i64],
        post_at: impl Fn(i64) -> Option<i64>,
    ) -> Result<ApplyReport, StatsError> {
        let bad = || unexpected_reply("apply", reply);
        let [applied, duplicates, gaps, unfollowed, nparts, rest @ ..] = reply else {
            return Err(bad());
        };
        let (parts, rest) = rest
            .split_at_checked(2 * *nparts as usize)
            .ok_or_else(bad)?;
        for pair in parts.chunks_exact(2) {
            let cause = Cause::Gap;
            log::warn!(
                "stats: events up to sequence {} of partition {} follow missing ones: repairing the partition",
                pair[1], pair[0]
            );
            self.repairs.partition(pair[0] as i32, cause, Some(pair[1]));
        }
        let [nposts, triples @ ..] = rest else {
            return Err(bad());
        };
        if triples.len() != 3 * *nposts as usize {
            return Err(bad());
        }
        for t in triples.chunks_exact(3) {
            let post = post_at(t[0]).ok_or_else(bad)?;
            let (first, last) = (t[1], t[2]);
            let cause = if first == 0 {
                Cause::Legacy
            } else {
                log::warn!(
                    "stats: post {post}'s events from version {first} do not follow on from its hash: repairing the post"
                );
                Cause::PostVersion
            };
            self.repairs.post(post, cause, (first > 0).then_some(last));
        }
        Ok(ApplyReport {
            applied: *applied as u64,
            duplicates: *duplicates as u64,
            gaps: *gaps as u64,
            unfollowed: *unfollowed as u64,
        })
    }

    /// Keys, arguments and the post of each key (`None` for a fence) for `apply.lua`.
    fn script_input(
        &self,
        segments: &[Segment<'_>],
        counted: &HashMap<i64, i64>,
    ) -> (Vec<String>, Vec<i64>, Vec<Option<i64>>) {
        let mut keys = Vec::new();
        let mut posts = Vec::new();
        let mut key_index: HashMap<i64, i64> = HashMap::new();
        let mut fence_index: HashMap<i32, i64> = HashMap::new();
        let mut args = vec![segments.len() as i64];
        for seg in segments {
            let mut runs = post_runs(seg.events, counted);
            if self.cluster {
                // A script's keys must share the partition's slot. An event filed under
                // another partition than its post's (KAFKA_PARTITIONS changed under a
                // running topic) cannot be applied with it: its post is rebuilt instead.
                runs.retain(|run| {
                    let own = self.partition_of(run.post_id) == seg.partition;
                    if !own {
                        log::warn!(
                            "stats: an event of post {} came on partition {}, not its own: repairing the post",
                            run.post_id,
                            seg.partition
                        );
                        self.repairs.post(run.post_id, Cause::PostVersion, None);
                    }
                    own
                });
            }
            let (first, last) = match (seg.events.first(), seg.events.last()) {
                (Some(f), Some(l)) => (f.seq, l.seq),
                _ => (1, 0),
            };
            let fence = *fence_index.entry(seg.partition).or_insert_with(|| {
                keys.push(self.fence_key(seg.partition));
                posts.push(None);
                keys.len() as i64
            });
            args.extend([
                i64::from(seg.partition),
                fence,
                first,
                last,
                runs.len() as i64,
            ]);
            for run in runs {
                let index = *key_index.entry(run.post_id).or_insert_with(|| {
                    keys.push(self.post_key(run.post_id));
                    posts.push(Some(run.post_id));
                    keys.len() as i64
                });
                args.extend([index, run.events, run.first, run.last]);
                args.extend(run.delta.to_array());
            }
        }
        (keys, args, posts)
    }
}

/// The events of one segment summed per post, in order of first appearance. Events at or
/// below a post's `counted` version are left out; a post with any event of format 1 (no
/// version) gets first version 0, which the script repairs rather than applies.
fn post_runs(events: &[RatingEvent], counted: &HashMap<i64, i64>) -> Vec<PostRun> {
    let mut runs: Vec<PostRun> = Vec::new();
    let mut slot: HashMap<i64, usize> = HashMap::new();
    for e in events {
        if e.version > 0 && counted.get(&e.post_id).is_some_and(|&v| e.version <= v) {
            continue;
        }
        let i = *slot.entry(e.post_id).or_insert_with(|| {
            runs.push(PostRun {
                post_id: e.post_id,
                events: 0,
                first: e.version,
                last: e.version,
                delta: PostStats::default(),
            });
            runs.len() - 1
        });
        let run = &mut runs[i];
        run.events += 1;
        run.first = run.first.min(e.version);
        run.last = run.last.max(e.version);
        run.delta.add(&e.delta);
    }
    runs
}

/// Splits events, already grouped by partition in delivery order, into runs of consecutive
/// sequence numbers.
fn segments(events: &[RatingEvent]) -> Vec<Segment<'_>> {
    let mut out: Vec<Segment<'_>> = Vec::new();
    let mut start = 0;
    for i in 1..=events.len() {
        let split = i == events.len()
            || events[i].partition != events[i - 1].partition
            || events[i].seq != events[i - 1].seq + 1;
        if split {
            out.push(Segment {
                partition: events[start].partition,
                events: &events[start..i],
            });
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatsDelta;

    fn ev(partition: i32, seq: i64) -> RatingEvent {
        RatingEvent {
            partition,
            seq,
            post_id: 1,
            version: seq,
            committed_ms: 0,
            delta: StatsDelta::default(),
            change: None,
        }
    }

    #[test]
    fn post_runs_sum_per_post_leave_out_what_a_repair_counted_and_mark_old_formats() {
        let mut events: Vec<RatingEvent> = (1..=6)
            .map(|seq| RatingEvent {
                post_id: 10 + seq % 2,
                version: (seq + 1) / 2,
                delta: StatsDelta {
                    count: 1,
                    score_sum: seq,
                    ..StatsDelta::default()
                },
                ..ev(0, seq)
            })
            .collect();
        // Post 11 has versions 1, 2, 3 (seq 1, 3, 5); post 10 has 1, 2, 3 (seq 2, 4, 6).
        let counted = HashMap::from([(11, 2)]);
        let runs = post_runs(&events, &counted);
        let got: Vec<(i64, i64, i64, i64, i64)> = runs
            .iter()
            .map(|r| (r.post_id, r.events, r.first, r.last, r.delta.score_sum))
            .collect();
        assert_eq!(got, vec![(10, 3, 1, 3, 2 + 4 + 6), (11, 1, 3, 3, 5)]);
        // An event without a version (format 1) makes its post's run start at 0.
        events[1].version = 0;
        let runs = post_runs(&events, &HashMap::new());
        assert_eq!((runs[1].post_id, runs[1].first, runs[1].last), (10, 0, 3));
    }

    #[test]
    fn segments_split_at_holes_and_partitions() {
        let events = [ev(0, 1), ev(0, 2), ev(0, 4), ev(1, 7), ev(1, 8), ev(1, 1)];
        let runs: Vec<(i32, i64, i64)> = segments(&events)
            .iter()
            .map(|s| {
                (
                    s.partition,
                    s.events[0].seq,
                    s.events[s.events.len() - 1].seq,
                )
            })
            .collect();
        assert_eq!(runs, vec![(0, 1, 2), (0, 4, 4), (1, 7, 8), (1, 1, 1)]);
    }
}
