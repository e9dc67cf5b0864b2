//! `reconcile` rebuilds Redis from `ratings` exactly, also while ratings keep flowing.

use std::time::Duration;

use futures::future::join_all;
use post_rate::stats::{RedisTarget, StatsStore};

use crate::common::TestApp;

fn store(app: &TestApp) -> StatsStore {
    StatsStore::new(
        &RedisTarget::from_settings(&app.settings),
        2,
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_repairs_a_flushed_redis() {
    let mut app = TestApp::new().await;
    let author = app.register("rita").await;
    let posts = [
        app.create_post(&author, "a").await,
        app.create_post(&author, "b").await,
        app.create_post(&author, "unrated").await,
    ];
    let users = join_all((0..8).map(|i| {
        let app = &app;
        async move { app.register(&format!("rater{i}")).await }
    }))
    .await;
    for (i, u) in users.iter().enumerate() {
        assert_eq!(
            app.rate(u, posts[i % 2], (i % 6) as i64).await.status(),
            200
        );
        assert_eq!(
            app.rate(u, posts[0], ((i + 1) % 6) as i64).await.status(),
            200
        );
    }
    app.wait_idle().await;
    let store = store(&app);

    let report = post_rate::reconcile::run(&app.settings, &store, true, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(report.drifted, 0, "no drift when idle: {report}");
    assert_eq!(report.posts, 3);

    // A running service rebuilds a lost store by itself (tests/api/heal.rs): stop it, so
    // that what is repaired here is the command's own doing.
    app.stop().await;
    // Lose everything, including the fences.
    assert!(store.delete_all().await.unwrap() > 0);
    let report = post_rate::reconcile::run(&app.settings, &store, true, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        report.drifted, 2,
        "dry run sees the two rated posts: {report}"
    );
    let stored = store.load_versions(&posts).await.unwrap();
    assert_eq!(stored[&posts[0]].stats.count, 0, "dry run repairs nothing");

    let report = post_rate::reconcile::run(&app.settings, &store, false, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(report.drifted, 2, "{report}");
    let app = TestApp::with_settings(app.settings.clone()).await;
    for post in posts {
        app.assert_exact(post).await;
    }
    // New ratings after the repair are counted once.
    assert_eq!(app.rate(&users[0], posts[2], 5).await.status(), 200);
    assert_eq!(app.rate(&users[1], posts[0], 5).await.status(), 200);
    app.wait_idle().await;
    for post in posts {
        app.assert_exact(post).await;
    }
    let report = post_rate::reconcile::run(&app.settings, &store, false, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(report.drifted, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_while_ratings_flow_never_double_counts() {
    let app = TestApp::new().await;
    let author = app.register("sam").await;
    let posts = [
        app.create_post(&author, "a").await,
        app.create_post(&author, "b").await,
    ];
    let users = join_all((0..12).map(|i| {
        let app = &app;
        async move { app.register(&format!("flow{i}")).await }
    }))
    .await;
    let store = store(&app);
    let writers = join_all(users.iter().enumerate().map(|(i, u)| {
        let app = &app;
        async move {
            for round in 0..15 {
                let status = app
                    .rate(u, posts[(i + round) % 2], ((i + round) % 6) as i64)
                    .await
                    .status();
                assert_eq!(status, 200);
            }
        }
    }));
    let reconciler = async {
        for _ in 0..5 {
            post_rate::reconcile::run(&app.settings, &store, false, Duration::from_millis(200))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    futures::join!(writers, reconciler);
    app.wait_idle().await;
    for post in posts {
        app.assert_exact(post).await;
    }
}
