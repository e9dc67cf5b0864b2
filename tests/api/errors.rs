//! Every error is problem+json, actix's own included, and bad input leaves no trace.

use reqwest::Method;
use serde_json::json;

use crate::common::{problem, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies() {
    let app = TestApp::new().await;
    let user = app.register("erin").await;
    let post_url = app.url("/api/v1/posts");
    let send = |body: Vec<u8>, ct: Option<&'static str>| {
        let mut req = app
            .client
            .post(&post_url)
            .bearer_auth(&user.token)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    // Not JSON.
    problem(
        send(b"{\"title\": ".to_vec(), Some("application/json"))
            .await
            .unwrap(),
        400,
    )
    .await;
    problem(
        send(b"title=x".to_vec(), Some("application/json"))
            .await
            .unwrap(),
        400,
    )
    .await;
    // Invalid UTF-8 inside a JSON string.
    problem(
        send(
            b"{\"title\": \"\xff\xfe\", \"content\": \"c\"}".to_vec(),
            Some("application/json"),
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    // Nested past any sensible depth.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    problem(
        send(deep.into_bytes(), Some("application/json"))
            .await
            .unwrap(),
        400,
    )
    .await;
    // Wrong or missing content type.
    let json_body = json!({ "title": "t", "content": "c" })
        .to_string()
        .into_bytes();
    problem(
        send(json_body.clone(), Some("text/plain")).await.unwrap(),
        415,
    )
    .await;
    problem(send(json_body, None).await.unwrap(), 415).await;
    // Over 256 KiB.
    let big = json!({ "title": "t", "content": "x".repeat(300 * 1024) }).to_string();
    problem(
        send(big.into_bytes(), Some("application/json"))
            .await
            .unwrap(),
        413,
    )
    .await;
    // JSON, but not an object.
    problem(
        send(b"[1,2,3]".to_vec(), Some("application/json"))
            .await
            .unwrap(),
        422,
    )
    .await;
    problem(
        send(b"null".to_vec(), Some("application/json"))
            .await
            .unwrap(),
        422,
    )
    .await;
    // Content with a NUL character cannot be stored: refused, not a 500.
    let nul = json!({ "title": "t\u{0}", "content": "c" }).to_string();
    problem(
        send(nul.into_bytes(), Some("application/json"))
            .await
            .unwrap(),
        422,
    )
    .await;

    let res = app.request(Method::GET, "/api/v1/posts", None, None).await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["results"], json!([]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let app = TestApp::new().await;
    problem(app.request(Method::GET, "/nope", None, None).await, 404).await;
    problem(
        app.request(Method::GET, "/api/v1/nope", None, None).await,
        404,
    )
    .await;
    problem(
        app.request(Method::DELETE, "/api/v1/posts", None, None)
            .await,
        405,
    )
    .await;
    problem(
        app.request(Method::PATCH, "/api/v1/posts/1", None, None)
            .await,
        405,
    )
    .await;
    problem(
        app.request(Method::GET, "/api/v1/posts/1/rating", None, None)
            .await,
        405,
    )
    .await;
    problem(
        app.request(Method::GET, "/api/v1/users", None, None).await,
        405,
    )
    .await;
    // A 405 names what the resource allows.
    let res = app
        .request(Method::DELETE, "/api/v1/posts", None, None)
        .await;
    assert_eq!(res.headers()["allow"], "GET, POST");
    problem(res, 405).await;
    let res = app.request(Method::POST, "/healthz", None, None).await;
    assert_eq!(res.headers()["allow"], "GET");
    problem(res, 405).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    let res = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(res.status(), 200);
    let res = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    let res = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("post_rate_outbox_pending 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_offline_swagger_ui() {
    let app = TestApp::new().await;
    let res = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/v1/users", "post"),
        ("/api/v1/auth/token", "post"),
        ("/api/v1/posts", "get"),
        ("/api/v1/posts", "post"),
        ("/api/v1/posts/{id}", "get"),
        ("/api/v1/posts/{id}/rating", "put"),
        ("/api/v1/posts/{id}/rating", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} documented"
        );
    }
    let res = app.request(Method::GET, "/docs/", None, None).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "no external assets");
    let res = app
        .request(Method::GET, "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_request_ids() {
    let app = TestApp::new().await;
    let user = app.register("metric").await;
    let post = app.create_post(&user, "m").await;
    app.get_post(post, None).await;
    // A request id is echoed when sane, generated otherwise.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.len() >= 8 && !generated.contains(' '));

    let text = app
        .request(Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    for name in [
        "post_rate_http_requests_total",
        "post_rate_http_request_duration_seconds_bucket",
        "post_rate_outbox_pending",
        "post_rate_relay_published_total",
        "post_rate_events_applied_total",
        "post_rate_consumer_batch_size_bucket",
        "post_rate_stats_cache_hits_total",
        "post_rate_stats_cache_misses_total",
        "post_rate_burst_damped_ratings_total",
        "post_rate_redis_errors_total",
        "post_rate_event_lag_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // The route label is the pattern, not the raw path.
    assert!(
        text.contains(r#"route="/api/v1/posts/{id}""#)
            && !text.contains(&format!("/api/v1/posts/{post}\"")),
        "{text}"
    );
}
