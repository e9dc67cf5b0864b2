//! Concurrent writers: the stats equal what `ratings` implies, exactly.

use futures::future::join_all;
use reqwest::StatusCode;

use crate::common::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rerates_by_one_user_leave_one_rating() {
    let app = TestApp::new().await;
    let author = app.register("olga").await;
    let post = app.create_post(&author, "contested").await;
    let user = app.register("peter").await;
    let results = join_all((0..40).map(|i| {
        let app = &app;
        let user = &user;
        async move { app.rate(user, post, i % 6).await.status() }
    }))
    .await;
    assert!(results.iter().all(|s| *s == StatusCode::OK), "{results:?}");
    app.wait_idle().await;
    let got = app.get_post(post, Some(&user)).await;
    assert_eq!(got["rating_count"], 1);
    let (count, hist, raw, _) = app.expected(post).await;
    assert_eq!(count, 1);
    let final_score = got["user_rating"].as_i64().unwrap();
    assert_eq!(hist[final_score as usize], 1);
    assert!(crate::common::same_average(&got["raw_average_rating"], raw));
    assert_eq!(
        got["raw_average_rating"].as_f64().unwrap(),
        final_score as f64
    );
    app.assert_exact(post).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_rerating_concurrently_match_the_table() {
    let app = TestApp::new().await;
    let author = app.register("quinn").await;
    let posts = [
        app.create_post(&author, "a").await,
        app.create_post(&author, "b").await,
    ];
    let users = join_all((0..30).map(|i| {
        let app = &app;
        async move { app.register(&format!("user{i}")).await }
    }))
    .await;
    let results = join_all(users.iter().enumerate().flat_map(|(i, u)| {
        let app = &app;
        (0..3).map(move |round| async move {
            let post = posts[(i + round) % 2];
            let a = app.rate(u, post, ((i + round) % 6) as i64).await.status();
            let b = app
                .rate(u, posts[0], ((i * 7 + round) % 6) as i64)
                .await
                .status();
            (a, b)
        })
    }))
    .await;
    assert!(results
        .iter()
        .all(|(a, b)| *a == StatusCode::OK && *b == StatusCode::OK));
    app.wait_idle().await;
    for post in posts {
        app.assert_exact(post).await;
    }
    // Exact by applying each event once, not by a repair.
    assert_eq!(app.metric("post_rate_events_unfollowed_total").await, 0.0);
    assert_eq!(app.metric("post_rate_events_gap_total").await, 0.0);
}
