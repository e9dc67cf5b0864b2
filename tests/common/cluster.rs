//! The local Redis Cluster of scripts/redis-cluster (3 masters with a replica each), for the
//! tests that need one, and `TEST_REDIS_CLUSTER` (set by scripts/test for its cluster pass).

/// The local Redis Cluster of scripts/redis-cluster (3 masters with a replica each),
/// started unless it runs; returns its seed nodes for `REDIS_URL`.
pub fn redis_cluster() -> String {
    static SEEDS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SEEDS
        .get_or_init(|| {
            redis_cluster_script(&["start"]);
            let out = std::process::Command::new(cluster_script_path())
                .arg("nodes")
                .output()
                .expect("run scripts/redis-cluster nodes");
            String::from_utf8(out.stdout)
                .expect("seeds")
                .trim()
                .to_owned()
        })
        .clone()
}

fn cluster_script_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/redis-cluster")
}

/// Runs scripts/redis-cluster with `args` (one replica per master); panics when it fails.
pub fn redis_cluster_script(args: &[&str]) {
    let status = std::process::Command::new(cluster_script_path())
        .args(args)
        .env("REPLICAS", "1")
        .status()
        .expect("run scripts/redis-cluster");
    assert!(status.success(), "scripts/redis-cluster {args:?} failed");
}

/// `TEST_REDIS_CLUSTER`: the seed nodes of a Redis Cluster every test app uses.
pub fn cluster_seeds() -> Option<String> {
    std::env::var("TEST_REDIS_CLUSTER")
        .ok()
        .filter(|s| !s.is_empty())
}
