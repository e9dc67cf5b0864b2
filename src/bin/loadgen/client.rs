//! The few API calls loadgen makes, over one pooled HTTP/1.1 client.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Api {
    client: Client,
    base: String,
}

/// The stats fields of a post, as the API shows them.
#[derive(Debug, Deserialize)]
pub struct PostStats {
    pub rating_count: Option<i64>,
    pub average_rating: Option<f64>,
    pub raw_average_rating: Option<f64>,
    pub rating_histogram: Option<[i64; 6]>,
}

pub type Result<T> = std::result::Result<T, String>;

impl Api {
    pub fn new(base: &str, connections: usize) -> Result<Self> {
        let client = Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req
    }

    /// Sends one request and reads the whole answer; `Err` only when no answer came.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<StatusCode> {
        let resp = self
            .request(method, path, token, body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        resp.bytes().await.map_err(|e| e.to_string())?;
        Ok(status)
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        want: StatusCode,
    ) -> Result<Value> {
        // A sign-up or sign-in refused because password hashing is at capacity did nothing:
        // send it again after its Retry-After, as a client should.
        let mut refusals = 0;
        let (status, text) = loop {
            let resp = self
                .request(method.clone(), path, token, body)
                .send()
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let text = resp.text().await.map_err(|e| e.to_string())?;
            match retry_after {
                Some(secs) if refusals < 60 && text.contains("/problems/overloaded") => {
                    refusals += 1;
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                _ => break (status, text),
            }
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(format!(
                "{method} {path}: {status}: {text}\n  the service rate-limits this request; \
                 start it with RATE_LIMIT_AUTH_PER_MIN=0 RATE_LIMIT_WRITES_PER_MIN=0 for load tests"
            ));
        }
        if status != want {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Registers a user and signs them in: (id, bearer token).
    pub async fn user(&self, username: &str, password: &str) -> Result<(i64, String)> {
        let creds = json!({ "username": username, "password": password });
        let created = self
            .expect(
                Method::POST,
                "/api/v1/users",
                None,
                Some(&creds),
                StatusCode::CREATED,
            )
            .await?;
        let token = self
            .expect(
                Method::POST,
                "/api/v1/auth/token",
                None,
                Some(&creds),
                StatusCode::OK,
            )
            .await?;
        match (created["id"].as_i64(), token["access_token"].as_str()) {
            (Some(id), Some(t)) => Ok((id, t.to_owned())),
            _ => Err(format!("unexpected answers: {created} / {token}")),
        }
    }

    pub async fn create_post(&self, token: &str, title: &str, content: &str) -> Result<i64> {
        let body = json!({ "title": title, "content": content });
        let post = self
            .expect(
                Method::POST,
                "/api/v1/posts",
                Some(token),
                Some(&body),
                StatusCode::CREATED,
            )
            .await?;
        post["id"]
            .as_i64()
            .ok_or_else(|| format!("POST /posts answered without an id: {post}"))
    }

    pub async fn post_stats(&self, id: i64) -> Result<PostStats> {
        let path = format!("/api/v1/posts/{id}");
        let post = self
            .expect(Method::GET, &path, None, None, StatusCode::OK)
            .await?;
        serde_json::from_value(post).map_err(|e| format!("GET {path}: {e}"))
    }
}
