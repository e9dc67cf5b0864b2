//! The Redis stats store: one hash per post, changed only by the fenced apply script and by
//! repairs, read in one pipelined round trip per page. What it finds wrong (a partition with
//! missing events, a post that does not follow on, an impossible stat) goes to its
//! [`RepairQueue`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::Object;
use deadpool::Runtime;
use futures::future::try_join_all;
use redis::{RedisError, Script};

use super::conn::{Manager, Pool, RedisAddr, RedisConn};
use super::repairs::{Cause, RepairQueue};
use super::{PostStats, StatsError};
use crate::config::Settings;
use crate::model::RatingEvent;
use crate::worker::PerWorker;

const FIELDS: [&str; 10] = ["c", "s", "h0", "h1", "h2", "h3", "h4", "h5", "w", "ws"];
/// The stats fields and the version a hash has reached, as repairs read and write them.
const FIELDS_AND_VERSION: [&str; 11] =
    ["c", "s", "h0", "h1", "h2", "h3", "h4", "h5", "w", "ws", "v"];

/// Which Redis the store talks to and how its keys are laid out.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub addr: RedisAddr,
    /// `REDIS_KEY_PREFIX`: every key starts with it.
    pub prefix: String,
    /// `KAFKA_PARTITIONS`: the keys of a post carry its partition's hash tag.
    pub partitions: i32,
}

