//! Hostile traffic at the edges (DESIGN §8.6): what a stranger can send costs bounded
//! resources. Metric labels from a closed set; a token whose user is gone is 401 (never 500).

use diesel_async::RunQueryDsl;
use reqwest::Method;
use serde_json::json;

use crate::common::{problem, test_settings, TestApp};

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
async fn a_token_whose_user_is_gone_is_401_on_every_write() {
    let app = TestApp::new().await;
    let author = app.register("author").await;
    let post = app.create_post(&author, "rated").await;
    let gone = app.register("gone").await;
    assert_eq!(app.rate(&gone, post, 4).await.status(), 200);
    diesel::sql_query("DELETE FROM users WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(gone.id)
        .execute(&mut app.db().await)
        .await
        .expect("delete the user row");

    let token = Some(gone.token.as_str());
    let missing = post + 1000;
    for (method, path, body) in [
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
