//! Integration tests of the HTTP API against the real PostgreSQL and Redis.

mod common;
mod errors;
mod posts;
mod ratings;
mod reconcile;
mod schema;
mod stats;
mod users;
