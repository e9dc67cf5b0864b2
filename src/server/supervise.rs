//! Supervision of the background tasks: a task that fails (ends before shutdown, or panics)
//! is logged, counted in `post_rate_task_restarts_total{task}` and started again after a
//! growing pause.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// First and largest pause before a restart; a task that ran this long resets the pause.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Aborts the running task when the supervisor itself is aborted.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns `start()` and keeps it running until `shutdown`: the returned handle ends when the
/// task has ended after `shutdown` was cancelled.
pub fn supervise<F, Fut>(
    task: &'static str,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    mut start: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut pause = FIRST_PAUSE;
        loop {
            let started = Instant::now();
            let running = tokio::spawn(start());
            let _guard = AbortOnDrop(running.abort_handle());
            let ended = running.await;
            if shutdown.is_cancelled() {
                return;
            }
            match ended {
                Ok(()) => log::error!("{task} stopped on its own; restarting it in {pause:?}"),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    log::error!("{task} panicked: {what}; restarting it in {pause:?}");
                }
                Err(e) => log::error!("{task} was cancelled ({e}); restarting it in {pause:?}"),
            }
            metrics.heal.task_restarts.with_label_values(&[task]).inc();
            if started.elapsed() >= HEALTHY_RUN {
                pause = FIRST_PAUSE;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_stops_is_restarted_until_shutdown() {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let handle = {
            let starts = starts.clone();
            let shutdown = shutdown.clone();
            supervise("flaky", metrics.clone(), shutdown.clone(), move || {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                let shutdown = shutdown.clone();
                async move {
                    match n {
                        0 => panic!("first run fails"),
                        1 => {}
                        _ => shutdown.cancelled().await,
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while starts.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let restarts = metrics
            .heal
            .task_restarts
            .with_label_values(&["flaky"])
            .get();
        assert_eq!(restarts, 2, "one panic and one early end");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("stops on shutdown")
            .expect("supervisor ends cleanly");
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "not restarted after shutdown"
        );
    }

    #[tokio::test]
    async fn aborting_the_supervisor_aborts_the_task() {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let alive = Arc::new(AtomicU32::new(0));
        let handle = {
            let alive = alive.clone();
            supervise("forever", metrics, shutdown, move || {
                let alive = alive.clone();
                async move {
                    struct Alive(Arc<AtomicU32>);
                    impl Drop for Alive {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    alive.fetch_add(1, Ordering::SeqCst);
                    let _alive = Alive(alive);
                    std::future::pending::<()>().await
                }
            })
        };
        while alive.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.abort();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive.load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "task outlived its supervisor");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
