//! `loadgen watch-metric`: how fast a counter of the service grows, read from /metrics over
//! one kept-alive connection (cheap enough to poll every few ms beside what it times).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::args::WatchArgs;

/// /metrics may stay silent this long (a restart, a busy service) before the watch fails.
const SILENCE: Duration = Duration::from_secs(3);

/// The value of the sample `name` (no labels) in a Prometheus text exposition.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Polls until the counter reaches `--target`. The rate counts from the first sample with a
/// nonzero value (what that sample already counted is left out) to the first at the target.
pub async fn run(args: &WatchArgs) -> Result<bool, String> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(SILENCE)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let url = format!("{}/metrics", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_answer = started;
    let mut first: Option<(Instant, u64)> = None;
    let mut value = 0;
    let mut samples = 0u64;
    let mut reached = None;
    while Instant::now() < deadline {
        let text = match client.get(&url).send().await {
            Ok(r) => r.text().await.ok(),
            Err(_) => None,
        };
        let now = Instant::now();
        match text {
            Some(text) => {
                last_answer = now;
                samples += 1;
                value = counter(&text, &args.metric).unwrap_or(0);
                if value > 0 && first.is_none() {
                    first = Some((now, value));
                }
                if value >= args.target {
                    reached = Some(now);
                    break;
                }
            }
            None if now - last_answer > SILENCE => {
                eprintln!("watch-metric: {url} has not answered for {SILENCE:?}");
                break;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }

    let (secs, rate) = match (first, reached) {
        (Some((t0, v0)), Some(t1)) if t1 > t0 => {
            let secs = (t1 - t0).as_secs_f64();
            (secs, (value - v0) as f64 / secs)
        }
        _ => (0.0, 0.0),
    };
    let since = |t: Instant| (t - started).as_secs_f64();
    println!(
        "watch-metric {}: {value} of {} after {:.3} s; {rate:.0}/s over {secs:.3} s from the \
         first nonzero sample ({samples} samples)",
        args.metric,
        args.target,
        since(reached.unwrap_or_else(Instant::now)),
    );
    if let Some(path) = &args.json {
        let report = json!({
            "metric": args.metric,
            "target": args.target,
            "value": value,
            "reached": reached.is_some(),
            "first_nonzero_secs": first.map(|(t, _)| since(t)),
            "first_nonzero_value": first.map(|(_, v)| v),
            "secs": secs,
            "per_sec": rate,
            "samples": samples,
            // Lines the times above up with other records of the run (`*_secs` count from it).
            "started_unix_secs": started_unix,
        });
        crate::write_json(path, &report)?;
    }
    Ok(reached.is_some())
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn reads_the_unlabelled_sample_only() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total 42\na_total_b 7\n\
                    b_bucket{le=\"1\"} 3\nc 1.5e3\n";
        assert_eq!(counter(text, "a_total"), Some(42));
        assert_eq!(counter(text, "c"), Some(1500));
        assert_eq!(counter(text, "b_bucket"), None);
        assert_eq!(counter(text, "missing"), None);
    }
}
