//! One value per HTTP worker thread, for connection pools.
//!
//! Each actix worker runs its own single-threaded Tokio runtime, and a PostgreSQL or Redis
//! connection does its socket I/O in a task on the runtime that opened it. A connection one
//! worker opened and another worker uses costs every query two wake-ups across threads
//! (the request to the connection's task, the answer back). With a pool per worker, a
//! request and its connections stay on one thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

thread_local! {
    /// The slot of the worker running on this thread; `None` on every other thread.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// `workers` values for the HTTP workers and one more shared by every other thread (the
/// relay, the consumer, tests). Cloning shares the values.
#[derive(Debug)]
pub struct PerWorker<T> {
    items: Arc<[T]>,
}

impl<T> Clone for PerWorker<T> {
    fn clone(&self) -> Self {
        PerWorker {
            items: self.items.clone(),
        }
    }
}

impl<T> PerWorker<T> {
    /// Shares `total` (connections) out over `workers` values, rounding up so none gets 0, and
    /// builds each with `make(share)`; one more value of that share is the shared one. So up
    /// to `total + share` connections when every thread kind is busy; pools open lazily.
    pub fn split<E>(
        total: usize,
        workers: usize,
        mut make: impl FnMut(usize) -> Result<T, E>,
    ) -> Result<Self, E> {
        let share = total.div_ceil(workers.max(1)).max(1);
        let items = (0..=workers)
            .map(|_| make(share))
            .collect::<Result<Vec<_>, E>>()?;
        Ok(PerWorker {
            items: items.into(),
        })
    }

    /// The value of the calling thread's worker, or the shared one.
    pub fn local(&self) -> &T {
        let shared = self.items.len() - 1;
        let slot = SLOT.get().map_or(shared, |slot| slot % shared.max(1));
        &self.items[slot.min(shared)]
    }

    /// Every value, the shared one last.
    pub fn all(&self) -> &[T] {
        &self.items
    }
}

/// Hands out worker slots: [`Slots::enter`] runs on each worker thread as it starts (in the
/// app factory, which actix calls on the worker's own thread).
#[derive(Debug, Default, Clone)]
pub struct Slots {
    next: Arc<AtomicUsize>,
}

impl Slots {
    /// Gives the calling thread the next slot, unless it already has one (the factory runs
    /// once per worker and bound address).
    pub fn enter(&self) {
        if SLOT.get().is_none() {
            SLOT.set(Some(self.next.fetch_add(1, Ordering::Relaxed)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_their_own_slot_and_other_threads_the_shared_one() {
        let mut next = 0;
        let values = PerWorker::split(4, 2, |_| {
            next += 1;
            Ok::<_, ()>(next - 1)
        })
        .unwrap();
        assert_eq!(values.all(), &[0, 1, 2]);
        assert_eq!(*values.local(), 2, "a thread that is no worker");
        let slots = Slots::default();
        let seen: Vec<usize> = (0..3)
            .map(|_| {
                let (values, slots) = (values.clone(), slots.clone());
                std::thread::spawn(move || {
                    slots.enter();
                    slots.enter();
                    *values.local()
                })
                .join()
                .unwrap()
            })
            .collect();
        // A third worker thread (a restarted worker) shares a worker slot, never the last.
        assert_eq!(seen, vec![0, 1, 0]);
    }

    #[test]
    fn a_total_is_shared_out_rounding_up() {
        let shares = |total, workers| {
            PerWorker::split(total, workers, Ok::<_, ()>)
                .unwrap()
                .all()
                .to_vec()
        };
        assert_eq!(shares(16, 2), [8, 8, 8]);
        assert_eq!(shares(16, 3), [6, 6, 6, 6]);
        assert_eq!(shares(1, 4), [1, 1, 1, 1, 1]);
        assert_eq!(shares(5, 0), [5], "no workers: only the shared value");
    }
}
