//! Wiring: builds the state, runs the HTTP API, the relay, the consumer and the stats repair
//! side by side on one Tokio runtime, supervises the background tasks, and shuts them down in
//! order on SIGINT/SIGTERM.

mod checks;
mod supervise;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::connection::Deadlines;
use crate::app::AppState;
use crate::auth::password::HashPool;
use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::db;
use crate::events::kafka::BrokerProbe;
use crate::events::relay::{KafkaSink, Relay, Sink};
use crate::events::stats_consumer::StatsConsumer;
use crate::limits::RateLimits;
use crate::metrics::{Metrics, Throttle};
use crate::per_worker::{PerWorker, Slots};
use crate::readiness::Readiness;
use crate::repair::audit::Auditor;
use crate::repair::{PipelineHealth, Repairer};
use crate::service::cursor::CursorCodec;
use crate::service::pages::PageCache;
use crate::service::Context;
use crate::stats::burst::BurstDetector;
use crate::stats::{RedisTarget, StatsCache, StatsStore};

/// A background task's body, as its supervisor starts it.
type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("database pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Stats(#[from] crate::stats::StatsError),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("cannot listen on BIND_ADDR={addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// How long a stopping service waits for the relay and the consumer.
const WORKERS_STOP: std::time::Duration = std::time::Duration::from_secs(8);

/// A started service: its address, and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: web::Data<AppState>,
    handle: ServerHandle,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, then lets the relay drain and the
    /// consumer commit before returning.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
        self.shutdown.cancel();
        // The relay drains for up to 5 s; a consumer whose broker is gone may not manage to
        // close at all. Either way the process does not wait longer than this.
        let workers = futures::future::join_all(self.workers);
        if tokio::time::timeout(WORKERS_STOP, workers).await.is_err() {
            log::warn!("background workers did not stop within {WORKERS_STOP:?}; exiting anyway");
        }
    }

    /// Stops everything at once, without draining (tests tearing down after a failure).
    pub fn abort(self) {
        self.shutdown.cancel();
        for worker in &self.workers {
            worker.abort();
        }
        self.server.abort();
        // The stop command is sent when called; nobody waits for it.
        drop(self.handle.stop(false));
    }

    /// Waits until the HTTP server ends (it is stopped by [`Running::stop`]).
    pub async fn wait_for_signal(self) {
        let mut sigterm =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("cannot listen for SIGTERM: {e}");
                    return self.stop().await;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
            _ = sigterm.recv() => log::info!("SIGTERM: shutting down"),
        }
        self.stop().await;
        log::info!("stopped");
    }
}

/// Logs a warning when Redis may evict keys that have no TTL: the stats hashes and fences.
/// The service repairs what is evicted, but each eviction costs a rebuild.
async fn warn_if_redis_evicts(store: StatsStore) {
    match store.eviction_policy().await {
        Ok(Some(policy)) if policy.starts_with("allkeys-") => log::warn!(
            "Redis maxmemory-policy is {policy}: it can evict the stats hashes and fences, \
             which have no TTL. The service rebuilds what is evicted from PostgreSQL, but set \
             noeviction or a volatile-* policy, or give Redis enough memory"
        ),
        Ok(_) => {}
        Err(e) => log::debug!("cannot read Redis maxmemory-policy: {e}"),
    }
}

