//! What the API shows for a post against what `ratings` implies: the exactness checks of the
//! stats tests, and the wait for a pipeline with a lag to become exact.

use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use super::TestApp;

impl TestApp {
    /// What `ratings` implies for a post, in the API's terms:
    /// (count, histogram, raw average, weighted average).
    pub async fn expected(&self, post: i64) -> (i64, [i64; 6], Option<f64>, Option<f64>) {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::SmallInt)]
            score: i16,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            weight: i32,
        }
        let mut conn = self.db().await;
        let rows: Vec<Row> =
            diesel::sql_query("SELECT score, weight FROM ratings WHERE post_id = $1")
                .bind::<diesel::sql_types::BigInt, _>(post)
                .load(&mut conn)
                .await
                .expect("ratings");
        let mut hist = [0i64; 6];
        let (mut sum, mut wsum, mut w) = (0i64, 0i64, 0i64);
        for r in &rows {
            hist[r.score as usize] += 1;
            sum += i64::from(r.score);
            wsum += i64::from(r.score) * i64::from(r.weight);
            w += i64::from(r.weight);
        }
        let n = rows.len() as i64;
        let raw = (n > 0).then(|| sum as f64 / n as f64);
        let damped = if w > 0 {
            Some(wsum as f64 / w as f64)
        } else {
            raw
        };
        (n, hist, raw, damped)
    }

    /// Asserts that the API shows exactly what `ratings` implies for `post`.
    pub async fn assert_exact(&self, post: i64) {
        let (count, hist, raw, damped) = self.expected(post).await;
        let got = self.get_post(post, None).await;
        assert_eq!(
            got["rating_count"],
            json!(count),
            "count of post {post}: {got}"
        );
        assert_eq!(
            got["rating_histogram"],
            json!(hist),
            "histogram of post {post}"
        );
        assert!(
            same_average(&got["raw_average_rating"], raw),
            "raw average of post {post}: {} vs {raw:?}",
            got["raw_average_rating"]
        );
        assert!(
            same_average(&got["average_rating"], damped),
            "average of post {post}: {} vs {damped:?}",
            got["average_rating"]
        );
    }

    /// Whether the API shows exactly what `ratings` implies for every post.
    pub async fn is_exact(&self, posts: &[i64]) -> bool {
        for &post in posts {
            let (count, hist, raw, damped) = self.expected(post).await;
            let got = self.get_post(post, None).await;
            if got["rating_count"] != json!(count)
                || got["rating_histogram"] != json!(hist)
                || !same_average(&got["raw_average_rating"], raw)
                || !same_average(&got["average_rating"], damped)
            {
                return false;
            }
        }
        true
    }

    /// Waits (up to `within`) until the stats of `posts` are exact, then asserts it: the
    /// path through a broker has a lag, but it must end exact.
    pub async fn wait_exact(&self, posts: &[i64], within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.is_exact(posts).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for &post in posts {
            self.assert_exact(post).await;
        }
    }
}

/// An average as the API sent it equals the one computed here. JSON text carries the exact
/// shortest representation, but serde_json's default float parser may land one unit in the
/// last place away, so allow that much.
pub fn same_average(got: &Value, want: Option<f64>) -> bool {
    match (got.as_f64(), want) {
        (Some(g), Some(w)) => (g - w).abs() <= 1e-12 * w.abs().max(1.0),
        (None, None) => got.is_null(),
        _ => false,
    }
}
