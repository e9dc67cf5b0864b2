//! What Redis does to derived state in production, done to a test's own keys: a rollback
//! to an earlier state (failover to a lagging replica, a restored snapshot), a wipe (a
//! restart without persistence), deleted or evicted hashes, a hand edit. And the rating
//! traffic that flows meanwhile. Shared by the embedded and the Kafka tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use jsonwebtoken::{encode, EncodingKey, Header};
use post_rate::config::Settings;
use post_rate::stats::{RedisTarget, StatsStore};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Self-healing on a test's time scale: the audit every second, its full pass every 3 s, a
/// 2 s grace for fences and hashes behind.
pub fn quick_healing(s: &mut Settings) {
    s.heal.grace = Duration::from_secs(2);
    s.heal.audit_interval = Duration::from_secs(1);
    s.heal.audit_full_interval = Duration::from_secs(3);
}

/// A store on the test's key prefix, straight to Redis.
pub fn store(settings: &Settings) -> StatsStore {
    StatsStore::new(
        &RedisTarget::from_settings(settings),
        2,
        Duration::from_secs(5),
    )
    .expect("store")
}

/// `n` users inserted directly, with tokens signed by `secret`: argon2 registrations would
/// only slow the test down. Returns (id, token).
pub async fn quick_users(database_url: &str, secret: &str, n: usize) -> Vec<(i64, String)> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .expect("connect");
    let tag: u32 = rand::random();
    let ids: Vec<Id> = diesel::sql_query(
        "INSERT INTO users (username, password_hash)
         SELECT 'u' || $2 || '_' || g, 'not-a-hash' FROM generate_series(1, $1) g RETURNING id",
    )
    .bind::<diesel::sql_types::Integer, _>(n as i32)
    .bind::<diesel::sql_types::Text, _>(format!("{tag:x}"))
    .load(&mut conn)
    .await
    .expect("insert users");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let key = EncodingKey::from_secret(secret.as_bytes());
    ids.iter()
        .map(|u| {
            let claims =
                json!({ "sub": u.id.to_string(), "name": "u", "iat": now, "exp": now + 3600 });
            (
                u.id,
                encode(&Header::default(), &claims, &key).expect("token"),
            )
        })
        .collect()
}

/// The tokens of `n` users from [`quick_users`].
pub async fn quick_tokens(database_url: &str, secret: &str, n: usize) -> Vec<String> {
    let users = quick_users(database_url, secret, n).await;
    users.into_iter().map(|(_, token)| token).collect()
}

/// What the traffic saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    pub ok: usize,
    pub server_errors: usize,
    pub other: usize,
}

/// Raters rating and withdrawing through `bases` (round robin) until stopped, each rater a
/// task of its own.
pub struct Traffic {
    stop: CancellationToken,
    raters: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Traffic {
    pub fn start(bases: Vec<String>, posts: Vec<i64>, tokens: Vec<String>) -> Traffic {
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let raters = tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                let (stop, client, bases, posts) =
                    (stop.clone(), client.clone(), bases.clone(), posts.clone());
                tokio::spawn(async move {
                    let mut seen = Seen::default();
                    let mut n = i;
                    while !stop.is_cancelled() {
                        n += 7;
                        let base = &bases[n % bases.len()];
                        let post = posts[(n / 3 + i) % posts.len()];
                        let url = format!("{base}/api/v1/posts/{post}/rating");
                        let req = if n % 11 == 0 {
                            client.delete(url)
                        } else {
                            client.put(url).json(&json!({ "score": (n * 5 + i) % 6 }))
                        };
                        match req.bearer_auth(&token).send().await {
                            Ok(r) if r.status().is_success() => seen.ok += 1,
                            Ok(r) if r.status().is_server_error() => seen.server_errors += 1,
                            _ => seen.other += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    seen
                })
            })
            .collect();
        Traffic { stop, raters }
    }

    /// Stops every rater and sums what they saw.
    pub async fn stop(self) -> Seen {
        self.stop.cancel();
        let mut total = Seen::default();
        for r in self.raters {
            let seen = r.await.expect("rater");
            total.ok += seen.ok;
            total.server_errors += seen.server_errors;
            total.other += seen.other;
        }
        total
    }
}

/// Every key under the prefix with its DUMP: the state to roll back to.
pub struct Snapshot(Vec<(String, Vec<u8>)>);

pub async fn dump(store: &StatsStore) -> Snapshot {
    let keys = store.keys().await.expect("scan");
    if store.is_cluster() {
        // A cluster pipeline stays in one slot: one DUMP at a time.
        let mut out = Vec::new();
        for k in keys {
            let key = k.clone();
            let d: Option<Vec<u8>> = store
                .with_conn(|mut conn| async move {
                    Ok(redis::cmd("DUMP").arg(key).query_async(&mut conn).await?)
                })
                .await
                .expect("dump");
            out.extend(d.map(|d| (k, d)));
        }
        return Snapshot(out);
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("DUMP").arg(k);
    }
    let dumps: Vec<Option<Vec<u8>>> = store
        .with_conn(|mut conn| async move { Ok(pipe.query_async(&mut conn).await?) })
        .await
        .expect("dump");
    Snapshot(
        keys.into_iter()
            .zip(dumps)
            .filter_map(|(k, d)| Some((k, d?)))
            .collect(),
    )
}

/// Rolls the prefix back to `snapshot`: keys written since are gone, the others hold their
/// old values (as after a failover to a replica that lagged by that much).
pub async fn roll_back(store: &StatsStore, snapshot: &Snapshot) {
    if store.is_cluster() {
        // Each node of a cluster fails over on its own: no transaction spans them either.
        store.delete_all().await.expect("delete");
        for (k, d) in &snapshot.0 {
            let (key, dump) = (k.clone(), d.clone());
            store
                .with_conn(|mut conn| async move {
                    let _: () = redis::cmd("RESTORE")
                        .arg(key)
                        .arg(0)
                        .arg(dump)
                        .arg("REPLACE")
                        .query_async(&mut conn)
                        .await?;
                    Ok(())
                })
                .await
                .expect("restore");
        }
        return;
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    let pattern = format!("{}*", store.prefix());
    // One script deletes the prefix; the restores follow in the same transaction.
    pipe.cmd("EVAL")
        .arg(
            "local n = 0
             for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k); n = n + 1 end
             return n",
        )
        .arg(0)
        .arg(&pattern);
    for (k, d) in &snapshot.0 {
        pipe.cmd("RESTORE")
            .arg(k)
            .arg(0)
            .arg(d.as_slice())
            .arg("REPLACE");
    }
    store
        .with_conn(|mut conn| async move {
            let _: redis::Value = pipe.query_async(&mut conn).await?;
            Ok(())
        })
        .await
        .expect("roll back");
}

/// Deletes the stats hashes of `posts` (eviction, an operator's DEL).
pub async fn delete_stats(store: &StatsStore, posts: &[i64]) {
    let keys: Vec<String> = posts.iter().map(|&p| store.post_key(p)).collect();
    store
        .with_conn(|mut conn| async move {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            Ok(())
        })
        .await
        .expect("del");
}

/// Sets one field of a post's stats hash by hand.
pub async fn set_stat(store: &StatsStore, post: i64, field: &str, value: i64) {
    let key = store.post_key(post);
    let field = field.to_owned();
    store
        .with_conn(|mut conn| async move {
            let _: i64 = redis::cmd("HSET")
                .arg(key)
                .arg(field)
                .arg(value)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
        .expect("hset");
}
