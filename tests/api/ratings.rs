//! Rating, re-rating and withdrawing, with the stats checked against `ratings` each time.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{problem, TestApp};

async fn outbox_rows(app: &TestApp) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // Events ever written = rows still there + rows the relay delivered.
    let n: N = diesel::sql_query("SELECT count(*) AS n FROM rating_events")
        .get_result(&mut app.db().await)
        .await
        .unwrap();
    n.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_rerate_and_withdraw_keep_stats_exact() {
    let mut app = TestApp::new().await;
    let author = app.register("judy").await;
    let post = app.create_post(&author, "rate me").await;
    let u1 = app.register("karl").await;
    let u2 = app.register("lena").await;

    let res = app.rate(&u1, post, 4).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["post_id"], json!(post));
    assert_eq!(body["score"], 4);
    chrono::DateTime::parse_from_rfc3339(body["updated_at"].as_str().unwrap()).unwrap();
    // The caller sees their own rating at once.
    assert_eq!(app.get_post(post, Some(&u1)).await["user_rating"], 4);
    assert_eq!(
        app.get_post(post, Some(&u2)).await["user_rating"],
        Value::Null
    );
    app.wait_idle().await;
    let got = app.get_post(post, None).await;
    assert_eq!(got["rating_count"], 1);
    assert_eq!(got["average_rating"], 4.0);
    assert_eq!(got["raw_average_rating"], 4.0);
    assert_eq!(got["rating_histogram"], json!([0, 0, 0, 0, 1, 0]));

    assert_eq!(app.rate(&u2, post, 1).await.status(), StatusCode::OK);
    app.wait_idle().await;
    let got = app.get_post(post, None).await;
    assert_eq!(got["rating_count"], 2);
    assert_eq!(got["raw_average_rating"], 2.5);
    assert_eq!(got["rating_histogram"], json!([0, 1, 0, 0, 1, 0]));

    // Re-rate: the old score leaves its bucket.
    assert_eq!(app.rate(&u1, post, 0).await.status(), StatusCode::OK);
    app.wait_idle().await;
    let got = app.get_post(post, None).await;
    assert_eq!(got["rating_count"], 2);
    assert_eq!(got["raw_average_rating"], 0.5);
    assert_eq!(got["rating_histogram"], json!([1, 1, 0, 0, 0, 0]));
    app.assert_exact(post).await;

    // Same score again: 200 with the stored rating, and no event.
    let before = outbox_rows(&app).await;
    let res = app.rate(&u1, post, 0).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["score"], 0);
    assert_eq!(outbox_rows(&app).await, before);

    // Withdraw, twice (idempotent).
    for _ in 0..2 {
        let res = app
            .request(
                Method::DELETE,
                &format!("/api/v1/posts/{post}/rating"),
                Some(&u1.token),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    app.wait_idle().await;
    let got = app.get_post(post, Some(&u1)).await;
    assert_eq!(got["rating_count"], 1);
    assert_eq!(got["average_rating"], 1.0);
    assert_eq!(got["rating_histogram"], json!([0, 1, 0, 0, 0, 0]));
    assert_eq!(got["user_rating"], Value::Null);

    let res = app
        .request(
            Method::DELETE,
            &format!("/api/v1/posts/{post}/rating"),
            Some(&u2.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.wait_idle().await;
    let got = app.get_post(post, None).await;
    assert_eq!(got["rating_count"], 0);
    assert_eq!(got["average_rating"], Value::Null);
    assert_eq!(got["raw_average_rating"], Value::Null);
    app.assert_exact(post).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rating_rules() {
    let app = TestApp::new().await;
    let author = app.register("mallory").await;
    let post = app.create_post(&author, "p").await;
    let user = app.register("nina").await;
    let path = format!("/api/v1/posts/{post}/rating");
    for bad in [
        json!(6),
        json!(-1),
        json!("4"),
        json!(4.5),
        json!(4.0),
        json!(true),
        json!(null),
        json!([4]),
        json!(1e300),
    ] {
        let res = app
            .request(
                Method::PUT,
                &path,
                Some(&user.token),
                Some(json!({ "score": bad })),
            )
            .await;
        let p = problem(res, 422).await;
        assert_eq!(p["errors"][0]["field"], "score", "{bad}");
    }
    let res = app
        .request(Method::PUT, &path, Some(&user.token), Some(json!({})))
        .await;
    problem(res, 422).await;
    let res = app
        .client
        .put(app.url(&path))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(r#"{"score": 99999999999999999999999999}"#)
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 422 || res.status() == 400,
        "{}",
        res.status()
    );
    // Own post, unknown post, no token.
    problem(app.rate(&author, post, 3).await, 403).await;
    problem(app.rate(&user, 999_999, 3).await, 404).await;
    let res = app
        .request(
            Method::PUT,
            "/api/v1/posts/abc/rating",
            Some(&user.token),
            Some(json!({ "score": 3 })),
        )
        .await;
    problem(res, 404).await;
    let res = app
        .request(Method::PUT, &path, None, Some(json!({ "score": 3 })))
        .await;
    problem(res, 401).await;
    let res = app
        .request(
            Method::DELETE,
            "/api/v1/posts/999999/rating",
            Some(&user.token),
            None,
        )
        .await;
    problem(res, 404).await;
    let res = app.request(Method::DELETE, &path, None, None).await;
    problem(res, 401).await;
    // None of it stored anything, not even an arrival in a burst baseline.
    let store = app.state().service.stats.store();
    for id in [post, 999_999] {
        let key = store.burst_key(id);
        let exists: bool = store
            .with_conn(|mut conn| {
                let key = key.clone();
                async move { Ok(redis::cmd("EXISTS").arg(key).query_async(&mut conn).await?) }
            })
            .await
            .unwrap();
        assert!(!exists, "{key} was written by a refused rating");
    }
    app.wait_idle().await;
    let got = app.get_post(post, None).await;
    assert_eq!(got["rating_count"], 0);
    assert_eq!(app.expected(post).await.0, 0);
    // Boundaries work.
    assert_eq!(app.rate(&user, post, 0).await.status(), 200);
    assert_eq!(app.rate(&user, post, 5).await.status(), 200);
}
