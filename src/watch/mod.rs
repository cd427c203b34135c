//! The connection's state as anyone can see it: [`ConnectionWatch`], the
//! [`ConnectionState`] snapshots it hands out, and the crate-private
//! [`Publisher`] that the state machine writes through.

mod aggregate;
mod publisher;
mod state;

use std::{
    fmt,
    pin::pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, OnceLock,
    },
};

use tokio::sync::{watch, Notify};

pub use self::state::{ConnectionState, Phase};
pub(crate) use self::{aggregate::Aggregate, publisher::Publisher};
use crate::error::Closed;

/// A cheap, clone-able view of a connection's state, built on
/// [`tokio::sync::watch`]. It outlives the service it watches.
///
/// Every change of [`Phase`] wakes subscribers, and so does a connection
/// replaced at its [maximum age](crate::ReconnectLayer::max_connection_age)
/// (the phase stays `Connected`, but the connection is a new one); other
/// updates within a phase (a further attempt while disconnected, a new
/// retry time, a request sent again) are stored but wake no one. Values may coalesce, since a watch keeps only the latest:
/// [`connects`](ConnectionState::connects) and
/// [`disconnects`](ConnectionState::disconnects) count every edge. A
/// subscriber keeps nothing alive and the service never waits for one.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::convert::Infallible;
/// use redial::{Phase, Reconnect};
/// use tower::{service_fn, Service, ServiceExt};
///
/// let make = service_fn(|_: ()| async {
///     Ok::<_, Infallible>(service_fn(|n: u32| async move { Ok::<_, Infallible>(n + 1) }))
/// });
/// let mut svc = Reconnect::new(make, ());
/// let watch = svc.watch();
/// assert_eq!(watch.state().phase(), Phase::Idle);
///
/// assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
/// watch.connected().await.unwrap(); // returns at once: connected
/// assert_eq!(watch.state().connects(), 1);
///
/// drop(svc);
/// assert!(watch.connected().await.is_err()); // closed, never hangs
/// # }
/// ```
#[derive(Clone)]
pub struct ConnectionWatch {
    rx: watch::Receiver<ConnectionState>,
    edges: Arc<Edges>,
}

/// What [`connected`](ConnectionWatch::connected) and
/// [`disconnected`](ConnectionWatch::disconnected) wait on instead of a
/// receiver of the whole state: the phase as an atomic, and one [`Notify`]
/// per edge they wait for. Waiting clones nothing, a woken waiter reads one
/// atomic instead of taking the state's lock (thousands of waiters queueing
/// on that lock is what made the watch's own `wait_for` slow to fan out),
/// and a phase change a waiter does not care about (`Idle` to `Connecting`)
/// wakes no one.
///
/// The phase is stored under the state's write lock, with the state, and
/// the edge notified after; a waiter enables its `Notified` before it reads
/// the phase, so a change between the two is never missed (the pattern
/// `Notify::notify_waiters` documents).
struct Edges {
    phase: AtomicU8,
    /// Notified when the phase becomes `Connected` or `Closed`.
    up_or_closed: Notify,
    /// Notified when the phase leaves `Connected`.
    down: Notify,
    /// In a pool: the pool's writer, told of every update, and this
    /// connection's place in the spread. Here rather than in the
    /// publisher, which the state machine holds inline, and boxed, so that
    /// a connection of no pool pays a pointer and a flag for it.
    pool: OnceLock<Box<aggregate::Membership>>,
}

impl Edges {
    fn new() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Idle as u8),
            up_or_closed: Notify::new(),
            down: Notify::new(),
            pool: OnceLock::new(),
        }
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Idle,
            1 => Phase::Connecting,
            2 => Phase::Connected,
            3 => Phase::Disconnected,
            _ => Phase::Closed,
        }
    }

    /// Waits until `done` holds for the phase; returns that phase.
    async fn wait(&self, notify: &Notify, done: impl Fn(Phase) -> bool) -> Phase {
        loop {
            // Checked first, so that a woken waiter (and one that finds the
            // phase already there) returns without touching the `Notify`.
            let phase = self.phase();
            if done(phase) {
                return phase;
            }
            let mut notified = pin!(notify.notified());
            // Registered before the phase is read again: a change in
            // between wakes this `Notified`.
            notified.as_mut().enable();
            let phase = self.phase();
            if done(phase) {
                return phase;
            }
            notified.await;
        }
    }
}

impl ConnectionWatch {
    /// A snapshot of the current state.
    pub fn state(&self) -> ConnectionState {
        self.rx.borrow().clone()
    }

    /// The current phase; cheaper than [`state`](Self::state).
    pub fn phase(&self) -> Phase {
        self.rx.borrow().phase
    }

    /// `true` when the connection is up.
    pub fn is_connected(&self) -> bool {
        self.phase() == Phase::Connected
    }

    /// The phase from the edges' atomic: what [`phase`](Self::phase) reads,
    /// without the state's lock, for a pool that reads every connection's
    /// phase on each request.
    #[inline]
    pub(crate) fn phase_unlocked(&self) -> Phase {
        self.edges.phase()
    }

    /// A [`watch::Receiver`] of the state, for `changed().await` loops and
    /// `tokio_stream::wrappers::WatchStream`. As with
    /// [`watch::Sender::subscribe`], the current value counts as seen: read it
    /// with `borrow()`, and `changed()` waits for the next phase change.
    pub fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        let mut rx = self.rx.clone();
        rx.borrow_and_update();
        rx
    }

    /// Waits until the connection is up: returns at once if it is up now.
    /// Returns [`Closed`] once the service is closed, instead of waiting
    /// forever. While the service is [`Idle`](Phase::Idle) (before the first
    /// request, or after an idle close) it waits for a request to connect
    /// it.
    ///
    /// Equivalent to `async fn connected(&self) -> Result<(), Closed>`.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropping the future loses nothing, and a
    /// new call sees the current state.
    pub async fn connected(&self) -> Result<(), Closed> {
        let phase = self
            .edges
            .wait(&self.edges.up_or_closed, |p| {
                matches!(p, Phase::Connected | Phase::Closed)
            })
            .await;
        if phase == Phase::Connected {
            Ok(())
        } else {
            Err(Closed::new(self.rx.borrow().last_error.clone()))
        }
    }

    /// Waits until the connection is not up (any phase but
    /// [`Connected`](Phase::Connected)) and returns that state: at once if it
    /// is not up now.
    ///
    /// Values coalesce: a loss healed before this waiter runs (a lost
    /// connection replaced within one `poll_ready`) may never be seen as a
    /// phase. To count every loss, compare
    /// [`disconnects`](ConnectionState::disconnects) between observations.
    ///
    /// Equivalent to `async fn disconnected(&self) -> ConnectionState`.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn disconnected(&self) -> ConnectionState {
        self.edges
            .wait(&self.edges.down, |p| p != Phase::Connected)
            .await;
        self.state()
    }
}

impl fmt::Debug for ConnectionWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionWatch")
            .field(&*self.rx.borrow())
            .finish()
    }
}
