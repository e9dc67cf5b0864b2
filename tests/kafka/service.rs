//! The service in Kafka mode for these tests: its settings, as a real `post-rate serve`
//! child process (to kill it for real), and a stream of ratings through its API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use post_rate::config::Settings;

use crate::broker::unique;
use crate::common::test_settings;

pub(crate) const EXACT_WITHIN: Duration = Duration::from_secs(40);

/// Settings for an instance on `brokers`, with a fresh topic and group.
pub(crate) fn kafka_settings(brokers: &str) -> Settings {
    let mut s = test_settings();
    s.kafka_brokers = Some(brokers.to_owned());
    s.kafka_topic = unique("post-rate-e2e");
    s.kafka_group_id = unique("post-rate-e2e-group");
    s.kafka_partitions = 4;
    s.kafka_message_timeout = Duration::from_secs(3);
    s.consumer_batch_wait = Duration::from_millis(10);
    s
}

/// A `post-rate serve` process (so it can be killed for real).
pub(crate) struct Process {
    child: Child,
    pub(crate) base: String,
}

impl Process {
    pub(crate) fn start(settings: &Settings, port: u16) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_post-rate"))
            .arg("serve")
            .env("DATABASE_URL", &settings.database_url)
            .env("REDIS_URL", &settings.redis_url)
            .env("REDIS_CLUSTER", settings.redis_cluster.to_string())
            .env("REDIS_KEY_PREFIX", &settings.redis_key_prefix)
            .env(
                "KAFKA_BROKERS",
                settings.kafka_brokers.as_deref().unwrap_or(""),
            )
            .env("KAFKA_TOPIC", &settings.kafka_topic)
            .env("KAFKA_GROUP_ID", &settings.kafka_group_id)
            .env("KAFKA_PARTITIONS", settings.kafka_partitions.to_string())
            .env("KAFKA_MESSAGE_TIMEOUT_MS", "3000")
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("JWT_SECRET", crate::common::JWT_SECRET)
            .env("STATS_CACHE_TTL_SECS", "0")
            .env("RATE_LIMIT_WRITES_PER_MIN", "0")
            .env("RATE_LIMIT_AUTH_PER_MIN", "0")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start post-rate");
        Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub(crate) async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("post-rate did not start");
    }

    pub(crate) async fn wait_joined(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + EXACT_WITHIN;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/metrics", self.base)).send().await {
                let text = r.text().await.unwrap_or_default();
                let joined = text
                    .lines()
                    .find_map(|l| l.strip_prefix("post_rate_consumer_rebalances_total "))
                    .is_some_and(|v| v.trim() != "0");
                if joined {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the consumer did not join its group");
    }

    /// SIGTERM, then the exit status (within `within`).
    pub(crate) async fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("post-rate did not exit within {within:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Rates through `base` until `stop`; returns how many got a 5xx or no answer at all.
pub(crate) async fn rating_stream(
    base: String,
    posts: Vec<i64>,
    users: Vec<(String, usize)>,
    stop: tokio_util::sync::CancellationToken,
) -> (usize, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut ok, mut server_errors) = (0, 0);
    let mut n = 0usize;
    while !stop.is_cancelled() {
        for (token, i) in &users {
            n += 1;
            let post = posts[(n + i) % posts.len()];
            let res = client
                .put(format!("{base}/api/v1/posts/{post}/rating"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "score": (n + i) % 6 }))
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => ok += 1,
                Ok(r) if r.status().is_server_error() => server_errors += 1,
                _ => {}
            }
        }
    }
    (ok, server_errors)
}
