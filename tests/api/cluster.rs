//! A Redis Cluster under the service (REDIS_CLUSTER=true): a master killed with SIGKILL while
//! ratings flow, its replica promoted; the stats end exact, no 5xx on the way. Uses the
//! cluster of scripts/redis-cluster (3 masters, a replica each), which it restores after.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use post_rate::stats::StatsStore;

use crate::common::losses::{self, Traffic};
use crate::common::{
    redis_cluster, redis_cluster_script, test_settings, wait_until, TestApp, JWT_SECRET,
};

/// Stats must be back within this long after the traffic ends (DESIGN §8.3 says 30 s).
const HEALED_WITHIN: Duration = Duration::from_secs(30);

/// The port of every master serving slots, and the pid of its process, as the first node
/// that answers sees them (never only the first seed: it may be the master just killed).
fn masters() -> Vec<(u16, u32)> {
    let seeds = redis_cluster();
    let view = seeds
        .split(',')
        .filter_map(|seed| seed.rsplit_once(':')?.1.parse::<u16>().ok())
        .find_map(|port| {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "nodes"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && text.contains("master")).then_some(text)
        })
        .unwrap_or_default();
    view.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
        })
        .filter_map(|l| {
            let addr = l.split_whitespace().nth(1)?.split('@').next()?;
            let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
            let pid = std::fs::read_to_string(format!(
                "/tmp/post-rate/redis-cluster-30001/{port}/redis.pid"
            ))
            .ok()?
            .trim()
            .parse()
            .ok()?;
            Some((port, pid))
        })
        .collect()
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}

/// Posts spread over the partitions until every master holds some of them.
async fn posts_on_every_master(app: &TestApp, store: &StatsStore) -> Vec<i64> {
    let author = app.register("author").await;
    let mut posts = Vec::new();
    for i in 0..24 {
        posts.push(app.create_post(&author, &format!("post {i}")).await);
    }
    assert!(
        posts
            .iter()
            .map(|&p| store.partition_of(p))
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 12,
        "posts in every partition"
    );
    posts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_traffic_fails_over_and_the_stats_end_exact() {
    let mut settings = test_settings();
    settings.redis_url = redis_cluster();
    settings.redis_cluster = true;
    settings.redis_timeout = Duration::from_millis(1000);
    losses::quick_healing(&mut settings);
    let app = TestApp::with_settings(settings).await;
    let store = losses::store(&app.settings);
    let posts = posts_on_every_master(&app, &store).await;
    let tokens = losses::quick_tokens(&app.settings.database_url, JWT_SECRET, 12).await;

    let traffic = Traffic::start(vec![app.base.clone()], posts.clone(), tokens.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = masters();
    assert_eq!(before.len(), 3, "3 masters: {before:?}");
    let (victim, pid) = before[0];
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // The replica is promoted once the others see the master fail (node timeout 2 s).
    let survivor = before[1].0;
    wait_until(
        "the replica promoted",
        Duration::from_secs(30),
        || async move {
            let now = masters();
            cluster_ok(survivor) && now.len() == 3 && now.iter().all(|(p, _)| *p != victim)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = traffic.stop().await;
    assert!(seen.ok > 100, "ratings flowed: {seen:?}");
    assert_eq!(seen.server_errors, 0, "no 5xx: {seen:?}");
    app.wait_idle().await;
    app.wait_exact(&posts, HEALED_WITHIN).await;

    // The killed node comes back as a replica of the master promoted in its place.
    redis_cluster_script(&["start"]);
    let per_node: HashMap<String, Vec<String>> = store.keys_per_node().await.expect("scan");
    assert_eq!(per_node.len(), 3, "{:?}", per_node.keys());
    assert!(per_node.values().all(|keys| !keys.is_empty()));
}
