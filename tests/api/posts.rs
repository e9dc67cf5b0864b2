//! Creating, reading and paging through posts.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{problem, TestApp, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_get() {
    let app = TestApp::new().await;
    let author = app.register("frank").await;
    let res = app
        .request(
            Method::POST,
            "/api/v1/posts",
            Some(&author.token),
            Some(json!({ "title": "  A title  ", "content": "Body text" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["title"], "A title", "titles are stored trimmed");
    assert_eq!(created["content"], "Body text");
    assert_eq!(
        created["created_by"],
        json!({ "id": author.id, "username": "frank" })
    );
    assert_eq!(created["rating_count"], 0);
    assert_eq!(created["average_rating"], Value::Null);
    assert_eq!(created["raw_average_rating"], Value::Null);
    assert_eq!(created["rating_histogram"], json!([0, 0, 0, 0, 0, 0]));
    assert_eq!(created["user_rating"], Value::Null);
    let created_at = created["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "RFC 3339 UTC: {created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).unwrap();

    let id = created["id"].as_i64().unwrap();
    let got = app.get_post(id, None).await;
    assert_eq!(got, created);
    let got = app.get_post(id, Some(&author)).await;
    assert_eq!(got, created);

    for path in [
        "/api/v1/posts/999999",
        "/api/v1/posts/abc",
        "/api/v1/posts/-1",
        "/api/v1/posts/1.5",
        "/api/v1/posts/99999999999999999999999",
    ] {
        problem(app.request(Method::GET, path, None, None).await, 404).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_field_rules() {
    let app = TestApp::new().await;
    let author = app.register("grace").await;
    let cases = [
        (json!({ "title": "", "content": "c" }), vec!["title"]),
        (json!({ "title": "   ", "content": "c" }), vec!["title"]),
        (
            json!({ "title": "t".repeat(256), "content": "c" }),
            vec!["title"],
        ),
        (
            json!({ "title": "t", "content": " \n\t " }),
            vec!["content"],
        ),
        (
            json!({ "title": "t", "content": "c".repeat(20_001) }),
            vec!["content"],
        ),
        (
            json!({ "title": 5, "content": ["c"] }),
            vec!["title", "content"],
        ),
        (json!({}), vec!["title", "content"]),
    ];
    for (body, fields) in cases {
        let res = app
            .request(
                Method::POST,
                "/api/v1/posts",
                Some(&author.token),
                Some(body.clone()),
            )
            .await;
        let p = problem(res, 422).await;
        let got: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(got, fields, "{body}");
    }
    let ok = json!({ "title": "é".repeat(255), "content": "c".repeat(20_000) });
    let res = app
        .request(Method::POST, "/api/v1/posts", Some(&author.token), Some(ok))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .request(
            Method::POST,
            "/api/v1/posts",
            None,
            Some(json!({ "title": "t", "content": "c" })),
        )
        .await;
    problem(res, 401).await;
}

async fn page(app: &TestApp, query: &str) -> Value {
    page_as(app, query, None).await
}

async fn page_as(app: &TestApp, query: &str, viewer: Option<&User>) -> Value {
    let res = app
        .request(
            Method::GET,
            &format!("/api/v1/posts{query}"),
            viewer.map(|u| u.token.as_str()),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{query}");
    res.json().await.unwrap()
}

/// `user_rating` of every post on the pages `viewer` walks with `limit`, newest first.
async fn own_ratings(app: &TestApp, viewer: Option<&User>, limit: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut query = format!("?limit={limit}");
    loop {
        let body = page_as(app, &query, viewer).await;
        seen.extend(
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["user_rating"].clone()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => query = format!("?limit={limit}&cursor={c}"),
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_sees_only_their_own_ratings_on_every_page() {
    let app = TestApp::new().await;
    let author = app.register("ivan").await;
    let (a, b) = (app.register("judy").await, app.register("karl").await);
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(app.create_post(&author, &format!("post {i}")).await);
    }
    ids.reverse();
    // judy rates posts 0, 2, 4, 6 (newest first), karl rates 1 and 2 differently.
    for (n, &id) in ids.iter().enumerate() {
        if n % 2 == 0 {
            assert_eq!(app.rate(&a, id, (n % 6) as i64).await.status(), 200);
        }
    }
    assert_eq!(app.rate(&b, ids[1], 5).await.status(), 200);
    assert_eq!(app.rate(&b, ids[2], 1).await.status(), 200);
    // A withdrawn rating is gone from the page at once.
    assert_eq!(app.rate(&a, ids[6], 3).await.status(), 200);
    let res = app
        .request(
            Method::DELETE,
            &format!("/api/v1/posts/{}/rating", ids[6]),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);

    let want_a = [
        json!(0),
        Value::Null,
        json!(2),
        Value::Null,
        json!(4),
        Value::Null,
        Value::Null,
    ];
    let want_b = [
        Value::Null,
        json!(5),
        json!(1),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    for limit in [3, 7] {
        assert_eq!(
            own_ratings(&app, Some(&a), limit).await,
            want_a,
            "judy, limit {limit}"
        );
        assert_eq!(
            own_ratings(&app, Some(&b), limit).await,
            want_b,
            "karl, limit {limit}"
        );
        let anonymous = own_ratings(&app, None, limit).await;
        assert!(
            anonymous.iter().all(Value::is_null),
            "anonymous: {anonymous:?}"
        );
        let by_author = own_ratings(&app, Some(&author), limit).await;
        assert!(
            by_author.iter().all(Value::is_null),
            "author: {by_author:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_newest_first() {
    let app = TestApp::new().await;
    let author = app.register("heidi").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(app.create_post(&author, &format!("post {i}")).await);
    }
    ids.reverse();
    let first = page(&app, "").await;
    let results = first["results"].as_array().unwrap();
    assert_eq!(results.len(), 20, "default limit");
    let got: Vec<i64> = results.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(got, ids[..20]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = page(&app, &format!("?cursor={cursor}&limit=20")).await;
    let got: Vec<i64> = second["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, ids[20..]);
    assert_eq!(second["next_cursor"], Value::Null, "last page");

    let exact = page(&app, "?limit=25").await;
    assert_eq!(exact["results"].as_array().unwrap().len(), 25);
    assert_eq!(exact["next_cursor"], Value::Null);
    assert_eq!(
        page(&app, "?limit=1").await["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        page(&app, "?limit=100&other=x").await["results"]
            .as_array()
            .unwrap()
            .len(),
        25
    );

    for bad in ["0", "101", "-1", "abc", "1.5", "", "99999999999999999999"] {
        let res = app
            .request(
                Method::GET,
                &format!("/api/v1/posts?limit={bad}"),
                None,
                None,
            )
            .await;
        problem(res, 422).await;
    }
    let res = app
        .request(Method::GET, "/api/v1/posts?limit=5&limit=6", None, None)
        .await;
    problem(res, 422).await;
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 28])
    };
    for bad in ["abc", "%00%01", &forged, &"A".repeat(5000)] {
        let res = app
            .request(
                Method::GET,
                &format!("/api/v1/posts?cursor={bad}"),
                None,
                None,
            )
            .await;
        problem(res, 400).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_the_list_while_posts_arrive_has_no_duplicates_or_gaps() {
    let app = TestApp::new().await;
    let author = app.register("ivan").await;
    let mut before = HashSet::new();
    for i in 0..60 {
        before.insert(app.create_post(&author, &format!("old {i}")).await);
    }
    let writer = {
        let base = app.base.clone();
        let token = author.token.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..40 {
                let res = client
                    .post(format!("{base}/api/v1/posts"))
                    .bearer_auth(&token)
                    .json(&json!({ "title": format!("new {i}"), "content": "c" }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=7&cursor={c}"),
            None => "?limit=7".into(),
        };
        let body = page(&app, &q).await;
        for p in body["results"].as_array().unwrap() {
            seen.push(p["id"].as_i64().unwrap());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    writer.await.unwrap();
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no post is listed twice");
    assert!(
        before.is_subset(&unique),
        "every post that existed is listed"
    );
}

/// Each HTTP worker reads through its own pool (src/worker.rs); the last pool is for other
/// threads only. If the worker threads did not get their slots, every request would open
/// its connections in that last pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_use_their_workers_own_pools() {
    let app = TestApp::new().await;
    let pools = app.state().service.pool.all();
    assert_eq!(pools.len(), app.settings.http_workers + 1);
    let pages = (0..20).map(|_| app.request(Method::GET, "/api/v1/posts", None, None));
    for res in futures::future::join_all(pages).await {
        assert_eq!(res.status(), StatusCode::OK);
    }
    let (workers, shared) = pools.split_at(pools.len() - 1);
    let opened: usize = workers.iter().map(|p| p.status().size).sum();
    assert!(opened > 0, "the workers opened no connection of their own");
    assert_eq!(shared[0].status().size, 0, "a request used the shared pool");
}
