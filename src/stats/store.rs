//! The Redis stats store: one hash per post, changed only by the fenced apply script and by
//! repairs, read in one pipelined round trip per page. What it finds wrong (a partition with
//! missing events, a post that does not follow on, an impossible stat) goes to its
//! [`RepairQueue`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool::Runtime;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};

use super::repairs::{Cause, RepairQueue};
use super::{PostStats, StatsError};
use crate::model::RatingEvent;
use crate::worker::PerWorker;

const FIELDS: [&str; 10] = ["c", "s", "h0", "h1", "h2", "h3", "h4", "h5", "w", "ws"];
/// The stats fields and the version a hash has reached, as repairs read and write them.
const FIELDS_AND_VERSION: [&str; 11] =
    ["c", "s", "h0", "h1", "h2", "h3", "h4", "h5", "w", "ws", "v"];

/// A pooled connection that was used this recently is handed out without a check.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// deadpool-redis's manager without its check on every checkout: that check (UNWATCH + PING)
/// is a Redis round trip per `get`, which doubled the round trips of a rating write. A
/// connection used within [`TRUSTED_IDLE`] is handed out as it is; a broken one fails its
/// next command, and [`StatsStore::with_conn`] then takes it out of the pool. Connections
/// idle for longer are checked as before.
struct Manager {
    inner: deadpool_redis::Manager,
    /// `REDIS_TIMEOUT_MS`: redis-rs's own limit on an answer (500 ms by default) is raised to
    /// it, so a long script (a full consumer batch, a repair chunk) under load is bounded by
    /// [`StatsStore::with_conn`]'s deadline alone.
    timeout: Duration,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut conn = self.inner.create().await?;
        conn.set_response_timeout(self.timeout);
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < TRUSTED_IDLE {
            return Ok(());
        }
        self.inner.recycle(conn, metrics).await
    }
}

type Pool = managed::Pool<Manager>;

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

/// A post's stats and the version its hash has reached, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredStats {
    pub stats: PostStats,
    pub version: i64,
}

