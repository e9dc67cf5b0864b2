//! Test harness: each `TestApp` is the real service, started in-process on a free port
//! against its own PostgreSQL database and its own Redis key prefix, so tests run in
//! parallel and leave nothing behind (both are dropped when the app is).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use post_rate::config::Settings;
use post_rate::server::{self, Running};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

pub const JWT_SECRET: &str = "integration-test-secret-of-32-bytes!";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{}_{:x}", std::process::id(), n)
}

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

/// Settings for a test app: its own database and key prefix, no stats cache.
pub fn test_settings() -> Settings {
    // The service's warnings show under a failing test's output (RUST_LOG, default warn).
    let _ = env_logger::builder()
        .is_test(true)
        .parse_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let mut s = Settings::from_env().expect("settings");
    let base = admin_url();
    let db = unique("post_rate_test_");
    s.database_url = format!("{}/{db}", base.rsplit_once('/').expect("admin url").0);
    s.redis_key_prefix = format!("{}:", unique("post-rate-test-"));
    // scripts/test runs the stats, pipeline, damping and repair tests a second time against
    // the Redis Cluster of scripts/redis-cluster: TEST_REDIS_CLUSTER holds its seed nodes.
    if let Some(seeds) = cluster_seeds() {
        s.redis_url = seeds;
        s.redis_cluster = true;
    }
    s.bind_addr = "127.0.0.1:0".into();
    s.http_workers = 2;
    s.database_pool_size = 10;
    s.jwt_secret = JWT_SECRET.as_bytes().to_vec();
    s.jwt_secret_generated = false;
    s.stats_cache_ttl = Duration::ZERO;
    s.relay_poll = Duration::from_millis(5);
    // Tests register many users and write fast from one address; tests/api/limits.rs
    // turns the limits on.
    s.rate_limit_writes_per_min = 0;
    s.rate_limit_auth_per_min = 0;
    s
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub settings: Settings,
    running: Option<Running>,
}

