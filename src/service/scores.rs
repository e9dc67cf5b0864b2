//! The caller's own scores, read from PostgreSQL on every signed-in read (DESIGN §4: always
//! current, on every instance), with the lookups of concurrent requests coalesced.
//!
//! A signed-in page costs one statement, and that statement is most of the page's cost (its
//! round trip, executor start and transaction more than its 20 index probes). So the lookups
//! of one HTTP worker queue up while a statement runs, and the next statement serves all of
//! them: a request that finds no statement running starts a task that runs statements until
//! the queue is empty. At low load a lookup runs at once, alone; under load a statement
//! serves up to [`MAX_BATCH`] requests. One statement at a time per worker, on the worker's
//! own pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;
use tokio::sync::oneshot;

use super::Context;
use crate::db::{self, PgPool};
use crate::error::ApiError;

/// Lookups one statement serves at most.
const MAX_BATCH: usize = 64;

type Reply = Result<Option<HashMap<i64, i16>>, ApiError>;

struct Lookup {
    viewer: i64,
    posts: Vec<i64>,
    reply: oneshot::Sender<Reply>,
}

/// One worker's queue of lookups.
#[derive(Default)]
pub struct Lookups {
    waiting: Vec<Lookup>,
    /// A task is running statements for this queue.
    running: bool,
}

pub type Queue = Arc<Mutex<Lookups>>;

/// `viewer`'s scores of `posts` (unrated posts are absent); 401 when the viewer's user row no
/// longer exists.
pub async fn own(
    state: &Context,
    viewer: i64,
    posts: &[i64],
) -> Result<HashMap<i64, i16>, ApiError> {
    state.metrics.score_lookups.inc();
    let queue = state.scores.local();
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut q = queue.lock().expect("score lookups");
        q.waiting.push(Lookup {
            viewer,
            posts: posts.to_vec(),
            reply,
        });
        !std::mem::replace(&mut q.running, true)
    };
    if start {
        let statements = state.metrics.score_statements.clone();
        tokio::spawn(drain(queue.clone(), state.pool.local().clone(), statements));
    }
    answer
        .await
        .map_err(|_| ApiError::Internal("a score lookup was dropped".into()))??
        .ok_or_else(ApiError::user_gone)
}

/// Runs statements until no lookup is waiting.
async fn drain(queue: Queue, pool: PgPool, statements: IntCounter) {
    loop {
        let batch: Vec<Lookup> = {
            let mut q = queue.lock().expect("score lookups");
            if q.waiting.is_empty() {
                q.running = false;
                return;
            }
            let take = q.waiting.len().min(MAX_BATCH);
            q.waiting.drain(..take).collect()
        };
        statements.inc();
        run(&pool, batch).await;
    }
}

async fn run(pool: &PgPool, batch: Vec<Lookup>) {
    let lookups: Vec<(i64, &[i64])> = batch.iter().map(|l| (l.viewer, &l.posts[..])).collect();
    let found = async {
        let mut conn = pool.get().await.map_err(|e| {
            log::warn!("database unavailable: {e}");
            Failure::Unavailable
        })?;
        db::posts::scores(&mut conn, &lookups).await.map_err(|e| {
            if e.is_unavailable() {
                log::warn!("database unavailable: {e}");
                Failure::Unavailable
            } else {
                Failure::Internal(e.to_string())
            }
        })
    }
    .await;
    drop(lookups);
    match found {
        Ok(found) => {
            for (lookup, scores) in batch.into_iter().zip(found) {
                // The request may have gone (client disconnected): nothing to tell.
                let _ = lookup.reply.send(Ok(scores));
            }
        }
        Err(failure) => {
            for lookup in batch {
                let _ = lookup.reply.send(Err(failure.error()));
            }
        }
    }
}

/// A failed statement, told to each of its lookups.
enum Failure {
    Unavailable,
    Internal(String),
}

impl Failure {
    fn error(&self) -> ApiError {
        match self {
            Failure::Unavailable => ApiError::Unavailable("database"),
            Failure::Internal(cause) => ApiError::Internal(cause.clone()),
        }
    }
}
