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
//!   slices: epoch ticks that passed while its code was running, counted by the store's call hook
//!   (every entry to and exit from wasm). Wall time would be the wrong clock: a WASI 0.3 request's
//!   store lives on while the client reads the body, and a guest re-entered after waiting on I/O
//!   meets the epoch deadline at once, though it has run for microseconds. Counting every deadline
//!   callback as a slice made healthy 0.3 requests old within two ticks of arriving, and under
//!   load they queued in the 1/8-core lane (p99 381 ms). While young requests keep arriving (one started in the last [`BUSY_FOR`]), old ones run
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

/// Slices (epoch ticks that passed while the guest's code ran) after which a request is old.
pub(crate) const OLD_AFTER: u32 = 2;
/// Under contention, old requests together get one slice per this many.
pub(crate) const OLD_SHARE: u32 = 8;
/// One slice: the epoch tick (see `WasmtimeEngine::start_time_slicing`).
pub(crate) const SLICE: Duration = Duration::from_millis(5);
/// The serving threads are busy while a young request started this recently.
pub(crate) const BUSY_FOR: Duration = Duration::from_millis(20);

/// Epoch ticks so far: advanced by the ticker just before it advances the engines' epochs, read by
/// the call hook (a relaxed load: the hook runs at every host call).
static TICKS: AtomicU64 = AtomicU64::new(0);

/// One more tick (the engines' ticker, before `increment_epoch`).
pub(crate) fn tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

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

/// One request's place in the lane (kept in its store's state).
#[derive(Default)]
pub(crate) struct Pace {
    /// Ticks that passed while the guest's code ran, up to its last exit from wasm.
    ran: u64,
    /// The tick at which the guest's code was last entered, while it runs.
    entered: Option<u64>,
}

impl Pace {
    /// A new request: young.
    pub(crate) fn start() -> Pace {
        LANE.last_young.store(LANE.nanos(), Ordering::Relaxed);
        Pace::default()
    }

    /// The store's call hook: wasm code is entered (`exiting_host`) or left.
    pub(crate) fn transition(&mut self, exiting_host: bool) {
        self.transition_at(exiting_host, TICKS.load(Ordering::Relaxed));
    }

    fn transition_at(&mut self, exiting_host: bool, now: u64) {
        if exiting_host {
            self.entered = Some(now);
        } else if let Some(at) = self.entered.take() {
            self.ran = self.ran.saturating_add(now.saturating_sub(at));
        }
    }

    /// Slices the guest has run so far.
    pub(crate) fn slices(&self) -> u64 {
        self.slices_at(TICKS.load(Ordering::Relaxed))
    }

    fn slices_at(&self, now: u64) -> u64 {
        self.ran + self.entered.map_or(0, |at| now.saturating_sub(at))
    }

    /// What the guest awaits at its epoch deadline (called from host code: the hook has counted).
    pub(crate) fn next_slice(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        if self.slices() < u64::from(OLD_AFTER) { Box::pin(tokio::task::yield_now()) } else { Box::pin(LANE.old_turn()) }
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;

    /// A WASI 0.3 request's store outlives `handle`: its guest is re-entered after waiting on I/O
    /// (the client reading the body), long after it started. That waiting is not running: it must
    /// stay young however many ticks it sat out.
    #[test]
    fn a_guest_reentered_after_waiting_on_io_is_still_young() {
        let mut pace = Pace::default();
        for at in [0, 10, 20, 30] {
            pace.transition_at(true, at); // entered wasm
            pace.transition_at(false, at); // left within the same tick (a host call, a return)
        }
        pace.transition_at(true, 40); // re-entered: its deadline callback fires now
        assert_eq!(pace.slices_at(40), 0);
        assert_eq!(pace.slices_at(41), 1);
    }

    /// A spinning guest becomes old after running through two ticks, host calls or not.
    #[test]
    fn a_guest_that_runs_through_ticks_becomes_old() {
        let mut pace = Pace::default();
        pace.transition_at(true, 7);
        pace.transition_at(false, 8); // a host call after one tick of running
        pace.transition_at(true, 8);
        assert_eq!(pace.slices_at(8), 1);
        assert_eq!(pace.slices_at(9), u64::from(super::OLD_AFTER));
        pace.transition_at(false, 9);
        assert_eq!(pace.slices_at(50), 2, "time outside wasm does not count");
    }
}
