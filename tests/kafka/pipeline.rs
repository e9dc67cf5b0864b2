//! The service with KAFKA_BROKERS set: outbox → relay → Kafka → consumer → Redis, exact under
//! duplicates, redelivery, two instances, SIGKILL and a paused broker.

use std::time::{Duration, Instant};

use futures::future::join_all;
use post_rate::events::kafka;
use post_rate::model::RatingEvent;
use reqwest::StatusCode;

use crate::broker::{broker_script, brokers, events, unique};
use crate::common::{TestApp, User};
use crate::service::{free_port, kafka_settings, rating_stream, Process, EXACT_WITHIN};

async fn setup(app: &TestApp, raters: usize) -> (Vec<i64>, Vec<User>) {
    let author = app.register("author").await;
    let mut posts = Vec::new();
    for i in 0..6 {
        posts.push(app.create_post(&author, &format!("post {i}")).await);
    }
    let users = join_all((0..raters).map(|i| {
        let app = &app;
        async move { app.register(&format!("rater{i}")).await }
    }))
    .await;
    (posts, users)
}

/// Every user rates every post `rounds` times with changing scores; all must be 200.
async fn rate_all(app: &TestApp, posts: &[i64], users: &[User], rounds: usize) {
    let statuses = join_all(users.iter().enumerate().map(|(i, u)| async move {
        let mut statuses = Vec::new();
        for round in 0..rounds {
            for (j, &post) in posts.iter().enumerate() {
                let score = ((i + j + round) % 6) as i64;
                statuses.push(app.rate(u, post, score).await.status());
            }
        }
        statuses
    }))
    .await;
    for s in statuses.into_iter().flatten() {
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_exact_through_kafka_and_duplicates_are_skipped() {
    let settings = kafka_settings(brokers());
    let topic = settings.kafka_topic.clone();
    let mut app = TestApp::with_settings(settings.clone()).await;
    let (posts, users) = setup(&app, 5).await;
    rate_all(&app, &posts, &users, 3).await;
    app.wait_idle().await;
    app.wait_exact(&posts, EXACT_WITHIN).await;
    let applied = app.metric("post_rate_events_applied_total").await;
    assert!(applied > 0.0);
    // Every event through Kafka said enough to be applied: none was left to a repair.
    assert_eq!(app.metric("post_rate_events_unfollowed_total").await, 0.0);
    assert_eq!(app.metric("post_rate_events_gap_total").await, 0.0);

    // A relay that crashed after publishing publishes again: the same stamped events reach
    // the topic twice. Replay some that were already applied.
    let replay: Vec<RatingEvent> = (0..4).flat_map(|p| events(p, 1, 5)).collect();
    let publisher = kafka::Publisher::new(brokers(), &topic).unwrap();
    publisher.publish(&replay).await.unwrap();
    app.wait_metric("post_rate_events_duplicate_total", EXACT_WITHIN, |n| {
        n >= 20.0
    })
    .await;
    assert!(app.is_exact(&posts).await, "duplicates changed the stats");

    // A consumer that reads the whole topic again (as after a crash before its commit):
    // a second instance in a new group, same stats store.
    let mut again = settings.clone();
    again.kafka_group_id = unique("post-rate-e2e-replay");
    again.run_relay = false;
    let mut replayer = TestApp::with_settings(again).await;
    replayer
        .wait_metric("post_rate_events_duplicate_total", EXACT_WITHIN, |n| {
            n >= applied
        })
        .await;
    assert!(
        app.is_exact(&posts).await,
        "a redelivered topic changed the stats"
    );
    // Clients first: librdkafka 2.12 crashes on the metadata of a topic deleted under it.
    replayer.stop().await;
    app.stop().await;
    kafka::delete_topic(brokers(), &topic).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions() {
    let settings = kafka_settings(brokers());
    let topic = settings.kafka_topic.clone();
    let mut a = TestApp::with_settings(settings.clone()).await;
    let mut b = TestApp::with_settings(settings.clone()).await;
    let deadline = Instant::now() + EXACT_WITHIN;
    loop {
        let (ra, rb) = (
            a.metric("post_rate_consumer_rebalances_total").await,
            b.metric("post_rate_consumer_rebalances_total").await,
        );
        if ra > 0.0 && rb > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both instances should join the group"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (posts, users) = setup(&a, 6).await;
    // Half the users write through each instance.
    let (left, right) = users.split_at(3);
    futures::join!(
        rate_all(&a, &posts, left, 2),
        rate_all(&b, &posts, right, 2)
    );
    a.wait_idle().await;
    a.wait_exact(&posts, EXACT_WITHIN).await;
    let applied_a = a.metric("post_rate_events_applied_total").await;
    let applied_b = b.metric("post_rate_events_applied_total").await;
    assert!(
        applied_a > 0.0 && applied_b > 0.0,
        "both consumers applied events: {applied_a} / {applied_b}"
    );
    b.stop().await;
    a.stop().await;
    kafka::delete_topic(brokers(), &topic).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_stream_of_ratings_then_restart_is_exact() {
    let settings = kafka_settings(brokers());
    // The in-process app prepares the database and users and checks the result; the
    // process under test is a real `post-rate serve`, killed with SIGKILL.
    let mut helper_settings = settings.clone();
    helper_settings.run_relay = false;
    helper_settings.run_consumer = false;
    let app = TestApp::with_settings(helper_settings).await;
    let (posts, users) = setup(&app, 4).await;
    let tokens: Vec<(String, usize)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.token.clone(), i))
        .collect();

    for round in 0..2 {
        let port = free_port();
        let process = Process::start(&settings, port);
        process.wait_ready().await;
        let stop = tokio_util::sync::CancellationToken::new();
        let stream = tokio::spawn(rating_stream(
            process.base.clone(),
            posts.clone(),
            tokens.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1500 + round * 700)).await;
        process.kill9();
        stop.cancel();
        let (ok, _) = stream.await.unwrap();
        assert!(
            ok > 0,
            "round {round}: ratings were accepted before the kill"
        );
    }
    // A last instance, left running, delivers what the killed ones left behind.
    let process = Process::start(&settings, free_port());
    process.wait_ready().await;
    app.wait_idle().await;
    app.wait_exact(&posts, EXACT_WITHIN).await;
    process.kill9();
    kafka::delete_topic(brokers(), &settings.kafka_topic)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_gives_no_5xx_and_ends_exact() {
    // A broker of its own: pausing the shared one would stall the other tests.
    let port = 19293;
    broker_script(port, &["start"]);
    let brokers = format!("127.0.0.1:{port}");
    let settings = kafka_settings(&brokers);
    let mut app = TestApp::with_settings(settings.clone()).await;
    let (posts, users) = setup(&app, 4).await;
    let tokens: Vec<(String, usize)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.token.clone(), i))
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let stream = tokio::spawn(rating_stream(
        app.base.clone(),
        posts.clone(),
        tokens,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker_script(port, &["pause"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker_script(port, &["resume"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (ok, server_errors) = stream.await.unwrap();
    assert!(ok > 0);
    assert_eq!(server_errors, 0, "no 5xx while the broker was paused");
    app.wait_idle().await;
    app.wait_exact(&posts, EXACT_WITHIN).await;
    // The service first: its consumer closes against a live broker.
    app.stop().await;
    broker_script(port, &["stop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_traffic_exits_cleanly_and_loses_nothing() {
    let settings = kafka_settings(brokers());
    let mut helper_settings = settings.clone();
    helper_settings.run_relay = false;
    helper_settings.run_consumer = false;
    let app = TestApp::with_settings(helper_settings).await;
    let (posts, users) = setup(&app, 4).await;
    let process = Process::start(&settings, free_port());
    process.wait_ready().await;
    // Fully running: its consumer has joined the group. (Tansu makes the next member wait for
    // the whole rebalance timeout when a member leaves in the middle of its first join.)
    process.wait_joined().await;

    // Each user re-rates the posts in turn and remembers the last score accepted per post;
    // a request that got no answer makes that pair uncertain.
    let base = process.base.clone();
    let writers = users.iter().map(|u| {
        let base = base.clone();
        let token = u.token.clone();
        let posts = posts.clone();
        let user_id = u.id;
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted = std::collections::HashMap::new();
            let mut uncertain = std::collections::HashSet::new();
            let started = Instant::now();
            let mut n = 0usize;
            while started.elapsed() < Duration::from_secs(6) {
                n += 1;
                let post = posts[n % posts.len()];
                let score = (n / posts.len()) % 6;
                let res = client
                    .put(format!("{base}/api/v1/posts/{post}/rating"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "score": score }))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        accepted.insert(post, score as i16);
                        uncertain.remove(&post);
                    }
                    Ok(r) => assert!(!r.status().is_server_error(), "{}", r.status()),
                    Err(e) => {
                        // A refused connection (after the stop) sent nothing; any other
                        // failure may have been committed without an answer.
                        if !e.is_connect() {
                            uncertain.insert(post);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (user_id, accepted, uncertain)
        })
    });
    let writers: Vec<_> = writers.collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = process.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    let results = join_all(writers).await;

    // Every accepted rating is stored.
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        post_id: i64,
        #[diesel(sql_type = diesel::sql_types::SmallInt)]
        score: i16,
    }
    let mut checked = 0;
    for result in results {
        let (user_id, accepted, uncertain) = result.unwrap();
        let stored: Vec<Stored> =
            diesel::sql_query("SELECT post_id, score FROM ratings WHERE user_id = $1")
                .bind::<diesel::sql_types::BigInt, _>(user_id)
                .load(&mut app.db().await)
                .await
                .unwrap();
        for (post, score) in accepted {
            if uncertain.contains(&post) {
                continue;
            }
            let got = stored.iter().find(|s| s.post_id == post).map(|s| s.score);
            assert_eq!(got, Some(score), "user {user_id} post {post}");
            checked += 1;
        }
    }
    assert!(checked > 0);
    // A restart delivers whatever the stopped instance left, and the stats are exact.
    let process = Process::start(&settings, free_port());
    process.wait_ready().await;
    app.wait_idle().await;
    app.wait_exact(&posts, EXACT_WITHIN).await;
    process.kill9();
    kafka::delete_topic(brokers(), &settings.kafka_topic)
        .await
        .unwrap();
}
