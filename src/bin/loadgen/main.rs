//! `loadgen`: drives a running post-rate with realistic traffic (many users, Zipf post
//! popularity, re-rates, withdrawals, bursts), prints throughput and latency per operation,
//! then checks every post's stats against PostgreSQL. See `loadgen --help`. Its subcommands
//! serve the benchmark's Kafka section (`loadgen consume-raw --help`).

mod args;
mod check;
mod client;
mod drive;
mod kafka;
mod outbox;
mod record;
mod setup;
mod watch;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use args::{Args, Command};
use record::Live;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `report` as pretty JSON to `path`.
pub fn write_json(path: &std::path::Path, report: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// `Ok(false)` when requests failed or the stats were not exact.
async fn run(args: Args) -> Result<bool, String> {
    match &args.command {
        Some(Command::ConsumeRaw(raw)) => return kafka::consume_raw(raw).await,
        Some(Command::KafkaDelete(what)) => return kafka::delete(what).await,
        Some(Command::WatchMetric(watch)) => return watch::run(watch).await,
        None => {}
    }
    let weights = args::parse_mix(&args.mix)?;
    let api = client::Api::new(&args.url, args.concurrency)?;
    let world = setup::build(&args, &api).await?;
    if let Some(path) = &args.tokens_out {
        setup::write_lines(path, world.raters.iter().map(|(_, t)| t))?;
    }
    if let Some(path) = &args.posts_out {
        setup::write_lines(path, world.posts.iter())?;
    }

    let mut ok = true;
    let mut report = json!({
        "url": args.url,
        "users": world.raters.len(),
        "posts": world.posts.len(),
        "concurrency": args.concurrency,
        "mix": args.mix,
        "rate": args.rate,
        "zipf_s": args.zipf_s,
        "setup": { "users_secs": world.users_secs, "posts_secs": world.posts_secs },
    });
    if args.duration > 0 {
        let live = Arc::new(Live::default());
        let progress = tokio::spawn(record::progress(live.clone(), args.database_url.clone()));
        let outcome = drive::run(&args, &api, &world, live.clone(), weights).await;
        live.stop.store(true, Ordering::Relaxed);
        let lag = progress.await.unwrap_or_default();
        let outcome = outcome?;
        let rows = outcome.tally.summary(outcome.secs);
        println!();
        match outcome.target_rps {
            Some(r) => println!(
                "{:.1} s, {} connections, paced at {:.0} req/s ({} writes/s); latency counts from when each request was due",
                outcome.secs, args.concurrency, r, args.rate.unwrap_or(0.0)
            ),
            None => println!("{:.1} s, {} connections, closed loop", outcome.secs, args.concurrency),
        }
        record::print_table(&rows);
        if lag.samples > 0 {
            println!(
                "outbox (sampled 1/s): at most {} rows; oldest undelivered event at most {:.0} ms, {:.0} ms on average",
                lag.max_rows, lag.max_oldest_ms, lag.mean_oldest_ms
            );
        }
        for e in &outcome.tally.first_errors {
            println!("error: {e}");
        }
        if rows.last().is_some_and(|all| all.non_2xx + all.failed > 0) {
            ok = false;
        }
        report["duration_secs"] = json!(outcome.secs);
        report["target_rps"] = json!(outcome.target_rps);
        report["ops"] = json!(rows);
        report["outbox"] = json!(lag);
        report["errors"] = json!(outcome.tally.first_errors);
    }

    match (&args.database_url, args.no_check) {
        (Some(url), false) => {
            eprintln!("check: waiting for the outbox to drain, then comparing every post");
            let result = check::run(
                url,
                &api,
                Duration::from_secs(args.drain_timeout),
                args.concurrency,
            )
            .await?;
            println!(
                "exactness: {} posts checked against `ratings` (outbox drained in {:.2} s): {} mismatches",
                result.posts_checked, result.drain_secs, result.mismatches
            );
            for m in &result.examples {
                println!("  mismatch: {m}");
            }
            if result.mismatches > 0 {
                println!(
                    "  (is the service running with STATS_CACHE_TTL_SECS=0? cached stats lag)"
                );
                ok = false;
            }
            report["check"] = json!(result);
        }
        _ => println!("exactness: not checked (needs --database-url)"),
    }
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(ok)
}
