//! Hostile traffic at the edges (DESIGN §8.6): what a stranger can send costs bounded
//! resources. Metric labels from a closed set; a token whose user is gone is 401 (never 500).

use std::time::Duration;

use diesel_async::RunQueryDsl;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{problem, test_settings, wait_until, TestApp};

async fn metrics_text(app: &TestApp) -> String {
    app.request(Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_methods_and_unknown_paths_add_no_time_series() {
    let app = TestApp::new().await;
    // Every label set the test can reach exists once before the flood.
    for (method, path) in [
        ("XXXX0", "/healthz"),
        ("GET", "/no/such/path/0"),
        ("GET", "/api/v1/no-such-0"),
    ] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        app.request(method, path, None, None).await;
    }
    metrics_text(&app).await;
    let before = metrics_text(&app).await;
    for i in 0..300 {
        let odd = Method::from_bytes(format!("XXXX{}{i}", "Y".repeat(i % 40)).as_bytes()).unwrap();
        let res = app.request(odd, "/healthz", None, None).await;
        assert_eq!(res.status(), 405);
        let res = app
            .request(Method::GET, &format!("/no/such/path/{i}"), None, None)
            .await;
        problem(res, 404).await;
        let res = app
            .request(Method::GET, &format!("/api/v1/no-such-{i}"), None, None)
            .await;
        problem(res, 404).await;
    }
    let after = metrics_text(&app).await;
    assert!(
        !after.contains("XXXX") && !after.contains("no-such-"),
        "{after}"
    );
    assert!(after.contains(r#"method="OTHER""#) && after.contains(r#"route="unmatched""#));
    // The same series, with other counts (the digits of a count may grow a little).
    assert!(
        after.len() < before.len() + 2_000,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(series(&before), series(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_user_is_gone_is_401_on_every_endpoint() {
    let app = TestApp::new().await;
    let author = app.register("author").await;
    let post = app.create_post(&author, "rated").await;
    let gone = app.register("gone").await;
    assert_eq!(app.rate(&gone, post, 4).await.status(), 200);
    // Its pages and post are cached: reads still check that the user exists.
    app.get_post(post, Some(&gone)).await;
    diesel::sql_query("DELETE FROM users WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(gone.id)
        .execute(&mut app.db().await)
        .await
        .expect("delete the user row");

    let token = Some(gone.token.as_str());
    let missing = post + 1000;
    for (method, path, body) in [
        (Method::GET, "/api/v1/posts".to_owned(), None),
        (Method::GET, format!("/api/v1/posts/{post}"), None),
        (Method::GET, format!("/api/v1/posts/{missing}"), None),
        (
            Method::POST,
            "/api/v1/posts".to_owned(),
            Some(json!({ "title": "t", "content": "c" })),
        ),
        (
            Method::PUT,
            format!("/api/v1/posts/{post}/rating"),
            Some(json!({ "score": 2 })),
        ),
        (
            Method::PUT,
            format!("/api/v1/posts/{missing}/rating"),
            Some(json!({ "score": 2 })),
        ),
        (Method::DELETE, format!("/api/v1/posts/{post}/rating"), None),
        (
            Method::DELETE,
            format!("/api/v1/posts/{missing}/rating"),
            None,
        ),
    ] {
        let res = app.request(method.clone(), &path, token, body).await;
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer",
            "{method} {path}"
        );
        problem(res, 401).await;
    }
    // Anonymous readers are unaffected.
    assert_eq!(app.get_post(post, None).await["id"], post);
    // Signing in as the gone user is a plain wrong login; the name can be taken again.
    let creds = json!({ "username": "gone", "password": "password123" });
    let res = app
        .request(
            Method::POST,
            "/api/v1/auth/token",
            token,
            Some(creds.clone()),
        )
        .await;
    problem(res, 401).await;
    let res = app
        .request(Method::POST, "/api/v1/users", token, Some(creds))
        .await;
    assert_eq!(res.status(), 201);
    // Nothing was written for the gone user.
    let (count, ..) = app.expected(post).await;
    assert_eq!(count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_limit_keys_by_the_hop_the_proxy_appended() {
    let mut settings = test_settings();
    settings.rate_limit_auth_per_min = 30;
    settings.rate_limit_trust_forwarded_for = true;
    let app = TestApp::with_settings(settings).await;
    let creds = json!({ "username": "nobody", "password": "wrong-password" });
    let attempt = |forwarded: String| {
        app.client
            .post(app.url("/api/v1/auth/token"))
            .header("x-forwarded-for", forwarded)
            .json(&creds)
            .send()
    };
    // The client writes a new first hop each time; the proxy appends `ip:port`.
    let mut statuses = Vec::new();
    for i in 0..60u16 {
        let forged = format!("10.{}.{}.1", i / 200, i % 200);
        let res = attempt(format!("{forged}, 198.51.100.7:{}", 40_000 + i))
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    // One more attempt per 2 s comes back; the run takes far less than the 40 s this allows.
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 10, "{statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 401 | 429)));

    // Another client behind the same proxy has its own allowance.
    let res = attempt("198.51.100.7, [2001:db8::1]:443".into())
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // An appended hop that is not an address is refused, not replaced by the client's.
    let res = attempt("198.51.100.9, unknown".into()).await.unwrap();
    problem(res, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readyz_flood_shares_one_snapshot_a_second() {
    let app = TestApp::new().await;
    // A new store is rebuilt at start (degraded until done, longer on a loaded machine).
    let app_ref = &app;
    wait_until("/readyz ready", Duration::from_secs(20), || async move {
        let res = app_ref.request(Method::GET, "/readyz", None, None).await;
        let body: serde_json::Value = res.json().await.unwrap();
        body["status"] == "ready"
    })
    .await;
    let started = std::time::Instant::now();
    let bodies = futures::future::join_all((0..32).map(|_| async {
        let mut seen = Vec::new();
        for _ in 0..8 {
            let res = app.request(Method::GET, "/readyz", None, None).await;
            assert_eq!(res.status(), 200);
            seen.push(res.text().await.unwrap());
        }
        seen
    }))
    .await;
    let elapsed = started.elapsed();
    let distinct: std::collections::HashSet<String> = bodies.into_iter().flatten().collect();
    // Each snapshot carries its own measured latencies, so distinct bodies are distinct
    // rounds of checks: one per second at most, not one per request (256).
    assert!(
        distinct.len() as u64 <= elapsed.as_secs() + 2,
        "{} rounds of checks in {elapsed:?}",
        distinct.len()
    );
    let body: serde_json::Value = serde_json::from_str(distinct.iter().next().unwrap()).unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_flood_beyond_the_hashing_queue_is_refused_at_once() {
    let mut settings = test_settings();
    settings.password_hash_threads = 1;
    settings.password_hash_queue = 1;
    let app = TestApp::with_settings(settings).await;
    let answers = futures::future::join_all((0..24).map(|i| {
        app.request(
            Method::POST,
            "/api/v1/users",
            None,
            Some(json!({ "username": format!("flood{i}"), "password": "password123" })),
        )
    }))
    .await;
    let mut created = 0;
    let mut refused = 0;
    for res in answers {
        match res.status().as_u16() {
            201 => created += 1,
            503 => {
                assert_eq!(res.headers()["retry-after"], "1");
                let body = problem(res, 503).await;
                assert_eq!(body["type"], "/problems/overloaded");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // One hashing, one waiting: most of 24 at once are refused, never queued without end.
    assert!(
        created >= 1 && refused >= 1,
        "{created} created, {refused} refused"
    );
    let mut conn = app.db().await;
    let stored: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT count(*) FROM users")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, created, "a refused sign-up stores nothing");
    app.register("after-the-flood").await;
    assert_eq!(
        app.metric("post_rate_password_hashing_shed_total").await,
        refused as f64
    );
}

/// Settings with short connection deadlines, so the slow-client tests take seconds.
fn short_deadlines() -> post_rate::config::Settings {
    let mut settings = test_settings();
    settings.edges.header_timeout = Duration::from_secs(1);
    settings.edges.keep_alive = Duration::from_secs(1);
    settings.edges.body_timeout = Duration::from_secs(2);
    settings.edges.request_timeout = Duration::from_secs(3);
    settings
}

/// Everything the server sends on `conn` until it closes it (a guard of 30 s fails the test
/// instead of hanging it).
async fn read_until_closed(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&got).into_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_lose_their_connection_while_others_are_served() {
    let app = TestApp::with_settings(short_deadlines()).await;
    let slow = futures::future::join_all((0..50).map(|_| async {
        let mut conn = connect(&app).await;
        conn.write_all(
            b"POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
        read_until_closed(&mut conn).await
    }));
    let normal = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.request(Method::GET, "/healthz", None, None)
            .await
            .status()
    };
    let (answers, normal) = tokio::join!(slow, normal);
    assert_eq!(normal, 200);
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("/problems/request-timeout"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_dribbling_connections_are_closed() {
    let app = TestApp::with_settings(short_deadlines()).await;
    // Silent from the start: actix-web's head timeout answers 408.
    let mut idle = connect(&app).await;
    let answer = read_until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // One request answered, then silence: the keep-alive time closes it.
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // One request answered, then the next head dribbles and stops: actix-web times only
    // the first head of a connection, the connection watch cuts this one.
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let rest = read_until_closed(&mut kept).await;
    assert!(
        rest.is_empty(),
        "no answer to a head that never ended: {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    let mut settings = test_settings();
    settings.edges.max_header_bytes = 4096;
    let app = TestApp::with_settings(settings).await;
    let padded = |n: usize| {
        app.client
            .get(app.url("/healthz"))
            .header("x-padding", "a".repeat(n))
            .send()
    };
    let body = problem(padded(5000).await.unwrap(), 431).await;
    assert_eq!(body["type"], "/problems/headers-too-large");
    assert_eq!(padded(3000).await.unwrap().status(), 200);
}
