//! post-rate: people rate posts from 0 to 5; exact, burst-damped stats at scale.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod per_worker;
pub mod readiness;
pub mod reconcile;
pub mod repair;
pub mod server;
pub mod service;
pub mod stats;