/// Prepares the database, builds the state and starts every part the settings ask for.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    if settings.jwt_secret_generated {
        log::warn!("JWT_SECRET is not set: using a random secret, tokens end with this process");
    }
    db::create_database_if_missing(&settings.database_url, settings.database_timeout).await?;
    db::run_migrations(&settings.database_url, settings.database_timeout).await?;
    let pool = PerWorker::split(settings.database_pool_size, settings.http_workers, |size| {
        db::pool(&settings.database_url, size, settings.database_timeout)
    })
    .map_err(|e| StartError::Pool(e.to_string()))?;
    let store = StatsStore::for_workers(
        &RedisTarget::from_settings(&settings),
        settings.redis_pool_size,
        settings.redis_timeout,
        settings.http_workers,
    )?;
    tokio::spawn(warn_if_redis_evicts(store.clone()));
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    let kafka = settings.kafka_brokers.clone();
    let mut consumer_stats = None;
    let spawn = |task: &'static str, start: Box<dyn FnMut() -> TaskFuture + Send>| {
        supervise::supervise(task, metrics.clone(), shutdown.clone(), start)
    };
    if let (true, Some(brokers)) = (settings.run_consumer, &kafka) {
        let consumer = Arc::new(StatsConsumer::new(
            &settings,
            brokers,
            store.clone(),
            metrics.clone(),
        ));
        consumer_stats = Some(consumer.stats());
        let stop = shutdown.clone();
        workers.push(spawn(
            "consumer",
            Box::new(move || Box::pin(consumer.clone().run(stop.clone()))),
        ));
    }
    if settings.run_relay {
        let sink = match &kafka {
            Some(brokers) => Sink::Kafka(
                KafkaSink::new(&settings, brokers).map_err(|e| StartError::Kafka(e.to_string()))?,
            ),
            None => Sink::Embedded(store.clone()),
        };
        let relay = Arc::new(Relay {
            database_url: settings.database_url.clone(),
            timeout: settings.database_timeout,
            partitions: settings.kafka_partitions,
            batch_size: settings.relay_batch_size,
            poll: settings.relay_poll,
            sink,
            metrics: metrics.clone(),
            max_failures: settings.heal.relay_max_failures,
        });
        let stop = shutdown.clone();
        workers.push(spawn(
            "relay",
            Box::new(move || Box::pin(relay.clone().run(stop.clone()))),
        ));
    }
    let limits = Arc::new(
        RateLimits::new(
            settings.rate_limit_writes_per_min,
            settings.rate_limit_auth_per_min,
            settings.rate_limit_trust_forwarded_for,
        )
        .kept_in(
            settings.rate_limit_store,
            &store,
            metrics.rate_limit_store_errors.clone(),
        ),
    );
    workers.push(tokio::spawn(RateLimits::sweep(
        Arc::downgrade(&limits),
        shutdown.clone(),
    )));
    let broker_probe = match &kafka {
        Some(brokers) => {
            Some(BrokerProbe::new(brokers).map_err(|e| StartError::Kafka(e.to_string()))?)
        }
        None => None,
    };
    let pipeline = Arc::new(PipelineHealth::default());
    let mut checks = checks::dependency_checks(&pool, &store, broker_probe);
    checks.push(checks::stats_check(store.repairs().clone()));
    checks.push(checks::pipeline_check(
        pipeline.clone(),
        consumer_stats.clone(),
        settings.heal.pipeline_stuck,
    ));
    let readiness = Readiness::new(checks, checks::READINESS_EVERY);
    let passwords = HashPool::new(
        settings.password_hash_threads,
        settings.password_hash_queue,
        metrics.passwords_shed.clone(),
    );
    let stats = StatsCache::new(
        store.clone(),
        settings.stats_cache_ttl,
        settings.stats_cache_capacity,
        metrics.cache_hits.clone(),
        metrics.cache_misses.clone(),
    );
    let repairer = Arc::new(Repairer {
        store: store.clone(),
        cache: stats.clone(),
        database_url: settings.database_url.clone(),
        timeout: settings.database_timeout,
        partitions: settings.kafka_partitions,
        grace: settings.heal.grace,
        metrics: metrics.clone(),
        health: pipeline.clone(),
    });
    let stop = shutdown.clone();
    workers.push(spawn(
        "repair",
        Box::new(move || Box::pin(repairer.clone().run(stop.clone()))),
    ));
    let auditor = Arc::new(Auditor {
        store,
        database_url: settings.database_url.clone(),
        timeout: settings.database_timeout,
        interval: settings.heal.audit_interval,
        full_interval: settings.heal.audit_full_interval,
        grace: settings.heal.grace,
        metrics: metrics.clone(),
    });
    // STATS_AUDIT_INTERVAL_SECS=0 turns the audit off: no task (a supervised task that
    // returns at once would be restarted for ever).
    if !settings.heal.audit_interval.is_zero() {
        let stop = shutdown.clone();
        workers.push(spawn(
            "audit",
            Box::new(move || Box::pin(auditor.clone().run(stop.clone()))),
        ));
    }
    let service = Context {
        stats,
        burst: BurstDetector::new(settings.burst),
        tokens: TokenKeys::new(&settings.jwt_secret, settings.token_ttl_secs),
        cursors: CursorCodec::new(&settings.jwt_secret),
        authors: moka::future::Cache::new(settings.stats_cache_capacity),
        scores: PerWorker::split(settings.http_workers, settings.http_workers, |_| {
            Ok::<_, std::convert::Infallible>(Default::default())
        })
        .unwrap_or_else(|e| match e {}),
        pages: PageCache::new(
            settings.page_cache,
            settings.stats_cache_ttl,
            metrics.page_loads.clone(),
        ),
        pool,
        metrics,
        passwords,
    };
    let state = web::Data::new(AppState {
        service,
        limits,
        outbox_gauge: Throttle::new(std::time::Duration::from_secs(1)),
        readiness,
        consumer_stats,
        pipeline,
        settings,
    });
    let app_state = state.clone();
    let slots = Slots::default();
    let edges = state.settings.edges.clone();
    crate::api::connection::check_descriptor_budget(
        state.settings.http_workers,
        edges.max_connections,
    );
    let deadlines = Deadlines {
        idle: edges.keep_alive + edges.header_timeout,
        request: edges.request_timeout,
    };
    let server = HttpServer::new(move || {
        slots.enter();
        App::new()
            .app_data(app_state.clone())
            .wrap(actix_web::middleware::from_fn(crate::api::edges::limit))
            .wrap(crate::api::problem_errors())
            .wrap(actix_web::middleware::from_fn(crate::api::observe::observe))
            .configure(crate::api::configure)
    })
    .workers(state.settings.http_workers)
    // Connection limits (DESIGN §8.6, README "Security"); on_connect must precede bind.
    .client_request_timeout(edges.header_timeout)
    .keep_alive(if edges.keep_alive.is_zero() {
        KeepAlive::Disabled
    } else {
        KeepAlive::Timeout(edges.keep_alive)
    })
    .client_disconnect_timeout(edges.disconnect_timeout)
    .max_connections(edges.max_connections)
    .on_connect(move |conn, data| crate::api::connection::on_connect(conn, data, deadlines))
    .disable_signals()
    .shutdown_timeout(edges.shutdown_timeout_secs);
    let server = server
        .bind(&state.settings.bind_addr)
        .map_err(|source| StartError::Bind {
            addr: state.settings.bind_addr.clone(),
            source,
        })?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| StartError::Bind {
            addr: state.settings.bind_addr.clone(),
            source: std::io::Error::other("no address bound"),
        })?;
    let server = server.run();
    let handle = server.handle();
    log::info!("listening on http://{addr}");
    Ok(Running {
        addr,
        state,
        handle,
        server: tokio::spawn(server),
        shutdown,
        workers,
    })
}
