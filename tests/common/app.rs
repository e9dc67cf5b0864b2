//! [`TestApp`]: the real service in-process, its settings, and the requests tests send it.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use post_rate::config::Settings;
use post_rate::server::{self, Running};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::cluster::cluster_seeds;
use super::database::{self, unique, url_of};
use super::wait::wait_until;

pub const JWT_SECRET: &str = "integration-test-secret-of-32-bytes!";

/// Settings for a test app: its own database and key prefix, no stats cache.
pub fn test_settings() -> Settings {
    // The service's warnings show under a failing test's output (RUST_LOG, default warn).
    let _ = env_logger::builder()
        .is_test(true)
        .parse_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let mut s = Settings::from_env().expect("settings");
    s.database_url = url_of(&unique("post_rate_test_"));
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

/// A [`TestApp`] to be: [`test_settings`] and what the test changes in them.
pub struct AppBuilder {
    settings: Settings,
}

impl AppBuilder {
    /// Changes the settings.
    pub fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self
    }

    /// Repairs and audits on a test's time scale ([`super::losses::quick_healing`]).
    pub fn quick_healing(self) -> Self {
        self.with(super::losses::quick_healing)
    }

    pub async fn start(self) -> TestApp {
        TestApp::with_settings(self.settings).await
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::builder().start().await
    }

    pub fn builder() -> AppBuilder {
        AppBuilder {
            settings: test_settings(),
        }
    }

    /// Starts the service with `settings`, its database copied from the migrated template
    /// unless it exists (an app restarted on the same database).
    pub async fn with_settings(settings: Settings) -> Self {
        database::create_from_template(&settings.database_url).await;
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
    pub fn state(&self) -> &post_rate::app::AppState {
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
        let conn = tokio::sync::Mutex::new(self.db().await);
        let conn = &conn;
        wait_until("an empty outbox", Duration::from_secs(20), || async move {
            let mut conn = conn.lock().await;
            post_rate::db::outbox::pending(&mut conn)
                .await
                .expect("pending")
                == 0
        })
        .await;
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

    /// Waits (up to `within`) until the unlabelled metric `name` satisfies `want`.
    pub async fn wait_metric(&self, name: &str, within: Duration, want: impl Fn(f64) -> bool) {
        let want = &want;
        wait_until(
            name,
            within,
            || async move { want(self.metric(name).await) },
        )
        .await;
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
                database::drop_database(&settings.database_url).await;
            });
        });
        let _ = cleanup.join();
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
