//! Reads of the stats store: pages of stats, versions, fences, and key scans.

use std::collections::HashMap;

use futures::future::try_join_all;
use redis::RedisError;

use super::{StatsStore, StoredStats, FIELDS, FIELDS_AND_VERSION};
use crate::stats::repairs::Cause;
use crate::stats::{is_possible, PostStats, StatsError};

impl StatsStore {
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
                if is_possible(&s.stats) {
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
