//! The exactness check: once the outbox is empty, every post's stats as the API shows them
//! must equal an aggregate over `ratings`.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::{stream, StreamExt};
use serde::Serialize;

use post_rate::db::ratings::PostTotals;
use post_rate::stats::{PostStats, PublicStats};

use crate::client::Api;

#[derive(Debug, Serialize)]
pub struct CheckResult {
    pub posts_checked: usize,
    pub mismatches: usize,
    pub drain_secs: f64,
    pub check_secs: f64,
    pub examples: Vec<String>,
}

pub async fn run(
    database_url: &str,
    api: &Api,
    drain_timeout: Duration,
    concurrency: usize,
) -> Result<CheckResult, String> {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| format!("--database-url: {e}"))?;
    let started = Instant::now();
    loop {
        // Outbox rows and stamped batches not yet delivered.
        let left = post_rate::db::outbox::pending(&mut conn)
            .await
            .map_err(|e| format!("counting the outbox: {e}"))?;
        if left == 0 {
            break;
        }
        if started.elapsed() > drain_timeout {
            return Err(format!(
                "the outbox still holds {left} events after {} s",
                drain_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    // The same aggregate `post-rate reconcile` rebuilds Redis from.
    let totals = post_rate::db::ratings::totals(&mut conn)
        .await
        .map_err(|e| format!("aggregating ratings: {e}"))?;
    let posts_checked = totals.len();
    // With a broker, delivered events may still be on their way through Kafka to Redis:
    // compare again, only the posts that differed, until they agree or the time is up.
    let mut pending = totals;
    let mut problems: Vec<String>;
    loop {
        let results: Vec<(PostTotals, Option<String>)> = stream::iter(pending)
            .map(|t| {
                let api = api.clone();
                async move {
                    let diff = compare(&api, &t).await;
                    (t, diff)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        (pending, problems) = results
            .into_iter()
            .filter_map(|(t, diff)| Some((t, diff?)))
            .unzip();
        if pending.is_empty() || started.elapsed() > drain_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(CheckResult {
        posts_checked,
        mismatches: problems.len(),
        drain_secs,
        check_secs: started.elapsed().as_secs_f64(),
        examples: problems.into_iter().take(20).collect(),
    })
}

/// `None` when the API agrees with the aggregate, else what differs.
async fn compare(api: &Api, t: &PostTotals) -> Option<String> {
    let got = match api.post_stats(t.post_id).await {
        Ok(s) => s,
        Err(e) => return Some(format!("post {}: {e}", t.post_id)),
    };
    let values = <[i64; 10]>::try_from(t.values.as_slice()).unwrap_or_default();
    let want = PublicStats::from(&PostStats::from_array(values));
    let (count, hist) = (want.rating_count, want.rating_histogram);
    let (raw, damped) = (want.raw_average_rating, want.average_rating);
    let mut diffs = Vec::new();
    if got.rating_count != Some(count) {
        diffs.push(format!("rating_count {:?} != {count}", got.rating_count));
    }
    if got.rating_histogram != Some(hist) {
        diffs.push(format!(
            "rating_histogram {:?} != {hist:?}",
            got.rating_histogram
        ));
    }
    if !close(got.raw_average_rating, raw) {
        diffs.push(format!(
            "raw_average_rating {:?} != {raw:?}",
            got.raw_average_rating
        ));
    }
    if !close(got.average_rating, damped) {
        diffs.push(format!(
            "average_rating {:?} != {damped:?}",
            got.average_rating
        ));
    }
    (!diffs.is_empty()).then(|| format!("post {}: {}", t.post_id, diffs.join(", ")))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        _ => false,
    }
}
