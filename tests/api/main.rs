//! Integration tests of the HTTP API against the real PostgreSQL and Redis.

mod burst;
mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod edges;
mod errors;
mod heal;
mod hostile;
mod limits;
mod outage;
mod pages;
mod posts;
mod proxy;
mod ratings;
mod reconcile;
mod schema;
mod stats;
mod users;
