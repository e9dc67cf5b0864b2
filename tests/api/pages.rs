//! The page cache (DESIGN §4): warm pages need no PostgreSQL, concurrent misses load once, a
//! new post is on this instance's first page at once and on another instance's within 2 s,
//! the caller's own score is always current, and the statements' generic plans stay index
//! probes however large the tables grow.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::TestApp;

const LOADS: &str = "post_rate_page_loads_total";

async fn first_page(app: &TestApp, token: Option<&str>) -> Value {
    let res = app
        .request(Method::GET, "/api/v1/posts?limit=5", token, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<i64> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pages_skip_postgres_and_cold_ones_load_once() {
    let app = TestApp::builder()
        .with(|s| s.page_cache.first_ttl = Duration::from_secs(60))
        .start()
        .await;
    let author = app.register("author").await;
    for n in 0..12 {
        app.create_post(&author, &format!("post {n}")).await;
    }
    let before = app.metric(LOADS).await;
    // 40 readers at once on a cold first page, with several page sizes: one statement.
    let reads = (0..40).map(|n| {
        let path = format!("/api/v1/posts?limit={}", 1 + n % 10);
        let app = &app;
        async move { app.request(Method::GET, &path, None, None).await }
    });
    let pages = futures::future::join_all(reads).await;
    assert!(pages.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(app.metric(LOADS).await - before, 1.0);

    // Warm: anonymous pages, a later page walked twice and single posts need nothing more
    // than that later page's own load.
    let page = first_page(&app, None).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let later = format!("/api/v1/posts?limit=5&cursor={cursor}");
    let before = app.metric(LOADS).await;
    for _ in 0..3 {
        assert_eq!(first_page(&app, None).await, page);
        let res = app.request(Method::GET, &later, None, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        for id in ids(&page) {
            assert_eq!(app.get_post(id, None).await["id"], id);
        }
    }
    assert_eq!(app.metric(LOADS).await - before, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_post_is_on_this_instances_first_page_at_once() {
    let app = TestApp::builder()
        .with(|s| {
            s.page_cache.first_ttl = Duration::from_secs(60);
            // With the stats cache on, whole anonymous pages are kept too.
            s.stats_cache_ttl = Duration::from_secs(60);
        })
        .start()
        .await;
    let author = app.register("author").await;
    app.create_post(&author, "old").await;
    for n in 0..20 {
        // Warm the cache, then create: the new post must lead the very next page.
        first_page(&app, None).await;
        let id = app.create_post(&author, &format!("new {n}")).await;
        assert_eq!(ids(&first_page(&app, None).await)[0], id);
        assert_eq!(ids(&first_page(&app, Some(&author.token)).await)[0], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_see_new_posts_within_2s_and_own_scores_at_once() {
    let one = TestApp::new().await;
    // The same database and Redis keys: a second instance of one deployment.
    let two = TestApp::with_settings(one.settings.clone()).await;
    let author = one.register("author").await;
    let reader = one.register("reader").await;
    let first = one.create_post(&author, "first").await;
    assert_eq!(ids(&first_page(&two, None).await), vec![first]);

    // Created on one, warm on two: on two's first page within 2 s.
    let second = one.create_post(&author, "second").await;
    let created = Instant::now();
    loop {
        let shown = ids(&first_page(&two, Some(&reader.token)).await);
        if shown.first() == Some(&second) {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(2),
            "not on the other instance's first page after {:?}",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A score written through one is the reader's `user_rating` on two at once, on the
    // cached page and on the cached post alike; and so is its withdrawal.
    for score in [4, 1] {
        assert_eq!(one.rate(&reader, first, score).await.status(), 200);
        let page = first_page(&two, Some(&reader.token)).await;
        assert_eq!(page["results"][1]["user_rating"], score);
        assert_eq!(
            two.get_post(first, Some(&reader)).await["user_rating"],
            score
        );
        // Nobody else sees it as theirs.
        assert_eq!(
            first_page(&two, None).await["results"][1]["user_rating"],
            Value::Null
        );
    }
    let res = one
        .request(
            Method::DELETE,
            &format!("/api/v1/posts/{first}/rating"),
            Some(&reader.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        two.get_post(first, Some(&reader)).await["user_rating"],
        Value::Null
    );
}

/// Each read statement of the service, prepared as the API pool runs it (a generic plan), on
/// tables of 100,000 posts and 20,000 users: no Memoize, Hash or Sort node, and no sequential
/// scan of a large table: a handful of index probes at any size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_plans_stay_index_probes_on_large_tables() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::new().await;
    let mut conn = app.db().await;
    for sql in [
        "INSERT INTO users (username, password_hash) \
         SELECT 'u' || g, 'x' FROM generate_series(1, 20000) g",
        "INSERT INTO posts (title, content, created_by, created_at) \
         SELECT 't', 'c', 1 + g % 20000, now() - g * interval '1 second' \
         FROM generate_series(1, 100000) g",
        "INSERT INTO ratings (post_id, user_id, score, weight) \
         SELECT 1 + g % 100000, 1 + g % 20000, g % 6, 1000 FROM generate_series(1, 200000) g \
         ON CONFLICT DO NOTHING",
        "ANALYZE users, posts, ratings",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        diesel::sql_query(sql).execute(&mut conn).await.expect(sql);
    }
    for (name, sql, args) in post_rate::db::posts::read_statements() {
        diesel::sql_query(format!("PREPARE s AS {sql}"))
            .execute(&mut conn)
            .await
            .expect(name);
        #[derive(diesel::QueryableByName)]
        struct Line {
            #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
            line: String,
        }
        let execute = match args {
            "" => "EXPLAIN EXECUTE s".to_owned(),
            args => format!("EXPLAIN EXECUTE s({args})"),
        };
        let plan: Vec<Line> = diesel::sql_query(execute)
            .load(&mut conn)
            .await
            .expect(name);
        let plan: Vec<String> = plan.into_iter().map(|l| l.line).collect();
        let text = plan.join("\n");
        for bad in [
            "Memoize",
            "Hash",
            "Sort",
            "Seq Scan on posts",
            "Seq Scan on users",
            "Seq Scan on ratings",
        ] {
            assert!(!text.contains(bad), "{name}: {bad} in\n{text}");
        }
        diesel::sql_query("DEALLOCATE s")
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// Concurrent signed-in reads share statements (`service::scores`): each reader still gets
/// exactly their own scores, and a reader whose user row is gone gets 401 without failing
/// the others of the same statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_each_get_their_own_scores() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::new().await;
    let author = app.register("author").await;
    let mut posts = Vec::new();
    for n in 0..6 {
        posts.push(app.create_post(&author, &format!("post {n}")).await);
    }
    let mut readers = Vec::new();
    for r in 0..24usize {
        let reader = app.register(&format!("reader{r}")).await;
        // Reader r rates post k with (r + k) % 6 when (r + k) is odd, else not at all.
        for (k, &post) in posts.iter().enumerate() {
            if (r + k) % 2 == 1 {
                let res = app.rate(&reader, post, ((r + k) % 6) as i64).await;
                assert_eq!(res.status(), StatusCode::OK);
            }
        }
        readers.push(reader);
    }
    let gone = readers.pop().unwrap();
    diesel::sql_query("DELETE FROM users WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(gone.id)
        .execute(&mut app.db().await)
        .await
        .expect("delete the user row");
    let app = &app;
    let lookups = app.metric("post_rate_score_lookups_total").await;
    let statements = app.metric("post_rate_score_statements_total").await;
    for _ in 0..5 {
        let reads = readers.iter().chain([&gone]).map(|reader| async move {
            let res = app
                .request(
                    Method::GET,
                    "/api/v1/posts?limit=6",
                    Some(&reader.token),
                    None,
                )
                .await;
            (res.status(), res.json::<Value>().await.unwrap())
        });
        let pages = futures::future::join_all(reads).await;
        let (gone_status, _) = pages.last().unwrap();
        assert_eq!(*gone_status, StatusCode::UNAUTHORIZED);
        for (r, (status, page)) in pages[..readers.len()].iter().enumerate() {
            assert_eq!(*status, StatusCode::OK);
            for post in page["results"].as_array().unwrap() {
                let k = posts
                    .iter()
                    .position(|&p| p == post["id"].as_i64().unwrap())
                    .unwrap();
                let want = if (r + k) % 2 == 1 {
                    Value::from((r + k) % 6)
                } else {
                    Value::Null
                };
                assert_eq!(post["user_rating"], want, "reader {r}, post {k}");
            }
        }
    } // 5 rounds of 24 concurrent lookups: some shared a statement.
    let lookups = app.metric("post_rate_score_lookups_total").await - lookups;
    let statements = app.metric("post_rate_score_statements_total").await - statements;
    assert_eq!(lookups, 120.0);
    assert!(
        statements < lookups,
        "{statements} statements for {lookups} lookups"
    );
}
