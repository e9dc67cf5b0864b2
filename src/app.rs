//! The state every request handler reads, built once by `server::start` and handed to the
//! HTTP workers: the service's [`Context`], and what the API itself needs beside it (the
//! limits, readiness, the pipeline's counters for `/metrics`).
//!
//! It sits between `api` and the layers whose parts it holds: `api` imports it, nothing below
//! `api` does (service functions take the [`Context`] alone).

use std::sync::Arc;

use crate::config::Settings;
use crate::events::kafka::ConsumerStats;
use crate::limits::RateLimits;
use crate::metrics::Throttle;
use crate::readiness::Readiness;
use crate::repair::PipelineHealth;
use crate::service::Context;

pub struct AppState {
    /// Pools, caches, keys and counters the service functions use.
    pub service: Context,
    pub settings: Settings,
    /// `RATE_LIMIT_*`, per instance or in Redis (`RATE_LIMIT_STORE`).
    pub limits: Arc<RateLimits>,
    /// How often `/metrics` counts the outbox.
    pub outbox_gauge: Throttle,
    /// `/readyz`: the named checks and their latest snapshot.
    pub readiness: Readiness,
    /// The stats consumer's counters, when this instance runs one.
    pub consumer_stats: Option<Arc<ConsumerStats>>,
    /// The event pipeline as the store check last saw it.
    pub pipeline: Arc<PipelineHealth>,
}
