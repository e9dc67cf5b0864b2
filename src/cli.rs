//! Command line: `serve` (the default), `migrate`, `reconcile`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::stats::{RedisTarget, StatsStore};

#[derive(Parser)]
#[command(
    name = "post-rate",
    version,
    about = "Rate posts from 0 to 5: exact, burst-damped stats at scale"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API with the outbox relay and the stats consumer (the default).
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Recompute every post's stats from the ratings table and repair Redis.
    Reconcile {
        /// Only report the drift; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for in-flight events to be applied before comparing.
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
    },
    /// Compare every post's Redis stats with PostgreSQL once, as the service's audit does,
    /// and report what differs and how long each pass took (changes nothing).
    Audit,
    /// Run the burst-damping model on a virtual clock and print a per-bucket table.
    Simulate(crate::stats::burst::simulate::SimulateArgs),
}

/// `post-rate audit`: one version pass and one full pass; what they find is only reported.
async fn audit(settings: &Settings) -> Result<(), String> {
    let store = StatsStore::new(
        &RedisTarget::from_settings(settings),
        2,
        settings.redis_timeout,
    )
    .map_err(|e| e.to_string())?;
    let auditor = crate::repair::audit::Auditor {
        store,
        database_url: settings.database_url.clone(),
        timeout: settings.database_timeout,
        interval: settings.heal.audit_interval,
        full_interval: settings.heal.audit_full_interval,
        grace: settings.heal.grace,
        metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
    };
    let mut conn = crate::db::connect(&settings.database_url, settings.database_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let version = auditor
        .version_pass(&mut conn, &mut Default::default())
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "audit version pass: {} posts in {} ms: {} behind their version, {} wrong",
        version.posts,
        started.elapsed().as_millis(),
        version.behind,
        version.found
    );
    let started = std::time::Instant::now();
    let full = auditor
        .full_pass(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "audit full pass: {} posts in {} ms: {} differ from PostgreSQL",
        full.posts,
        started.elapsed().as_millis(),
        full.found
    );
    Ok(())
}

pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Some(Command::Simulate(args)) = &cli.command {
        // Offline: the BURST_* variables are the base, flags override them.
        let base = match Settings::from_env() {
            Ok(s) => s.burst,
            Err(e) => {
                eprintln!("post-rate: {e}");
                return ExitCode::from(2);
            }
        };
        let mut out = std::io::stdout().lock();
        return match crate::stats::burst::simulate::run_with_base(args, base, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("post-rate simulate: {e}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("post-rate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("post-rate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let running = crate::server::start(settings)
                    .await
                    .map_err(|e| e.to_string())?;
                running.wait_for_signal().await;
                Ok(())
            }
            Command::Migrate => {
                crate::db::create_database_if_missing(
                    &settings.database_url,
                    settings.database_timeout,
                )
                .await
                .map_err(|e| e.to_string())?;
                crate::db::run_migrations(&settings.database_url, settings.database_timeout)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Simulate(_) => Ok(()),
            Command::Audit => audit(&settings).await,
            Command::Reconcile { dry_run, wait_secs } => {
                let store = StatsStore::new(
                    &RedisTarget::from_settings(&settings),
                    2,
                    settings.redis_timeout,
                )
                .map_err(|e| e.to_string())?;
                let report = crate::reconcile::run(
                    &settings,
                    &store,
                    dry_run,
                    Duration::from_secs(wait_secs),
                )
                .await
                .map_err(|e| e.to_string())?;
                println!("{report}");
                Ok(())
            }
        }
    });
    // Blocking work that cannot finish (a Kafka client closing against a dead broker) must not
    // keep the process alive after the service stopped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("post-rate: {e}");
            ExitCode::FAILURE
        }
    }
}