impl RedisTarget {
    pub fn from_settings(s: &Settings) -> Self {
        RedisTarget {
            addr: RedisAddr::new(&s.redis_url, s.redis_cluster),
            prefix: s.redis_key_prefix.clone(),
            partitions: s.kafka_partitions,
        }
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
    cluster: bool,
    prefix: Arc<str>,
    partitions: i32,
    /// The hash tag of each partition ([`super::slots`]).
    tags: Arc<[String]>,
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
        target: &RedisTarget,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, StatsError> {
        Self::for_workers(target, pool_size, timeout, 0)
    }

    /// A store whose `pool_size` connections are shared out over `http_workers` pools, plus
    /// a pool of that share for every other thread ([`PerWorker`]).
    pub fn for_workers(
        target: &RedisTarget,
        pool_size: usize,
        timeout: Duration,
        http_workers: usize,
    ) -> Result<Self, StatsError> {
        if target.prefix.contains(['{', '}']) {
            return Err(StatsError::Config(
                "REDIS_KEY_PREFIX must not contain { or }: the keys' hash tags follow it".into(),
            ));
        }
        let pool = PerWorker::split(pool_size, http_workers, |size| {
            let manager = Manager::new(&target.addr, timeout)
                .map_err(|e| StatsError::Config(e.to_string()))?;
            Pool::builder(manager)
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
            cluster: target.addr.is_cluster(),
            prefix: target.prefix.as_str().into(),
            partitions: target.partitions.max(1),
            tags: super::slots::partition_tags(target.partitions).into(),
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

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The partition of a post: the same rule as `db::outbox::partition_of`.
    pub fn partition_of(&self, post_id: i64) -> i32 {
        post_id.rem_euclid(i64::from(self.partitions)) as i32
    }

    /// Every key of one partition carries its hash tag, so a cluster keeps them in one slot:
    /// a fenced apply, a repair and a burst call each touch a single slot.
    fn tag(&self, partition: i32) -> String {
        match self.tags.get(partition as usize) {
            Some(tag) => format!("{{{tag}}}"),
            None => format!("{{p{partition}}}"),
        }
    }

    pub fn post_key(&self, post_id: i64) -> String {
        let tag = self.tag(self.partition_of(post_id));
        format!("{}stats:{tag}:{post_id}", self.prefix)
    }

    pub fn burst_key(&self, post_id: i64) -> String {
        let tag = self.tag(self.partition_of(post_id));
        format!("{}burst:{tag}:{post_id}", self.prefix)
    }

    /// The raters of the post's current burst bucket; kept beside [`Self::burst_key`].
    pub fn burst_raters_key(&self, post_id: i64) -> String {
        format!("{}:raters", self.burst_key(post_id))
    }

    /// The highest sequence of `partition` applied.
    pub fn fence_key(&self, partition: i32) -> String {
        format!("{}fence:{}", self.prefix, self.tag(partition))
    }

    /// Raised by every repair that changed something: instances drop their cached stats
    /// when they see it move. Global, so a tag of its own.
    fn epoch_key(&self) -> String {
        format!("{}repair-epoch:{{global}}", self.prefix)
    }

    /// Splits items into the groups one script or pipeline may take: everything at once on
    /// one server, one group per partition (one slot) in a cluster.
    fn by_slot<T>(&self, items: Vec<T>, partition: impl Fn(&T) -> i32) -> Vec<Vec<T>> {
        if !self.cluster {
            return if items.is_empty() {
                Vec::new()
            } else {
                vec![items]
            };
        }
        let mut groups: Vec<(i32, Vec<T>)> = Vec::new();
        for item in items {
            let part = partition(&item);
            match groups.iter_mut().find(|(p, _)| *p == part) {
                Some((_, group)) => group.push(item),
                None => groups.push((part, vec![item])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// Runs `f` on a pooled connection, the whole bounded by the configured timeout. A
    /// connection that timed out or failed as a connection (not a script or type error) leaves
    /// the pool instead of going back to it.
    pub async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, StatsError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = Result<T, StatsError>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let pooled = tokio::time::timeout_at(deadline, self.pool.local().get())
            .await
            .map_err(|_| StatsError::Timeout)??;
        // A connection is a handle to shared sockets: the clone is cheap, and `pooled` stays
        // here to be returned or discarded.
        let result = tokio::time::timeout_at(deadline, f(RedisConn::clone(&pooled)))
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
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("GET").arg("maxmemory-policy");
            let pair: Vec<String> =
                redis::from_redis_value(conn.any_node(cmd).await?).map_err(RedisError::from)?;
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

    /// The stats of these posts in one pipelined round trip (in a cluster, one pipeline per
    /// partition, all sent at once); absent posts are all zero. A
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

    /// The stats and versions of these posts as stored, pipelined like [`Self::load_many`].
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
        let groups = self.by_slot(post_ids.to_vec(), |&id| self.partition_of(id));
        let rows = try_join_all(groups.into_iter().map(|ids| {
            let mut pipe = redis::pipe();
            for &id in &ids {
                pipe.cmd("HMGET").arg(self.post_key(id)).arg(fields);
            }
            async move {
                let rows: Vec<Vec<Option<i64>>> = self
                    .with_conn(|mut conn| async move { Ok(pipe.query_async(&mut conn).await?) })
                    .await?;
                Ok::<_, StatsError>(ids.into_iter().zip(rows))
            }
        }))
        .await?;
        Ok(rows
            .into_iter()
            .flatten()
            .map(|(id, row)| {
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

    /// The fences and the repair epoch, in one `MGET` (which redis-rs splits per node in a
    /// cluster).
    pub async fn fences_and_epoch(&self) -> Result<(HashMap<i32, i64>, i64), StatsError> {
        let mut cmd = redis::cmd("MGET");
        for part in 0..self.partitions {
            cmd.arg(self.fence_key(part));
        }
        cmd.arg(self.epoch_key());
        let mut values: Vec<Option<i64>> = self
            .with_conn(|mut conn| async move { Ok(cmd.query_async(&mut conn).await?) })
            .await?;
        let epoch = values.pop().flatten().unwrap_or(0);
        let fences = (0..self.partitions)
            .zip(values)
            .filter_map(|(part, fence)| Some((part, fence?)))
            .collect();
        Ok((fences, epoch))
    }

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

    /// Overwrites the stats and versions of `targets` (those that differ) and sets the fences
    /// of `fences` to exactly these sequences, atomically per partition (one script per
    /// slot in a cluster, one for all on a single server); returns how many posts differed.
    /// With `dry_run`, compares only. The caller holds the relay's stamp lock, so nothing is
    /// stamped beyond the snapshot the targets come from until it is done. A change raises
    /// the repair epoch once all is written.
    pub async fn repair_chunk(
        &self,
        targets: &[(i64, StoredStats)],
        fences: &[(i32, i64)],
        dry_run: bool,
    ) -> Result<u64, StatsError> {
        enum Item<'a> {
            Fence(i32, i64),
            Post(i64, &'a StoredStats),
        }
        let items: Vec<Item<'_>> = fences
            .iter()
            .map(|&(part, seq)| Item::Fence(part, seq))
            .chain(targets.iter().map(|(id, t)| Item::Post(*id, t)))
            .collect();
        let groups = self.by_slot(items, |item| match item {
            Item::Fence(part, _) => *part,
            Item::Post(id, _) => self.partition_of(*id),
        });
        let replies = try_join_all(groups.into_iter().map(|group| {
            let (mut keys, mut seqs, mut posts) = (Vec::new(), Vec::new(), Vec::new());
            let mut values: Vec<i64> = Vec::new();
            for item in &group {
                match item {
                    Item::Fence(part, seq) => {
                        keys.push(self.fence_key(*part));
                        seqs.push(*seq);
                    }
                    Item::Post(id, target) => {
                        posts.push(self.post_key(*id));
                        values.extend(target.stats.to_array());
                        values.push(target.version);
                    }
                }
            }
            let mut args: Vec<i64> = vec![i64::from(dry_run), seqs.len() as i64];
            args.extend(seqs);
            args.extend(values);
            keys.extend(posts);
            let script = self.repair_script.clone();
            self.with_conn(|mut conn| async move {
                let mut invocation = script.prepare_invoke();
                invocation.key(keys).arg(args);
                let (drift, changed): (u64, i64) = invocation.invoke_async(&mut conn).await?;
                Ok((drift, changed == 1))
            })
        }))
        .await?;
        if replies.iter().any(|(_, changed)| *changed) {
            let key = self.epoch_key();
            self.with_conn(|mut conn| async move {
                let _: i64 = redis::cmd("INCR").arg(key).query_async(&mut conn).await?;
                Ok(())
            })
            .await?;
        }
        Ok(replies.iter().map(|(drift, _)| drift).sum())
    }

    /// Every key under the prefix, on every master of a cluster (tests and tooling; SCAN, so
    /// Redis is never blocked).
    pub async fn keys(&self) -> Result<Vec<String>, StatsError> {
        Ok(self
            .keys_per_node()
            .await?
            .into_values()
            .flatten()
            .collect())
    }

    /// The keys under the prefix per node (`host:port`, or `""` for a single server).
    pub async fn keys_per_node(&self) -> Result<HashMap<String, Vec<String>>, StatsError> {
        let pattern = format!("{}*", self.prefix);
        self.with_conn(|mut conn| async move {
            let nodes = match conn.masters().await? {
                Some(masters) => masters.into_iter().map(Some).collect(),
                None => vec![None],
            };
            let mut out = HashMap::new();
            for node in nodes {
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let reply = match &node {
                        Some((host, port)) => conn.node(cmd, host, *port).await?,
                        None => cmd.query_async(&mut conn).await?,
                    };
                    let (next, batch): (u64, Vec<String>) =
                        redis::from_redis_value(reply).map_err(RedisError::from)?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                let name = node.map_or_else(String::new, |(h, p)| format!("{h}:{p}"));
                out.insert(name, keys);
            }
            Ok(out)
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
