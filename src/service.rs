//! What the API does, free of HTTP: each function takes the app state and typed input and
//! returns typed output or an [`ApiError`](crate::error::ApiError).

pub mod cursor;
pub mod pages;
pub mod posts;
pub mod ratings;
pub mod render;
pub mod scores;
pub mod users;
