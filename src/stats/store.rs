//! The Redis stats store: one hash per post, changed only by the fenced apply script and by
//! repairs, read in one pipelined round trip per page. What it finds wrong (a partition with
//! missing events, a post that does not follow on, an impossible stat) goes to its
//! [`RepairQueue`].
//!
//! Here: the store, its keys and connections; reads and scans in [`read`], the fenced
//! apply in [`apply`], repairs in [`repair`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::Object;
use deadpool::Runtime;
use redis::{RedisError, Script};

use super::conn::{Manager, Pool, RedisAddr, RedisConn};
use super::repairs::RepairQueue;
use super::{PostStats, StatsError};
use crate::config::Settings;
use crate::per_worker::PerWorker;

mod apply;
mod read;
mod repair;

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

/// A post's stats and the version its hash has reached, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredStats {
    pub stats: PostStats,
    pub version: i64,
}

#[derive(Clone)]
pub struct StatsStore {
    /// `REDIS_POOL_SIZE` connections shared out over the HTTP workers ([`crate::per_worker`]).
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
}

fn unexpected_reply(script: &str, reply: &[i64]) -> StatsError {
    StatsError::Redis(RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply from a stats script",
        format!("{script}: {reply:?}"),
    )))
}
