//! The queue of stats the store found wrong: partitions and posts waiting to be rebuilt from
//! PostgreSQL. The store fills it (apply, reads); the repair task (`crate::repair`) drains it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use crate::model::Cause;

/// A partition or a post to rebuild. `until`: the repair is still needed only while the
/// partition's fence, or the post's version, is below it (a later repair or a redelivery may
/// have covered it); `None`: needed regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub cause: Cause,
    pub until: Option<i64>,
}

impl Request {
    /// Both at once: the more severe cause, and the wider need.
    fn and(self, other: Request) -> Request {
        Request {
            cause: self.cause.min(other.cause),
            until: self.until.zip(other.until).map(|(a, b)| a.max(b)),
        }
    }
}

fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Request>, key: K, req: Request) {
    let merged = map.get(&key).map_or(req, |old| old.and(req));
    map.insert(key, merged);
}

/// What is waiting, taken in one piece by the repair task.
#[derive(Debug, Default)]
pub struct Pending {
    pub partitions: HashMap<i32, Request>,
    pub posts: HashMap<i64, Request>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty() && self.posts.is_empty()
    }

    /// Puts back what a failed repair round took.
    pub fn merge(&mut self, other: Pending) {
        for (part, req) in other.partitions {
            add(&mut self.partitions, part, req);
        }
        for (post, req) in other.posts {
            add(&mut self.posts, post, req);
        }
    }
}

/// Requests that a post is repaired are bounded: beyond this many waiting posts, the
/// partitions they belong to are rebuilt instead (see [`crate::repair`]).
pub const MAX_PENDING_POSTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct RepairQueue {
    pending: Mutex<Pending>,
    wake: Notify,
    /// A repair round is running.
    running: AtomicBool,
    /// When the oldest request still waiting or being repaired arrived (ms since `epoch`).
    since_ms: AtomicU64,
    epoch: OnceInstant,
}

/// A process-wide start instant, set on first use.
#[derive(Debug, Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

impl RepairQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_waiting(&self) {
        let now = self.epoch.get().elapsed().as_millis() as u64 + 1;
        let _ = self
            .since_ms
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    pub fn partition(&self, part: i32, cause: Cause, until: Option<i64>) {
        add(&mut self.lock().partitions, part, Request { cause, until });
        self.mark_waiting();
    }

    pub fn post(&self, post: i64, cause: Cause, until: Option<i64>) {
        {
            let mut pending = self.lock();
            if pending.posts.len() >= MAX_PENDING_POSTS && !pending.posts.contains_key(&post) {
                // Flooded: the repair task rebuilds whole partitions instead.
                log::warn!("stats repair queue full; post {post} waits for the audit");
                return;
            }
            add(&mut pending.posts, post, Request { cause, until });
        }
        self.mark_waiting();
    }

    /// Everything waiting, emptied.
    pub fn take(&self) -> Pending {
        let taken = std::mem::take(&mut *self.lock());
        if !taken.is_empty() {
            self.running.store(true, Ordering::Release);
        }
        taken
    }

    /// Puts back what a failed round took.
    pub fn put_back(&self, pending: Pending) {
        self.lock().merge(pending);
        self.running.store(false, Ordering::Release);
    }

    /// A round ended; the queue is idle if nothing new arrived meanwhile.
    pub fn finished(&self) {
        self.running.store(false, Ordering::Release);
        if self.lock().is_empty() {
            self.since_ms.store(0, Ordering::Release);
        }
    }

    /// Resolves when a request arrives (or one arrived since the last call).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// For how long stats have been waiting for (or under) repair; `None` when none are.
    pub fn repairing_for(&self) -> Option<Duration> {
        let since = self.since_ms.load(Ordering::Acquire);
        (since > 0).then(|| {
            let now = self.epoch.get().elapsed().as_millis() as u64 + 1;
            Duration::from_millis(now.saturating_sub(since))
        })
    }

    /// Partitions and posts waiting now (not counting a round in progress).
    pub fn waiting(&self) -> (usize, usize) {
        let pending = self.lock();
        (pending.partitions.len(), pending.posts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_merge_to_the_widest() {
        let q = RepairQueue::default();
        assert_eq!(q.repairing_for(), None);
        q.post(7, Cause::PostVersion, Some(5));
        q.post(7, Cause::PostVersion, Some(9));
        q.post(8, Cause::Impossible, None);
        q.post(8, Cause::PostVersion, Some(3));
        q.partition(2, Cause::Gap, Some(40));
        q.partition(2, Cause::StoreLost, None);
        assert!(q.repairing_for().is_some());
        let taken = q.take();
        assert_eq!(taken.posts[&7].until, Some(9));
        // Unconditional wins over conditional.
        assert_eq!(taken.posts[&8].until, None);
        assert_eq!(taken.partitions[&2].cause, Cause::StoreLost);
        assert_eq!(taken.partitions[&2].until, None);
        assert!(q.repairing_for().is_some(), "still running");
        q.finished();
        assert_eq!(q.repairing_for(), None);
    }

    #[test]
    fn a_failed_round_puts_its_requests_back() {
        let q = RepairQueue::default();
        q.partition(1, Cause::Gap, Some(10));
        let taken = q.take();
        q.partition(1, Cause::Gap, Some(20));
        q.put_back(taken);
        let again = q.take();
        assert_eq!(again.partitions[&1].until, Some(20));
    }
}
