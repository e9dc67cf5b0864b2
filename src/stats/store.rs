//! The Redis stats store: one hash per post, changed only by the fenced apply script
//! (and by `reconcile`), read in one pipelined round trip per page.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool::Runtime;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};

use super::{PostStats, StatsError};
use crate::events::wire::RatingEvent;
use crate::worker::PerWorker;

const FIELDS: [&str; 10] = ["c", "s", "h0", "h1", "h2", "h3", "h4", "h5", "w", "ws"];

/// A pooled connection that was used this recently is handed out without a check.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// deadpool-redis's manager without its check on every checkout: that check (UNWATCH + PING)
/// is a Redis round trip per `get`, which doubled the round trips of a rating write. A
/// connection used within [`TRUSTED_IDLE`] is handed out as it is; a broken one fails its
/// next command, and [`StatsStore::with_conn`] then takes it out of the pool. Connections
/// idle for longer are checked as before.
struct Manager(deadpool_redis::Manager);

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.0.create().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < TRUSTED_IDLE {
            return Ok(());
        }
        self.0.recycle(conn, metrics).await
    }
}

type Pool = managed::Pool<Manager>;

/// What one apply did with its events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: u64,
    /// At or below the fence: delivered before.
    pub duplicates: u64,
    /// Beyond the fence with a hole before them: the relay delivers them again in order.
    pub gaps: u64,
}

#[derive(Clone)]
pub struct StatsStore {
    /// `REDIS_POOL_SIZE` connections shared out over the HTTP workers ([`crate::worker`]).
    pool: PerWorker<Pool>,
    prefix: Arc<str>,
    timeout: Duration,
    apply_script: Arc<Script>,
    reconcile_script: Arc<Script>,
}

