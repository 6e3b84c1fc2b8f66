//! Admission: at most `max_concurrency` requests hold an instance slot at once; up to `max_queue` more
//! wait for one, in arrival order; any beyond that are refused with 503 at once. The queue's depth and
//! the refusals are counted in the server's [`Metrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Metrics;

/// The instance slots and the queue of requests waiting for one.
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    metrics: Metrics,
}

impl Admission {
    /// `max_concurrency` slots (at least one) and room for `max_queue` waiters.
    pub(crate) fn new(max_concurrency: usize, max_queue: usize, metrics: Metrics) -> Admission {
        Admission { permits: Arc::new(Semaphore::new(max_concurrency.max(1))), waiting: AtomicUsize::new(0), max_queue, metrics }
    }

    /// Waits for an instance slot; refuses only when the queue is full. The slot is held until the
    /// permit is dropped.
    pub(crate) async fn admit(&self) -> Result<OwnedSemaphorePermit, StatusCode> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.rejected.inc();
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        self.metrics.queue_depth.inc();
        // Leaves the queue however the wait ends: also when the request's future is dropped while it
        // waits (hyper drops it when the client goes away), which would otherwise hold a place in the
        // queue for ever.
        let _queued = Queued(self);
        self.permits.clone().acquire_owned().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// A request's place in the queue, given up when dropped.
struct Queued<'a>(&'a Admission);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.metrics.queue_depth.dec();
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Polls `f` once, as the server's runtime would between events.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn within_the_limit_requests_are_admitted_at_once() {
        let metrics = Metrics::new();
        let a = Admission::new(2, 0, metrics.clone());
        runtime().block_on(async {
            let p1 = a.admit().await.unwrap();
            let p2 = a.admit().await.unwrap();
            // The third has no slot and no room in the queue.
            assert_eq!(a.admit().await.unwrap_err(), StatusCode::SERVICE_UNAVAILABLE);
            drop((p1, p2));
            let _p3 = a.admit().await.unwrap();
        });
        assert_eq!(metrics.queue_depth.get(), 0);
        assert_eq!(metrics.rejected.get(), 1);
    }

    #[test]
    fn zero_concurrency_still_admits_one() {
        let a = Admission::new(0, 0, Metrics::new());
        runtime().block_on(async {
            let _p = a.admit().await.expect("max_concurrency 0 is taken as 1");
            assert_eq!(a.admit().await.unwrap_err(), StatusCode::SERVICE_UNAVAILABLE);
        });
    }

    #[test]
    fn the_second_waits_the_third_is_refused_and_a_release_lets_the_waiter_in() {
        let metrics = Metrics::new();
        let a = Admission::new(1, 1, metrics.clone());
        runtime().block_on(async {
            let first = a.admit().await.unwrap();

            let mut second = pin!(a.admit());
            assert!(poll_once(second.as_mut()).is_pending(), "the second request must wait for the slot");
            assert_eq!(metrics.queue_depth.get(), 1);

            assert_eq!(a.admit().await.unwrap_err(), StatusCode::SERVICE_UNAVAILABLE, "the queue of one is full");
            assert_eq!(metrics.rejected.get(), 1);
            assert_eq!(metrics.queue_depth.get(), 1, "a refused request is not queued");

            assert!(poll_once(second.as_mut()).is_pending(), "still waiting while the slot is held");
            drop(first);
            let second = second.await.expect("the waiter gets the released slot");
            assert_eq!(metrics.queue_depth.get(), 0);

            // The queue has room again: a new request waits instead of being refused.
            let mut third = pin!(a.admit());
            assert!(poll_once(third.as_mut()).is_pending());
            assert_eq!(metrics.queue_depth.get(), 1);
            drop(second);
            let _third = third.await.unwrap();
        });
        assert_eq!(metrics.queue_depth.get(), 0);
        assert_eq!(metrics.rejected.get(), 1);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_queue() {
        // A client that disconnects while queued: hyper drops its request's future.
        let metrics = Metrics::new();
        let a = Admission::new(1, 1, metrics.clone());
        runtime().block_on(async {
            let held = a.admit().await.unwrap();
            {
                let mut gone = pin!(a.admit());
                assert!(poll_once(gone.as_mut()).is_pending());
                assert_eq!(metrics.queue_depth.get(), 1);
            }
            assert_eq!(metrics.queue_depth.get(), 0, "the abandoned waiter is still counted");
            let mut next = pin!(a.admit());
            assert!(poll_once(next.as_mut()).is_pending(), "the abandoned waiter still takes the queue's room");
            drop(held);
            let _p = next.await.unwrap();
        });
        assert_eq!(metrics.rejected.get(), 0);
    }

    #[test]
    fn waiters_are_admitted_in_arrival_order() {
        let a = Arc::new(Admission::new(1, 8, Metrics::new()));
        runtime().block_on(async {
            let held = a.admit().await.unwrap();
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let mut tasks = Vec::new();
                    for i in 0..5 {
                        let (a, order) = (a.clone(), order.clone());
                        tasks.push(tokio::task::spawn_local(async move {
                            let _p = a.admit().await.unwrap();
                            order.lock().unwrap().push(i);
                            tokio::task::yield_now().await;
                        }));
                        // Let it reach the queue before the next one arrives.
                        tokio::task::yield_now().await;
                    }
                    assert_eq!(a.metrics.queue_depth.get(), 5);
                    drop(held);
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
                .await;
            assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
        });
        assert_eq!(a.metrics.queue_depth.get(), 0);
        assert_eq!(a.metrics.rejected.get(), 0);
    }

    #[test]
    fn the_metrics_render_queue_depth_and_rejections() {
        let metrics = Metrics::new();
        let a = Admission::new(1, 0, metrics.clone());
        runtime().block_on(async {
            let _p = a.admit().await.unwrap();
            for _ in 0..3 {
                assert!(a.admit().await.is_err());
            }
        });
        let text = metrics.render();
        assert!(text.lines().any(|l| l == "wasmcell_rejected_total 3"), "{text}");
        assert!(text.lines().any(|l| l == "wasmcell_queue_depth 0"), "{text}");
    }
}
