//! One repair round: under the stamp lock, rebuild from PostgreSQL the partitions and posts
//! that still need it, in one snapshot, and write them to Redis.

use std::collections::HashMap;

use diesel_async::AsyncPgConnection;

use crate::db::snapshot::{self, Scope, Target};
use crate::db::{outbox, DbError};
use crate::stats::repairs::{Cause, Pending};
use crate::stats::{PostStats, StatsError, StatsStore, StoredStats};

/// Posts written per Redis script call: short enough not to stall other clients.
pub const CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Stats(#[from] StatsError),
}

impl From<diesel::result::Error> for RepairError {
    fn from(e: diesel::result::Error) -> Self {
        RepairError::Db(e.into())
    }
}

/// What a round rebuilt.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Partitions rebuilt whole, with why.
    pub partitions: Vec<(i32, Cause)>,
    /// Posts rebuilt one by one, with why.
    pub posts: Vec<(i64, Cause)>,
    /// Posts compared (every post of the partitions, plus the single posts).
    pub checked: usize,
    /// Posts whose Redis stats or version differed, and were rewritten.
    pub differed: u64,
}

impl Outcome {
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty() && self.posts.is_empty()
    }
}

/// Rebuilds what `pending` still needs, on `conn`, which must hold the stamp lock
/// ([`snapshot::lock_stamping`]): nothing is stamped from the snapshot until the writes are
/// done, so the events in flight are exactly those at or below the written versions and
/// fences, which apply then skips; every later event follows on.
pub async fn rebuild(
    conn: &mut AsyncPgConnection,
    store: &StatsStore,
    partitions_of: i32,
    pending: &Pending,
) -> Result<Outcome, RepairError> {
    let fences = store.fences().await?;
    let mut partitions: Vec<(i32, Cause)> = pending
        .partitions
        .iter()
        .filter(|(part, req)| match req.until {
            None => true,
            // Still below what the request needed: nothing has covered it since.
            Some(until) => fences.get(part).is_none_or(|f| *f < until),
        })
        .map(|(part, req)| (*part, req.cause))
        .collect();
    partitions.sort_unstable();
    let covered = |post: i64| {
        let part = outbox::partition_of(post, partitions_of);
        partitions.binary_search_by_key(&part, |(p, _)| *p).is_ok()
    };
    let candidates: Vec<i64> = pending
        .posts
        .keys()
        .copied()
        .filter(|&p| !covered(p))
        .collect();
    let stored = store.load_versions(&candidates).await?;
    let mut posts: Vec<(i64, Cause)> = candidates
        .iter()
        .filter_map(|post| {
            let req = pending.posts.get(post)?;
            let version = stored.get(post).map_or(0, |s| s.version);
            match req.until {
                Some(until) if version >= until => None,
                _ => Some((*post, req.cause)),
            }
        })
        .collect();
    posts.sort_unstable();
    if partitions.is_empty() && posts.is_empty() {
        return Ok(Outcome::default());
    }

    let parts: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
    let ids: Vec<i64> = posts.iter().map(|(p, _)| *p).collect();
    let (mut targets, last) = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |c| {
            let mut targets = match parts.len() {
                0 => Vec::new(),
                n if n == partitions_of as usize => snapshot::targets(c, Scope::All).await?,
                _ => {
                    let scope = Scope::Partitions {
                        parts: &parts,
                        of: partitions_of,
                    };
                    snapshot::targets(c, scope).await?
                }
            };
            if !ids.is_empty() {
                targets.extend(snapshot::targets(c, Scope::Posts(&ids)).await?);
            }
            let last = outbox::last_seqs(c).await?;
            Ok::<_, DbError>((targets, last))
        })
        .await?;
    let last: HashMap<i32, i64> = last.into_iter().collect();
    let fences_to_set: Vec<(i32, i64)> = parts
        .iter()
        .map(|p| (*p, last.get(p).copied().unwrap_or(0)))
        .collect();
    targets.sort_unstable_by_key(|t| t.post_id);
    targets.dedup_by_key(|t| t.post_id);
    let differed = write(store, &targets, &fences_to_set, false).await?;
    Ok(Outcome {
        partitions,
        posts,
        checked: targets.len(),
        differed,
    })
}

/// Writes `targets` in chunks, the fences with the last chunk; returns how many differed.
pub async fn write(
    store: &StatsStore,
    targets: &[Target],
    fences: &[(i32, i64)],
    dry_run: bool,
) -> Result<u64, StatsError> {
    let stored: Vec<(i64, StoredStats)> = targets
        .iter()
        .map(|t| {
            let stored = StoredStats {
                stats: PostStats::from_array(t.stats()),
                version: t.version,
            };
            (t.post_id, stored)
        })
        .collect();
    let mut differed = 0;
    let mut chunks = stored.chunks(CHUNK).peekable();
    if chunks.peek().is_none() {
        return store.repair_chunk(&[], fences, dry_run).await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let fences = if last { fences } else { &[] };
        differed += store.repair_chunk(chunk, fences, dry_run).await?;
    }
    Ok(differed)
}

/// A connection for one round: no statement timeout (a partition's sums may take longer than
/// an API statement may), holding the stamp lock until it is dropped or unlocked.
pub async fn locked_connection(
    database_url: &str,
    timeout: std::time::Duration,
) -> Result<AsyncPgConnection, DbError> {
    let mut conn = crate::db::connect(database_url, timeout).await?;
    crate::db::without_statement_timeout(&mut conn).await?;
    snapshot::lock_stamping(&mut conn).await?;
    Ok(conn)
}
