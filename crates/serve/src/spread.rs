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

/// A connection accepted on one thread, to be served on another (with its connection-cap permit).
pub(crate) type Handoff = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

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
    /// The thread that serves the next connection: the one with the fewest open, this one on a tie.
    /// Counts it as open there; [`Seat::closed`] (on the serving thread) undoes that.
    pub(crate) fn pick(&self) -> usize {
        let open = &self.spread.open;
        let mut best = self.me;
        let mut fewest = open[self.me].load(Ordering::Relaxed);
        for (i, n) in open.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n < fewest {
                (best, fewest) = (i, n);
            }
        }
        open[best].fetch_add(1, Ordering::Relaxed);
        best
    }

    /// Serves an accepted connection here, or hands it to the thread [`Seat::pick`] names (and serves
    /// it here after all if that thread no longer serves).
    pub(crate) fn place(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) -> Placed {
        let to = self.pick();
        if to == self.me {
            return Placed::Here(self.opened(), stream, permit);
        }
        let moved = Open { spread: self.spread.clone(), at: to };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand a connection over: {e}");
                return Placed::Away;
            }
        };
        match self.spread.inboxes[to].send((stream, peer, permit)) {
            Ok(()) => {
                std::mem::forget(moved); // now counted by the thread it went to
                Placed::Away
            }
            Err(back) => {
                drop(moved);
                let (stream, _, permit) = back.0;
                self.spread.open[self.me].fetch_add(1, Ordering::Relaxed);
                match TcpStream::from_std(stream) {
                    Ok(s) => Placed::Here(self.opened(), s, permit),
                    Err(_) => Placed::Away,
                }
            }
        }
    }

    /// A guard that counts one connection open on this thread until dropped.
    pub(crate) fn opened(&self) -> Open {
        Open { spread: self.spread.clone(), at: self.me }
    }
}

/// One open connection of a serving thread (already counted by [`Seat::pick`]).
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
        assert_eq!([seats[0].pick(), seats[0].pick(), seats[0].pick()], [0, 1, 2]);
        let open: Vec<_> = (0..3).map(|i| seats[i].opened()).collect();
        // All tie again: the accepting thread keeps it.
        assert_eq!(seats[2].pick(), 2);
        let _extra = seats[2].opened();
        drop(open);
        // Thread 2 still has one open: thread 1 now accepts and keeps it, thread 2 gives one to 0.
        assert_eq!(seats[1].pick(), 1);
        assert_eq!(seats[2].pick(), 0);
    }
}