/// A run of consecutive sequence numbers of one partition, deltas summed per post.
struct Segment<'a> {
    partition: i32,
    events: &'a [RatingEvent],
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
            Pool::builder(Manager(manager))
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
            reconcile_script: Arc::new(Script::new(include_str!("reconcile.lua"))),
        })
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

    pub async fn ping(&self) -> Result<(), StatsError> {
        self.with_conn(|mut conn| async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// The stats of these posts in one pipelined round trip; absent posts are all zero.
    pub async fn load_many(&self, post_ids: &[i64]) -> Result<HashMap<i64, PostStats>, StatsError> {
        if post_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for &id in post_ids {
            pipe.cmd("HMGET").arg(self.post_key(id)).arg(&FIELDS[..]);
        }
        let rows: Vec<Vec<Option<i64>>> = self
            .with_conn(|mut conn| async move { Ok(pipe.query_async(&mut conn).await?) })
            .await?;
        Ok(post_ids
            .iter()
            .zip(rows)
            .map(|(&id, row)| {
                let mut values = [0i64; 10];
                for (v, got) in values.iter_mut().zip(row) {
                    *v = got.unwrap_or(0);
                }
                (id, PostStats::from_array(values))
            })
            .collect())
    }

    /// The highest applied sequence of every partition that has one.
    pub async fn fences(&self) -> Result<HashMap<i32, i64>, StatsError> {
        let key = self.fence_key();
        self.with_conn(|mut conn| async move {
            let all: HashMap<i32, i64> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await?;
            Ok(all)
        })
        .await
    }

    /// Applies events (in delivery order) exactly once, whatever was applied before: the
    /// script skips what its partition fence has seen. Safe to call again after an error.
    pub async fn apply(&self, events: &[RatingEvent]) -> Result<ApplyReport, StatsError> {
        // A stable sort: each partition keeps its delivery order, and the runs get long.
        let mut sorted = events.to_vec();
        sorted.sort_by_key(|e| e.partition);
        let mut segments = segments(&sorted);
        loop {
            if segments.is_empty() {
                return Ok(ApplyReport::default());
            }
            let (keys, args) = self.script_input(&segments);
            let script = self.apply_script.clone();
            let reply: Vec<i64> = self
                .with_conn(|mut conn| async move {
                    let mut invocation = script.prepare_invoke();
                    invocation.key(keys).arg(args);
                    Ok(invocation.invoke_async(&mut conn).await?)
                })
                .await?;
            match reply.as_slice() {
                [0, applied, duplicates, gaps] => {
                    return Ok(ApplyReport {
                        applied: *applied as u64,
                        duplicates: *duplicates as u64,
                        gaps: *gaps as u64,
                    })
                }
                // A segment straddles its fence: drop the part already applied and retry.
                [-1, index, fence] => {
                    let seg = &mut segments[(*index - 1) as usize];
                    let keep = seg.events.iter().position(|e| e.seq > *fence).unwrap_or(0);
                    seg.events = &seg.events[keep..];
                }
                other => {
                    return Err(StatsError::Redis(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "unexpected reply from the apply script",
                        format!("{other:?}"),
                    ))))
                }
            }
        }
    }

    fn script_input(&self, segments: &[Segment<'_>]) -> (Vec<String>, Vec<i64>) {
        let mut keys = vec![self.fence_key()];
        let mut key_index: HashMap<i64, i64> = HashMap::new();
        let mut args = vec![segments.len() as i64];
        for seg in segments {
            let mut per_post: Vec<(i64, PostStats)> = Vec::new();
            let mut slot: HashMap<i64, usize> = HashMap::new();
            for e in seg.events {
                let i = *slot.entry(e.post_id).or_insert_with(|| {
                    per_post.push((e.post_id, PostStats::default()));
                    per_post.len() - 1
                });
                per_post[i].1.add(&e.delta);
            }
            let (first, last) = match (seg.events.first(), seg.events.last()) {
                (Some(f), Some(l)) => (f.seq, l.seq),
                _ => (1, 0),
            };
            args.extend([i64::from(seg.partition), first, last, per_post.len() as i64]);
            for (post_id, delta) in per_post {
                let index = *key_index.entry(post_id).or_insert_with(|| {
                    keys.push(self.post_key(post_id));
                    keys.len() as i64
                });
                args.push(index);
                args.extend(delta.to_array());
            }
        }
        (keys, args)
    }

    /// Overwrites the stats of `targets` (those that differ) and raises the fences to
    /// `last_seqs`, atomically; returns how many posts differed. With `dry_run`, compares only.
    pub async fn reconcile_chunk(
        &self,
        targets: &[(i64, PostStats)],
        last_seqs: &[(i32, i64)],
        dry_run: bool,
    ) -> Result<u64, StatsError> {
        let mut keys = vec![self.fence_key()];
        keys.extend(targets.iter().map(|(id, _)| self.post_key(*id)));
        let mut args: Vec<i64> = vec![i64::from(dry_run), last_seqs.len() as i64];
        for &(part, seq) in last_seqs {
            args.extend([i64::from(part), seq]);
        }
        for (_, stats) in targets {
            args.extend(stats.to_array());
        }
        let script = self.reconcile_script.clone();
        self.with_conn(|mut conn| async move {
            let mut invocation = script.prepare_invoke();
            invocation.key(keys).arg(args);
            Ok(invocation.invoke_async(&mut conn).await?)
        })
        .await
    }

    /// Deletes every key under the prefix (tests and tooling).
    pub async fn delete_all(&self) -> Result<u64, StatsError> {
        let pattern = format!("{}*", self.prefix);
        self.with_conn(|mut conn| async move {
            let mut deleted = 0;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                if !keys.is_empty() {
                    deleted += redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<u64>(&mut conn)
                        .await?;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        })
        .await
    }
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
    use crate::events::wire::StatsDelta;

    fn ev(partition: i32, seq: i64) -> RatingEvent {
        RatingEvent {
            partition,
            seq,
            post_id: 1,
            committed_ms: 0,
            delta: StatsDelta::default(),
        }
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
