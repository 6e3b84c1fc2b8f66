//! Who runs next on a contended serving thread: requests that have just started before requests that
//! have been running a while.
//!
//! A request's guest yields at every epoch tick (5 ms). Two things decide what runs after it:
//!
//! - **It yields behind the sockets.** wasmtime's own `Yield` wakes the task at once, so it goes
//!   straight back into the run queue; tokio's single-threaded scheduler polls its sockets only every
//!   61 task polls while tasks are always ready, so four spinning guests (61 slices of 5 ms) kept a
//!   serving thread from seeing new requests for about 300 ms at a time. Every slice here ends in
//!   [`tokio::task::yield_now`], which wakes the task only after the scheduler has polled its
//!   sockets and run every other ready task.
//! - **Old requests take turns in one lane.** A request is young for its first [`OLD_AFTER`]
//!   slices. While young requests keep arriving (one started in the last [`BUSY_FOR`]), old ones run
//!   one slice at a time, one slice per [`OLD_SHARE`] slice-times between them all: together they get
//!   at most 1/8 of one core, and the young requests the rest. When no young request has started for
//!   that long they run freely again. A request's own deadline (`--timeout`) still ends it at the
//!   same time: the lane only decides who waits for the CPU, never how long a request may live.
//!   (Young requests *in flight* would be the wrong signal: a healthy request spends microseconds in
//!   the engine and most of its time in the network, so that count is zero most of the time.)
//!
//! The lane is process-wide: the serving threads of `wasmcell serve`, and every pod's server in a
//! shim, share the same cores.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Slices (epoch ticks that found the guest running) after which a request is old.
pub(crate) const OLD_AFTER: u32 = 2;
/// Under contention, old requests together get one slice per this many.
pub(crate) const OLD_SHARE: u32 = 8;
/// One slice: the epoch tick (see `WasmtimeEngine::start_time_slicing`).
pub(crate) const SLICE: Duration = Duration::from_millis(5);
/// The serving threads are busy while a young request started this recently.
pub(crate) const BUSY_FOR: Duration = Duration::from_millis(20);

/// The process-wide lane.
static LANE: LazyLock<Lane> =
    LazyLock::new(|| Lane { since: Instant::now(), last_young: AtomicU64::new(0), next: Mutex::new(Instant::now()) });

struct Lane {
    /// The origin of `last_young`.
    since: Instant,
    /// When the last request started, in nanoseconds after `since`.
    last_young: AtomicU64,
    /// When the next old slice may start.
    next: Mutex<Instant>,
}

impl Lane {
    fn nanos(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn busy(&self) -> bool {
        self.nanos().saturating_sub(self.last_young.load(Ordering::Relaxed)) < BUSY_FOR.as_nanos() as u64
    }

    /// An old request's turn: after every ready task, and while young requests keep arriving, at its
    /// slot in the lane.
    async fn old_turn(&self) {
        tokio::task::yield_now().await;
        if !self.busy() {
            return;
        }
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + SLICE * OLD_SHARE;
            at
        };
        loop {
            let now = Instant::now();
            if now >= at || !self.busy() {
                return;
            }
            tokio::time::sleep((at - now).min(BUSY_FOR)).await;
        }
    }
}

/// One request's place in the lane.
pub(crate) struct Pace {
    slices: u32,
}

impl Pace {
    /// A new request: young.
    pub(crate) fn start() -> Pace {
        LANE.last_young.store(LANE.nanos(), Ordering::Relaxed);
        Pace { slices: 0 }
    }

    /// What the guest awaits at the end of a slice.
    pub(crate) fn next_slice(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.slices = self.slices.saturating_add(1);
        if self.slices < OLD_AFTER { Box::pin(tokio::task::yield_now()) } else { Box::pin(LANE.old_turn()) }
    }
}
