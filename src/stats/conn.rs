//! Connections to Redis, standalone or a Redis Cluster (`REDIS_CLUSTER`), behind one pool
//! shape: callers get a [`RedisConn`] and send commands, pipelines and scripts as usual; in a
//! cluster each goes to the node of its keys (a pipeline's keys must share one slot).

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// A pooled connection that was used this recently is handed out without a check.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    Single(String),
    /// `REDIS_CLUSTER=true`: `REDIS_URL` is a comma-separated list of seed nodes.
    Cluster(Vec<String>),
}

impl RedisAddr {
    pub fn new(url: &str, cluster: bool) -> Self {
        if cluster {
            RedisAddr::Cluster(
                url.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect(),
            )
        } else {
            RedisAddr::Single(url.to_owned())
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisAddr::Cluster(_))
    }
}

/// One connection of the pool: a multiplexed connection to one server, or a cluster
/// connection (itself multiplexed over one connection per node). Cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// Sends a keyless command to one node: the server, or any node of a cluster (where
    /// redis-rs would otherwise send some of them, such as `CONFIG GET`, to every node).
    pub async fn any_node(&mut self, cmd: Cmd) -> RedisResult<Value> {
        match self {
            RedisConn::Single(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                c.route_command(cmd, route).await
            }
        }
    }

    /// Sends `cmd` to the node at `host:port` (a cluster's master, for `SCAN`).
    pub async fn node(&mut self, cmd: Cmd, host: &str, port: u16) -> RedisResult<Value> {
        match self {
            RedisConn::Single(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port,
                });
                c.route_command(cmd, route).await
            }
        }
    }

    /// The masters a keyspace walk must visit: `None` for the one server; for a cluster
    /// the address of every master that serves slots, from `CLUSTER NODES`.
    pub async fn masters(&mut self) -> RedisResult<Option<Vec<(String, u16)>>> {
        if let RedisConn::Single(_) = self {
            return Ok(None);
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let text: String = redis::from_redis_value(self.any_node(cmd).await?)?;
        Ok(Some(masters_of(&text)))
    }
}

/// The masters serving slots in `CLUSTER NODES` output (`id host:port@bus flags master ...
/// slots`), failed ones left out.
fn masters_of(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serves_slots = fields.len() > 8;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") || !serves_slots {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

enum Client {
    Single(deadpool_redis::Manager),
    Cluster(ClusterClient),
}

/// Creates connections of either kind, with redis-rs's own limit on an answer (500 ms by
/// default) raised to `REDIS_TIMEOUT_MS`, so a long script (a full consumer batch, a repair
/// chunk) under load is bounded by the store's own deadline alone. (deadpool-redis' cluster
/// manager cannot set that limit, hence a manager of our own.)
///
/// It skips deadpool-redis's check on every checkout: that check (a PING) is a Redis round
/// trip per `get`, which doubled the round trips of a rating write. A connection used
/// within [`TRUSTED_IDLE`] is handed out as it is; a broken one fails its next command, and
/// the store then takes it out of the pool. Connections idle for longer are checked.
pub struct Manager {
    client: Client,
    timeout: Duration,
}

impl Manager {
    pub fn new(addr: &RedisAddr, timeout: Duration) -> RedisResult<Self> {
        let client = match addr {
            RedisAddr::Single(url) => Client::Single(deadpool_redis::Manager::new(url.as_str())?),
            RedisAddr::Cluster(seeds) => Client::Cluster(
                ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?,
            ),
        };
        Ok(Manager { client, timeout })
    }
}

impl managed::Manager for Manager {
    type Type = RedisConn;
    type Error = RedisError;

    async fn create(&self) -> Result<RedisConn, RedisError> {
        match &self.client {
            Client::Single(m) => {
                let mut conn = managed::Manager::create(m).await?;
                conn.set_response_timeout(self.timeout);
                Ok(RedisConn::Single(conn))
            }
            Client::Cluster(c) => Ok(RedisConn::Cluster(c.get_async_connection().await?)),
        }
    }

    async fn recycle(&self, conn: &mut RedisConn, metrics: &Metrics) -> RecycleResult<RedisError> {
        if metrics.last_used() < TRUSTED_IDLE {
            return Ok(());
        }
        match (&self.client, conn) {
            (Client::Single(m), RedisConn::Single(c)) => m.recycle(c, metrics).await,
            (_, conn) => {
                let _: String = redis::cmd("PING").query_async(conn).await?;
                Ok(())
            }
        }
    }
}

pub type Pool = managed::Pool<Manager>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_split_on_commas() {
        assert_eq!(
            RedisAddr::new("redis://a:1, redis://b:2,", true),
            RedisAddr::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert_eq!(
            RedisAddr::new("redis://a:1", false),
            RedisAddr::Single("redis://a:1".into())
        );
    }

    #[test]
    fn masters_serving_slots_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:30003@40003 master,fail - 0 1 3 connected
d4 127.0.0.1:30004@40004 slave b2 0 1 2 connected
e5 127.0.0.1:30006@40006 master - 0 1 7 connected 10923-16383
f6 127.0.0.1:30005@40005 master - 0 1 8 connected
";
        assert_eq!(
            masters_of(nodes),
            vec![
                ("127.0.0.1".into(), 30001),
                ("127.0.0.1".into(), 30002),
                ("127.0.0.1".into(), 30006)
            ]
        );
    }
}