pub struct User {
    pub id: i64,
    pub username: String,
    pub token: String,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_settings(test_settings()).await
    }

    pub async fn with_settings(settings: Settings) -> Self {
        let running = server::start(settings.clone())
            .await
            .expect("start service");
        TestApp {
            base: format!("http://{}", running.addr),
            client: Client::new(),
            settings,
            running: Some(running),
        }
    }

    /// The running service's state (its pools, caches and counters).
    pub fn state(&self) -> &post_rate::server::AppState {
        &self.running.as_ref().expect("running").state
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn register(&self, username: &str) -> User {
        let res = self
            .request(
                Method::POST,
                "/api/v1/users",
                None,
                Some(json!({ "username": username, "password": "password123" })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.expect("json");
        let id = body["id"].as_i64().expect("id");
        let res = self
            .request(
                Method::POST,
                "/api/v1/auth/token",
                None,
                Some(json!({ "username": username, "password": "password123" })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        User {
            id,
            username: username.into(),
            token: body["access_token"].as_str().expect("token").into(),
        }
    }

    pub async fn create_post(&self, author: &User, title: &str) -> i64 {
        let res = self
            .request(
                Method::POST,
                "/api/v1/posts",
                Some(&author.token),
                Some(json!({ "title": title, "content": "some content" })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.expect("json")["id"]
            .as_i64()
            .expect("id")
    }

    pub async fn rate(&self, user: &User, post: i64, score: i64) -> Response {
        self.request(
            Method::PUT,
            &format!("/api/v1/posts/{post}/rating"),
            Some(&user.token),
            Some(json!({ "score": score })),
        )
        .await
    }

    pub async fn get_post(&self, post: i64, user: Option<&User>) -> Value {
        let res = self
            .request(
                Method::GET,
                &format!("/api/v1/posts/{post}"),
                user.map(|u| u.token.as_str()),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("json")
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.settings.database_url)
            .await
            .expect("connect")
    }

    /// Waits until the outbox is empty: in embedded mode every event is then applied.
    pub async fn wait_idle(&self) {
        let mut conn = self.db().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = post_rate::db::outbox::pending(&mut conn)
                .await
                .expect("pending");
            if n == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "outbox still holds {n} events");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What `ratings` implies for a post, in the API's terms:
    /// (count, histogram, raw average, weighted average).
    pub async fn expected(&self, post: i64) -> (i64, [i64; 6], Option<f64>, Option<f64>) {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::SmallInt)]
            score: i16,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            weight: i32,
        }
        let mut conn = self.db().await;
        let rows: Vec<Row> =
            diesel::sql_query("SELECT score, weight FROM ratings WHERE post_id = $1")
                .bind::<diesel::sql_types::BigInt, _>(post)
                .load(&mut conn)
                .await
                .expect("ratings");
        let mut hist = [0i64; 6];
        let (mut sum, mut wsum, mut w) = (0i64, 0i64, 0i64);
        for r in &rows {
            hist[r.score as usize] += 1;
            sum += i64::from(r.score);
            wsum += i64::from(r.score) * i64::from(r.weight);
            w += i64::from(r.weight);
        }
        let n = rows.len() as i64;
        let raw = (n > 0).then(|| sum as f64 / n as f64);
        let damped = if w > 0 {
            Some(wsum as f64 / w as f64)
        } else {
            raw
        };
        (n, hist, raw, damped)
    }

    /// Asserts that the API shows exactly what `ratings` implies for `post`.
    pub async fn assert_exact(&self, post: i64) {
        let (count, hist, raw, damped) = self.expected(post).await;
        let got = self.get_post(post, None).await;
        assert_eq!(
            got["rating_count"],
            json!(count),
            "count of post {post}: {got}"
        );
        assert_eq!(
            got["rating_histogram"],
            json!(hist),
            "histogram of post {post}"
        );
        assert!(
            same_average(&got["raw_average_rating"], raw),
            "raw average of post {post}: {} vs {raw:?}",
            got["raw_average_rating"]
        );
        assert!(
            same_average(&got["average_rating"], damped),
            "average of post {post}: {} vs {damped:?}",
            got["average_rating"]
        );
    }

    /// Whether the API shows exactly what `ratings` implies for every post.
    pub async fn is_exact(&self, posts: &[i64]) -> bool {
        for &post in posts {
            let (count, hist, raw, damped) = self.expected(post).await;
            let got = self.get_post(post, None).await;
            if got["rating_count"] != json!(count)
                || got["rating_histogram"] != json!(hist)
                || !same_average(&got["raw_average_rating"], raw)
                || !same_average(&got["average_rating"], damped)
            {
                return false;
            }
        }
        true
    }

    /// Waits (up to `within`) until the stats of `posts` are exact, then asserts it: the
    /// path through a broker has a lag, but it must end exact.
    pub async fn wait_exact(&self, posts: &[i64], within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.is_exact(posts).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for &post in posts {
            self.assert_exact(post).await;
        }
    }

    /// The value of an unlabelled metric at `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

impl Drop for TestApp {
    /// Drops the database and the keys even when the test failed.
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
        let settings = self.settings.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // A Redis script already sent by an aborted relay still runs: let it land
                // before the keys go.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut target = post_rate::stats::RedisTarget::from_settings(&settings);
                if !settings.redis_cluster {
                    // Directly: a test may have pointed the service at a proxy that is gone.
                    target.addr = post_rate::stats::RedisAddr::Single(
                        std::env::var("REDIS_URL")
                            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
                    );
                }
                if let Ok(store) =
                    post_rate::stats::StatsStore::new(&target, 1, Duration::from_secs(5))
                {
                    let _ = store.delete_all().await;
                }
                if let Ok(mut conn) = AsyncPgConnection::establish(&admin_url()).await {
                    let name = settings.database_url.rsplit('/').next().unwrap_or_default();
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    ))
                    .execute(&mut conn)
                    .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// An average as the API sent it equals the one computed here. JSON text carries the exact
/// shortest representation, but serde_json's default float parser may land one unit in the
/// last place away, so allow that much.
pub fn same_average(got: &Value, want: Option<f64>) -> bool {
    match (got.as_f64(), want) {
        (Some(g), Some(w)) => (g - w).abs() <= 1e-12 * w.abs().max(1.0),
        (None, None) => got.is_null(),
        _ => false,
    }
}

/// Reads a problem+json error and checks its shape; returns the body.
pub async fn problem(res: Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        ct.starts_with("application/problem+json"),
        "content type {ct}"
    );
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], json!(status));
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}
