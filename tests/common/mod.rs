//! The harness every integration test binary shares (`#[path = "../common/mod.rs"]`): each
//! [`TestApp`] is the real service, started in-process on a free port against its own
//! PostgreSQL database (a copy of one migrated template) and its own Redis key prefix, so
//! tests run in parallel and leave nothing behind (both are dropped with the app).
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod cluster;
pub mod database;
pub mod exact;
pub mod losses;
pub mod wait;

pub use app::{problem, test_settings, AppBuilder, TestApp, User, JWT_SECRET};
pub use cluster::{cluster_seeds, redis_cluster, redis_cluster_script};
pub use exact::same_average;
pub use wait::wait_until;