#[derive(Clone)]
pub struct StatsStore {
    /// `REDIS_POOL_SIZE` connections shared out over the HTTP workers ([`crate::worker`]).
    pool: PerWorker<Pool>,
    prefix: Arc<str>,
    timeout: Duration,
    apply_script: Arc<Script>,
    repair_script: Arc<Script>,
    repairs: Arc<RepairQueue>,
}

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
    /// A store with one pool, for tools and tests (no HTTP workers).
    pub fn new(
        url: &str,
        prefix: &str,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, StatsError> {
        Self::for_workers(url, prefix, pool_size, timeout, 0)
    }

    /// A store whose `pool_size` connections are shared out over `http_workers` pools, plus
    /// a pool of that share for every other thread ([`PerWorker`]).
    pub fn for_workers(
        url: &str,
        prefix: &str,
        pool_size: usize,
        timeout: Duration,
        http_workers: usize,
    ) -> Result<Self, StatsError> {
        let pool = PerWorker::split(pool_size, http_workers, |size| {
            let manager =
                deadpool_redis::Manager::new(url).map_err(|e| StatsError::Config(e.to_string()))?;
            Pool::builder(Manager {
                inner: manager,
                timeout,
            })
            .max_size(size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StatsError::Config(e.to_string()))
        })?;
        Ok(StatsStore {
            pool,
            prefix: prefix.into(),
            timeout,
            apply_script: Arc::new(Script::new(include_str!("apply.lua"))),
            repair_script: Arc::new(Script::new(include_str!("repair.lua"))),
            repairs: Arc::default(),
        })
    }

    /// What this store (and every clone of it) found wrong and wants repaired.
    pub fn repairs(&self) -> &Arc<RepairQueue> {
        &self.repairs
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn post_key(&self, post_id: i64) -> String {
        format!("{}stats:{post_id}", self.prefix)
    }

    pub fn burst_key(&self, post_id: i64) -> String {
        format!("{}burst:{post_id}", self.prefix)
    }

    /// The raters of the post's current burst bucket; kept beside [`Self::burst_key`].
    pub fn burst_raters_key(&self, post_id: i64) -> String {
        format!("{}burst:{post_id}:raters", self.prefix)
    }

    fn fence_key(&self) -> String {
        format!("{}fence", self.prefix)
    }

    /// Raised by every repair that changed something: instances drop their cached stats
    /// when they see it move.
    fn epoch_key(&self) -> String {
        format!("{}repair-epoch", self.prefix)
    }

    /// Runs `f` on a pooled connection, the whole bounded by the configured timeout. A
    /// connection that timed out or failed as a connection (not a script or type error) leaves
    /// the pool instead of going back to it.
    pub async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, StatsError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, StatsError>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let pooled = tokio::time::timeout_at(deadline, self.pool.local().get())
            .await
            .map_err(|_| StatsError::Timeout)??;
        // A multiplexed connection is a handle to one shared socket: the clone is cheap, and
        // `pooled` stays here to be returned or discarded.
        let result = tokio::time::timeout_at(deadline, f(MultiplexedConnection::clone(&pooled)))
            .await
            .unwrap_or(Err(StatsError::Timeout));
        let broken = match &result {
            Err(StatsError::Redis(e)) => {
                e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout()
            }
            Err(StatsError::Timeout) => true,
            _ => false,
        };
        if broken {
            drop(Object::take(pooled));
        }
        result
    }

    /// Redis' `maxmemory-policy`, when Redis lets us read it (managed services may not).
    pub async fn eviction_policy(&self) -> Result<Option<String>, StatsError> {
        self.with_conn(|mut conn| async move {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut conn)
                .await?;
            Ok(pair.into_iter().nth(1))
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StatsError> {
        self.with_conn(|mut conn| async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// The stats of these posts in one pipelined round trip; absent posts are all zero. A
    /// post whose stored stats are impossible is `None` (never shown) and queued for repair.
    pub async fn load_many(
        &self,
        post_ids: &[i64],
    ) -> Result<HashMap<i64, Option<PostStats>>, StatsError> {
        let stored = self.load_stored(post_ids, &FIELDS).await?;
        Ok(stored
            .into_iter()
            .map(|(id, s)| {
                if super::is_possible(&s.stats) {
                    (id, Some(s.stats))
                } else {
                    log::warn!("post {id}: impossible stats in Redis {:?}", s.stats);
                    self.repairs.post(id, Cause::Impossible, None);
                    (id, None)
                }
            })
            .collect())
    }

    /// The stats and versions of these posts as stored, in one pipelined round trip.
    pub async fn load_versions(
        &self,
        post_ids: &[i64],
    ) -> Result<HashMap<i64, StoredStats>, StatsError> {
        self.load_stored(post_ids, &FIELDS_AND_VERSION).await
    }

    async fn load_stored(
        &self,
        post_ids: &[i64],
        fields: &[&str],
    ) -> Result<HashMap<i64, StoredStats>, StatsError> {
        if post_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for &id in post_ids {
            pipe.cmd("HMGET").arg(self.post_key(id)).arg(fields);
        }
        let rows: Vec<Vec<Option<i64>>> = self
            .with_conn(|mut conn| async move { Ok(pipe.query_async(&mut conn).await?) })
            .await?;
        Ok(post_ids
            .iter()
            .zip(rows)
            .map(|(&id, row)| {
                let mut values = [0i64; 11];
                for (v, got) in values.iter_mut().zip(row) {
                    *v = got.unwrap_or(0);
                }
                let mut stats = [0i64; 10];
                stats.copy_from_slice(&values[..10]);
                let stored = StoredStats {
                    stats: PostStats::from_array(stats),
                    version: values[10],
                };
                (id, stored)
            })
            .collect())
    }

    /// The highest applied sequence of every partition that has one.
    pub async fn fences(&self) -> Result<HashMap<i32, i64>, StatsError> {
        Ok(self.fences_and_epoch().await?.0)
    }

    /// The fences and the repair epoch, in one round trip.
    pub async fn fences_and_epoch(&self) -> Result<(HashMap<i32, i64>, i64), StatsError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(self.fence_key())
            .cmd("GET")
            .arg(self.epoch_key());
        self.with_conn(|mut conn| async move {
            let (fences, epoch): (HashMap<i32, i64>, Option<i64>) =
                pipe.query_async(&mut conn).await?;
            Ok((fences, epoch.unwrap_or(0)))
        })
        .await
    }

    /// Applies events (in delivery order) exactly once, whatever was applied before: the
    /// script skips what its partition fence or its post's version has seen. Events that
    /// cannot be applied because earlier ones are lost are skipped, and their partition or
    /// post is queued for repair. Safe to call again after an error.
    pub async fn apply(&self, events: &[RatingEvent]) -> Result<ApplyReport, StatsError> {
        // A stable sort: each partition keeps its delivery order, and the runs get long.
        let mut sorted = events.to_vec();
        sorted.sort_by_key(|e| e.partition);
        let mut segments = segments(&sorted);
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
            match reply.as_slice() {
                [0, rest @ ..] => return self.applied(rest, &posts),
                // A segment straddles its fence: drop the part already applied and retry.
                [-1, index, fence] => {
                    let seg = &mut segments[(*index - 1) as usize];
                    let keep = seg.events.iter().position(|e| e.seq > *fence).unwrap_or(0);
                    seg.events = &seg.events[keep..];
                }
                // Posts a repair counted part-way through this batch: drop what it counted.
                [-2, pairs @ ..] if !pairs.is_empty() && pairs.len() % 2 == 0 => {
                    for pair in pairs.chunks_exact(2) {
                        let post = posts[(pair[0] - 2) as usize];
                        counted.insert(post, pair[1]);
                    }
                }
                other => return Err(unexpected_reply("apply", other)),
            }
        }
    }

    /// Reads the apply script's report and queues the repairs it asks for.
    fn applied(&self, reply: &[i64], posts: &[i64]) -> Result<ApplyReport, StatsError> {
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
            let post = *posts.get((t[0] - 2) as usize).ok_or_else(bad)?;
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

    /// Keys, arguments and the post of each key (from KEYS[2]) for `apply.lua`.
    fn script_input(
        &self,
        segments: &[Segment<'_>],
        counted: &HashMap<i64, i64>,
    ) -> (Vec<String>, Vec<i64>, Vec<i64>) {
        let mut keys = vec![self.fence_key()];
        let mut posts = Vec::new();
        let mut key_index: HashMap<i64, i64> = HashMap::new();
        let mut args = vec![segments.len() as i64];
        for seg in segments {
            let runs = post_runs(seg.events, counted);
            let (first, last) = match (seg.events.first(), seg.events.last()) {
                (Some(f), Some(l)) => (f.seq, l.seq),
                _ => (1, 0),
            };
            args.extend([i64::from(seg.partition), first, last, runs.len() as i64]);
            for run in runs {
                let index = *key_index.entry(run.post_id).or_insert_with(|| {
                    keys.push(self.post_key(run.post_id));
                    posts.push(run.post_id);
                    keys.len() as i64
                });
                args.extend([index, run.events, run.first, run.last]);
                args.extend(run.delta.to_array());
            }
        }
        (keys, args, posts)
    }

    /// Overwrites the stats and versions of `targets` (those that differ) and sets the fences
    /// of `fences` to exactly these sequences, atomically; returns how many posts differed.
    /// With `dry_run`, compares only. The caller holds the relay's stamp lock, so nothing is
    /// stamped beyond the snapshot the targets come from until it is done.
    pub async fn repair_chunk(
        &self,
        targets: &[(i64, StoredStats)],
        fences: &[(i32, i64)],
        dry_run: bool,
    ) -> Result<u64, StatsError> {
        let mut keys = vec![self.fence_key(), self.epoch_key()];
        keys.extend(targets.iter().map(|(id, _)| self.post_key(*id)));
        let mut args: Vec<i64> = vec![i64::from(dry_run), fences.len() as i64];
        for &(part, seq) in fences {
            args.extend([i64::from(part), seq]);
        }
        for (_, target) in targets {
            args.extend(target.stats.to_array());
            args.push(target.version);
        }
        let script = self.repair_script.clone();
        self.with_conn(|mut conn| async move {
            let mut invocation = script.prepare_invoke();
            invocation.key(keys).arg(args);
            Ok(invocation.invoke_async(&mut conn).await?)
        })
        .await
    }

    /// Every key under the prefix (tests and tooling; SCAN, so Redis is never blocked).
    pub async fn keys(&self) -> Result<Vec<String>, StatsError> {
        let pattern = format!("{}*", self.prefix);
        self.with_conn(|mut conn| async move {
            let mut keys = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        })
        .await
    }

    /// Deletes every key under the prefix (tests and tooling).
    pub async fn delete_all(&self) -> Result<u64, StatsError> {
        let keys = self.keys().await?;
        let mut deleted = 0;
        for chunk in keys.chunks(1000) {
            let chunk = chunk.to_vec();
            deleted += self
                .with_conn(|mut conn| async move {
                    Ok(redis::cmd("DEL")
                        .arg(&chunk)
                        .query_async::<u64>(&mut conn)
                        .await?)
                })
                .await?;
        }
        Ok(deleted)
    }
}

fn unexpected_reply(script: &str, reply: &[i64]) -> StatsError {
    StatsError::Redis(RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply from a stats script",
        format!("{script}: {reply:?}"),
    )))
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
