//! Hostile input, generated: bodies, paths, query strings, headers of every endpoint. No
//! answer is a 5xx, every error is problem+json, and nothing stored changes.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::TestApp;

/// JSON values of any shape, deep nesting and huge numbers included, but never a valid field:
/// no score in 0..=5 and no string without a NUL, so no generated request may store anything.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>()
            .prop_filter("a valid score", |n| !(0..=5).contains(n))
            .prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        Just("1e999".to_owned()),
        Just("-99999999999999999999999999".to_owned()),
        ".{0,40}".prop_map(|s| serde_json::to_string(&format!("{s}\u{0}")).unwrap_or_default()),
        Just("\"\\u0000\"".to_owned()),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("score".to_owned()),
                        Just("title".to_owned()),
                        Just("content".to_owned()),
                        Just("username".to_owned()),
                        Just("password".to_owned()),
                        "[a-z]{1,8}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..200),
        (1usize..20_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        Just(b"{\"score\": 3".to_vec()),
    ]
}

fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999999999".to_owned()),
        Just("%00".to_owned()),
        Just("%FF%FE".to_owned()),
        Just("..".to_owned()),
        "[a-zA-Z0-9%._~-]{0,30}",
        "\\PC{0,10}".prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
    ]
}

fn request() -> impl Strategy<Value = (Method, String, Vec<u8>, Option<&'static str>, u8)> {
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
    ];
    let path = prop_oneof![
        Just("/api/v1/users".to_owned()),
        Just("/api/v1/auth/token".to_owned()),
        Just("/api/v1/posts".to_owned()),
        path_segment().prop_map(|s| format!("/api/v1/posts/{s}")),
        path_segment().prop_map(|s| format!("/api/v1/posts/{s}/rating")),
        (
            "[a-z]{1,8}",
            path_segment(),
            prop::collection::vec(("(limit|cursor|x)", path_segment()), 0..4)
        )
            .prop_map(|(_, _, q)| format!(
                "/api/v1/posts?{}",
                q.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            )),
        (1usize..3000).prop_map(|n| format!("/api/v1/posts?cursor={}", "A".repeat(n))),
    ];
    let content_type = prop_oneof![
        Just(Some("application/json")),
        Just(Some("application/json; charset=utf-8")),
        Just(Some("text/plain")),
        Just(None),
    ];
    // 0: no token, 1: the attacker's valid token, 2: garbage, 3: an unsigned (alg none) token.
    (method, path, body(), content_type, 0u8..4)
}

#[test]
fn hostile_requests_get_4xx_problems_and_change_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, token, post) = rt.block_on(async {
        let app = TestApp::new().await;
        let victim = app.register("victim").await;
        let attacker = app.register("hostile").await;
        let post = app.create_post(&victim, "target").await;
        let rater = app.register("rater").await;
        assert_eq!(app.rate(&rater, post, 3).await.status(), 200);
        app.wait_idle().await;
        (app, attacker.token, post)
    });
    let before = rt.block_on(snapshot(&app));

    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&request(), |(method, path, body, content_type, auth)| {
            let status_and_ct = rt.block_on(async {
                let mut req = app
                    .client
                    .request(method.clone(), app.url(&path))
                    .body(body.clone());
                if let Some(ct) = content_type {
                    req = req.header("content-type", ct);
                }
                req = match auth {
                    1 => req.bearer_auth(&token),
                    2 => req.header("authorization", "Bearer not.a.token"),
                    3 => req.header("authorization", "Bearer eyJhbGciOiJub25lIn0.e30."),
                    _ => req,
                };
                let res = req.send().await.expect("an answer");
                let ct = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (res.status(), ct)
            });
            let (status, ct) = status_and_ct;
            prop_assert!(
                !status.is_server_error(),
                "{method} {path} -> {status} (body {:?})",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            if status.is_client_error() {
                prop_assert!(
                    ct.starts_with("application/problem+json"),
                    "{method} {path}: {ct}"
                );
            }
            Ok(())
        })
        .unwrap();

    let after = rt.block_on(snapshot(&app));
    assert_eq!(before, after, "hostile requests changed stored data");
    let got = rt.block_on(app.get_post(post, None));
    assert_eq!(got["rating_count"], 1);
    drop(app);
}

/// Every user, post and rating, as text.
async fn snapshot(app: &TestApp) -> Value {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        row: String,
    }
    let mut conn = app.db().await;
    let mut out = Vec::new();
    for q in [
        "SELECT format('%s %s', id, username) AS row FROM users ORDER BY id",
        "SELECT format('%s %s %s', id, title, content) AS row FROM posts ORDER BY id",
        "SELECT format('%s %s %s %s', post_id, user_id, score, updated_at) AS row FROM ratings ORDER BY 1",
    ] {
        let rows: Vec<Row> = diesel::sql_query(q).load(&mut conn).await.unwrap();
        out.push(json!(rows.into_iter().map(|r| r.row).collect::<Vec<_>>()));
    }
    json!(out)
}
