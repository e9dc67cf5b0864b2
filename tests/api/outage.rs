//! Dependency outages: PostgreSQL or Redis unreachable (through a proxy the test cuts).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{problem, test_settings, wait_until, TestApp};
use crate::proxy::ChaosProxy;

fn replace_host(url: &str, addr: std::net::SocketAddr) -> String {
    let mut parsed = url::Url::parse(url).expect("url");
    parsed.set_ip_host(addr.ip()).expect("host");
    parsed.set_port(Some(addr.port())).expect("port");
    parsed.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_503_quickly_and_recovers_by_itself() {
    let mut settings = test_settings();
    let proxy = ChaosProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let direct = settings.database_url.clone();
    settings.database_url = replace_host(&direct, proxy.addr);
    // The first page stays in memory for the whole test.
    settings.page_cache.first_ttl = Duration::from_secs(60);
    let app = TestApp::with_settings(settings).await;
    let author = app.register("pgdown").await;
    let rater = app.register("pgrater").await;
    let post = app.create_post(&author, "before").await;
    assert_eq!(app.rate(&rater, post, 4).await.status(), 200);
    app.wait_idle().await;
    let warm = app.request(Method::GET, "/api/v1/posts", None, None).await;
    assert_eq!(warm.status(), StatusCode::OK);

    proxy.cut();
    // Posts already in memory are still served to anonymous readers (stats from Redis)...
    for path in [
        "/api/v1/posts?limit=5".to_owned(),
        format!("/api/v1/posts/{post}"),
    ] {
        let res = app.request(Method::GET, &path, None, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body.to_string().contains("\"rating_count\":1"),
            "{path}: {body}"
        );
    }
    // ...but not to a signed-in reader, whose own scores must come from PostgreSQL.
    let requests = [
        (
            Method::GET,
            "/api/v1/posts".to_owned(),
            Some(rater.token.clone()),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/posts/{post}"),
            Some(rater.token.clone()),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/posts/{}", post + 1),
            None,
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/posts/{post}/rating"),
            Some(rater.token.clone()),
            Some(json!({ "score": 2 })),
        ),
        (
            Method::POST,
            "/api/v1/posts".to_owned(),
            Some(author.token.clone()),
            Some(json!({ "title": "t", "content": "c" })),
        ),
        (
            Method::POST,
            "/api/v1/auth/token".to_owned(),
            None,
            Some(json!({ "username": "pgdown", "password": "password123" })),
        ),
    ];
    for (method, path, token, body) in requests {
        let started = Instant::now();
        let res = app
            .request(method.clone(), &path, token.as_deref(), body)
            .await;
        let took = started.elapsed();
        let p = problem(res, 503).await;
        assert!(
            took < Duration::from_secs(6),
            "{method} {path} took {took:?}"
        );
        assert!(
            !p["detail"].as_str().unwrap().contains("5432"),
            "no internal detail: {p}"
        );
    }
    let res = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert_eq!(
        app.request(Method::GET, "/healthz", None, None)
            .await
            .status(),
        200
    );

    proxy.restore();
    let (app_ref, rater_ref) = (&app, &rater);
    wait_until(
        "ratings accepted again",
        Duration::from_secs(15),
        || async move {
            let status = app_ref.rate(rater_ref, post, 5).await.status();
            assert!(status.is_success() || status.is_server_error(), "{status}");
            status == StatusCode::OK
        },
    )
    .await;
    // /readyz shows a snapshot up to a second old.
    wait_until(
        "/readyz ready again",
        Duration::from_secs(5),
        || async move {
            app_ref
                .request(Method::GET, "/readyz", None, None)
                .await
                .status()
                == StatusCode::OK
        },
    )
    .await;
    // The rating written before the outage survived, the one after it counts, exactly once.
    app.wait_idle().await;
    let got = app.get_post(post, Some(&rater)).await;
    assert_eq!(got["user_rating"], 5);
    app.wait_exact(&[post], Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_writes_and_degrades_reads() {
    let mut settings = test_settings();
    let proxy = ChaosProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    settings.redis_url = replace_host(&settings.redis_url, proxy.addr);
    settings.redis_timeout = Duration::from_millis(500);
    let app = TestApp::with_settings(settings).await;
    let author = app.register("rddown").await;
    let raters = [app.register("rd1").await, app.register("rd2").await];
    let post = app.create_post(&author, "p").await;
    assert_eq!(app.rate(&raters[0], post, 1).await.status(), 200);
    app.wait_idle().await;
    app.assert_exact(post).await;

    proxy.cut();
    // Writes are accepted (full weight); their events wait in the outbox.
    assert_eq!(app.rate(&raters[1], post, 5).await.status(), 200);
    assert_eq!(app.rate(&raters[0], post, 3).await.status(), 200);
    // Reads still answer, without stats, and with the caller's own rating from PostgreSQL.
    let got = app.get_post(post, Some(&raters[1])).await;
    assert_eq!(got["rating_count"], Value::Null);
    assert_eq!(got["user_rating"], 5);
    let res = app.request(Method::GET, "/api/v1/posts", None, None).await;
    assert_eq!(res.status(), 200);
    let res = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["status"], "down");

    proxy.restore();
    app.wait_idle().await;
    app.wait_exact(&[post], Duration::from_secs(20)).await;
    let got = app.get_post(post, None).await;
    assert_eq!(got["rating_count"], 2);
}
