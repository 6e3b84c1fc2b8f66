//! How the serving threads share connections.
//!
//! Every serving thread accepts from the one listening socket, so a thread stuck in a guest's time
//! slice never holds up an accept. But whichever thread wakes first takes the whole burst a client
//! opens, and a connection stays on the thread that serves it: 16 keep-alive connections opened at
//! once all landed on one of two threads in three runs of five (43–46k req/s instead of 54–57k), and
//! under hostile load that one thread also runs the spinning guests. So an accepted connection is
//! served by the thread with the fewest open connections, the accepting one when it ties; another
//! thread gets it through its inbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A connection accepted on one thread, to be served on another (with its connection-cap permit and
/// its count there).
pub(crate) type Handoff = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit, Open);

/// The open-connection counts and inboxes of all serving threads.
pub(crate) struct Spread {
    open: Vec<AtomicUsize>,
    inboxes: Vec<UnboundedSender<Handoff>>,
}

/// Where [`Seat::place`] put a connection.
pub(crate) enum Placed {
    /// Served on this thread.
    Here(Open, TcpStream, OwnedSemaphorePermit),
    /// Handed to another thread (or closed: it could not be moved).
    Away,
}

/// One serving thread's place in the [`Spread`].
pub(crate) struct Seat {
    spread: Arc<Spread>,
    me: usize,
    pub(crate) inbox: UnboundedReceiver<Handoff>,
}

impl Spread {
    /// The seats of `threads` serving threads.
    pub(crate) fn seats(threads: usize) -> Vec<Seat> {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| unbounded_channel()).unzip();
        let spread = Arc::new(Spread { open: (0..threads).map(|_| AtomicUsize::new(0)).collect(), inboxes });
        receivers.into_iter().enumerate().map(|(me, inbox)| Seat { spread: spread.clone(), me, inbox }).collect()
    }
}

impl Seat {
    /// The thread that serves the next connection: the one with the fewest open, this one on a tie;
    /// counted open there until the guard is dropped.
    pub(crate) fn pick(&self) -> Open {
        let open = &self.spread.open;
        let mut best = self.me;
        let mut fewest = open[self.me].load(Ordering::Relaxed);
        for (i, n) in open.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n < fewest {
                (best, fewest) = (i, n);
            }
        }
        self.count(best)
    }

    fn count(&self, at: usize) -> Open {
        self.spread.open[at].fetch_add(1, Ordering::Relaxed);
        Open { spread: self.spread.clone(), at }
    }

    /// Serves an accepted connection here, or hands it (with its count) to the thread [`Seat::pick`]
    /// names, and serves it here after all if that thread no longer serves.
    pub(crate) fn place(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) -> Placed {
        let open = self.pick();
        if open.at == self.me {
            return Placed::Here(open, stream, permit);
        }
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand a connection over: {e}");
                return Placed::Away;
            }
        };
        let to = open.at;
        match self.spread.inboxes[to].send((stream, peer, permit, open)) {
            Ok(()) => Placed::Away,
            Err(back) => {
                let (stream, _, permit, elsewhere) = back.0;
                drop(elsewhere);
                match TcpStream::from_std(stream) {
                    Ok(s) => Placed::Here(self.count(self.me), s, permit),
                    Err(_) => Placed::Away,
                }
            }
        }
    }
}

/// One open connection counted on a serving thread, until dropped.
pub(crate) struct Open {
    spread: Arc<Spread>,
    at: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.spread.open[self.at].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_thread_with_the_fewest_open() {
        let seats = Spread::seats(3);
        // Thread 0 accepts three in a row: they go to 0 (tie), then 1, then 2.
        let open: Vec<Open> = (0..3).map(|_| seats[0].pick()).collect();
        assert_eq!(open.iter().map(|o| o.at).collect::<Vec<_>>(), [0, 1, 2]);
        // All tie again: the accepting thread keeps it.
        let extra = seats[2].pick();
        assert_eq!(extra.at, 2);
        drop(open);
        // Thread 2 still has one open: thread 1 now accepts and keeps it, thread 2 gives one to 0.
        let kept = seats[1].pick();
        assert_eq!(kept.at, 1);
        let given = seats[2].pick();
        assert_eq!(given.at, 0);
    }
}
