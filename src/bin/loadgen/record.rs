//! What a run measured: latency histograms and status counts per operation, the live
//! progress line, and the final table.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::Op;
use crate::outbox;

/// Counters the progress line reads while the workers run.
#[derive(Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

/// One worker's measurements; merged at the end, so workers never contend on them.
pub struct Tally {
    /// Microseconds, per operation, indexed like [`Op::ALL`].
    hist: Vec<Histogram<u64>>,
    non_2xx: [u64; 6],
    /// Requests that got no answer at all (connection refused, reset, timed out).
    failed: [u64; 6],
    pub first_errors: Vec<String>,
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            hist: (0..6)
                .map(|_| Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"))
                .collect(),
            non_2xx: [0; 6],
            failed: [0; 6],
            first_errors: Vec::new(),
        }
    }

    pub fn record(&mut self, op: Op, latency: Duration, outcome: Result<u16, String>, live: &Live) {
        let i = op.index();
        self.hist[i].saturating_record(latency.as_micros().max(1) as u64);
        live.requests.fetch_add(1, Ordering::Relaxed);
        let error = match outcome {
            Ok(status) if (200..300).contains(&status) => return,
            Ok(status) => {
                self.non_2xx[i] += 1;
                format!("{} {}: status {status}", op.name(), op.request())
            }
            Err(e) => {
                self.failed[i] += 1;
                format!("{} {}: {e}", op.name(), op.request())
            }
        };
        live.errors.fetch_add(1, Ordering::Relaxed);
        if self.first_errors.len() < 5 {
            self.first_errors.push(error);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            let _ = a.add(b);
        }
        for i in 0..6 {
            self.non_2xx[i] += other.non_2xx[i];
            self.failed[i] += other.failed[i];
        }
        for e in other.first_errors {
            if self.first_errors.len() < 10 {
                self.first_errors.push(e);
            }
        }
    }

    /// One row per operation that was sent, plus `all`.
    pub fn summary(&self, secs: f64) -> Vec<OpResult> {
        let mut all = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
        let mut rows = Vec::new();
        for op in Op::ALL {
            let h = &self.hist[op.index()];
            if h.is_empty() {
                continue;
            }
            let _ = all.add(h);
            rows.push(OpResult::from_hist(
                op.name(),
                op.request(),
                h,
                secs,
                self.non_2xx[op.index()],
                self.failed[op.index()],
            ));
        }
        if !all.is_empty() {
            let non: u64 = self.non_2xx.iter().sum();
            let failed: u64 = self.failed.iter().sum();
            rows.push(OpResult::from_hist("all", "", &all, secs, non, failed));
        }
        rows
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    pub op: String,
    pub request: String,
    pub count: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub non_2xx: u64,
    pub failed: u64,
}

impl OpResult {
    fn from_hist(
        op: &str,
        request: &str,
        h: &Histogram<u64>,
        secs: f64,
        non: u64,
        failed: u64,
    ) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        OpResult {
            op: op.into(),
            request: request.into(),
            count: h.len(),
            rps: h.len() as f64 / secs.max(1e-9),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
            non_2xx: non,
            failed,
        }
    }
}

pub fn print_table(rows: &[OpResult]) {
    println!(
        "{:<9} {:<26} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "op", "request", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "non-2xx"
    );
    for r in rows {
        println!(
            "{:<9} {:<26} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8}",
            r.op,
            r.request,
            r.count,
            r.rps,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.non_2xx + r.failed
        );
    }
}

/// The outbox as sampled once a second: how far the relay is behind the writes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OutboxLag {
    pub samples: u64,
    pub max_rows: i64,
    /// Age of the oldest undelivered event: an upper bound of commit-to-Redis latency at
    /// that moment.
    pub max_oldest_ms: f64,
    pub mean_oldest_ms: f64,
}

/// Prints elapsed, req/s and errors once a second until `live.stop`, with the outbox when
/// the service's database is known. Returns the outbox lag it saw.
pub async fn progress(live: Arc<Live>, database_url: Option<String>) -> OutboxLag {
    let tty = std::io::stderr().is_terminal();
    let mut db = match &database_url {
        Some(url) => outbox::Sampler::connect(url).await,
        None => None,
    };
    let mut lag = OutboxLag::default();
    let mut sum_oldest = 0.0;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    while !live.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = live.requests.load(Ordering::Relaxed);
        let mut line = format!(
            "[{:>4.0} s] {:>7} req/s  errors {}",
            started.elapsed().as_secs_f64(),
            now - last,
            live.errors.load(Ordering::Relaxed)
        );
        last = now;
        if let Some(s) = match db.as_mut() {
            Some(sampler) => sampler.sample().await,
            None => None,
        } {
            lag.samples += 1;
            lag.max_rows = lag.max_rows.max(s.rows);
            lag.max_oldest_ms = lag.max_oldest_ms.max(s.oldest_ms);
            sum_oldest += s.oldest_ms;
            lag.mean_oldest_ms = sum_oldest / lag.samples as f64;
            line.push_str(&format!(
                "  outbox {} (oldest {:.0} ms)",
                s.rows, s.oldest_ms
            ));
        }
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
    lag
}
