use std::{
    error::Error,
    fmt,
    pin::pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
};

use tokio::{
    sync::{watch, Notify},
    time::Instant,
};

use crate::error::{Cause, Closed};

/// Where a connection stands. See [`ConnectionState::phase`].
///
/// The phases follow gRPC's connectivity states: `Idle`, `Connecting`,
/// `Connected` (gRPC's READY), `Disconnected` (TRANSIENT_FAILURE, and just
/// as sticky) and `Closed` (SHUTDOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// No connection and no attempt yet: nothing has asked for one.
    Idle = 0,
    /// The first attempt is running (or the first one after a healthy
    /// connection was lost). Requests wait for it.
    Connecting,
    /// Connected; requests go to the connection.
    Connected = 2,
    /// The last attempt failed or the connection was lost. Sticky: reported
    /// until the service is `Connected` again, while further attempts run
    /// and [`attempt`](ConnectionState::attempt) rises. Requests fail fast
    /// with [`Unavailable`](crate::error::Unavailable), or wait in
    /// wait-for-ready mode.
    Disconnected = 3,
    /// Terminal: the service was dropped or gave up. Nothing leaves it.
    Closed = 4,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Idle => "idle",
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
            Phase::Closed => "closed",
        })
    }
}

/// One snapshot of a connection: phase, attempt, last error, next retry
/// time and counters. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionState {
    pub(crate) phase: Phase,
    pub(crate) attempt: u32,
    pub(crate) last_error: Option<Cause>,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) connects: u64,
    pub(crate) disconnects: u64,
}

impl ConnectionState {
    const fn idle() -> Self {
        Self {
            phase: Phase::Idle,
            attempt: 0,
            last_error: None,
            retry_at: None,
            connects: 0,
            disconnects: 0,
        }
    }

    /// The phase the connection is in.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// `true` when the phase is [`Phase::Connected`].
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// The number of the current (or last) connect attempt, counting from 1
    /// since the last healthy connection; 0 before the first.
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Why the service is not connected: the failure of the last attempt, or
    /// what took the connection away. `None` while connected and before the
    /// first failure.
    pub fn last_error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.last_error.as_deref()
    }

    /// When the next connect attempt is due, while
    /// [`Disconnected`](Phase::Disconnected) and waiting; `None` while an
    /// attempt runs, while connected, and once closed.
    ///
    /// The attempt starts at this time to within tokio's timer resolution
    /// (a millisecond): its timer is armed just under a millisecond early,
    /// since tokio's timer otherwise fires up to ~2 ms late, so an attempt
    /// may start up to 1 ms before `retry_at`. A lazy
    /// [`Reconnect`](crate::Reconnect) starts it on its first `poll_ready`
    /// from then on.
    pub const fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How many times a connection was established.
    pub const fn connects(&self) -> u64 {
        self.connects
    }

    /// How many times an established connection went away (lost, marked
    /// disconnected, or dropped when the service closed).
    pub const fn disconnects(&self) -> u64 {
        self.disconnects
    }
}

impl fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionState")
            .field("phase", &self.phase)
            .field("attempt", &self.attempt)
            .field(
                "last_error",
                &self.last_error.as_ref().map(|e| e.to_string()),
            )
            .field("retry_at", &self.retry_at)
            .field("connects", &self.connects)
            .field("disconnects", &self.disconnects)
            .finish()
    }
}

/// A cheap, clone-able view of a connection's state, built on
/// [`tokio::sync::watch`]. It outlives the service it watches.
///
/// Every change of [`Phase`] wakes subscribers; updates within a phase (a
/// further attempt while disconnected, a new retry time) are stored but wake
/// no one. Values may coalesce, since a watch keeps only the latest:
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
/// atomic instead of taking the state's lock (10,000 waiters on one lock
/// is what made the watch's own `wait_for` slow to fan out), and a phase
/// change a waiter does not care about (`Idle` to `Connecting`) wakes no
/// one.
///
/// The phase is stored under the state's write lock, with the state, and
/// the edge notified after; a waiter enables its `Notified` before it reads
/// the phase, so a change between the two is never missed (the pattern
/// `Notify::notify_waiters` documents).
#[derive(Debug)]
struct Edges {
    phase: AtomicU8,
    /// Notified when the phase becomes `Connected` or `Closed`.
    up_or_closed: Notify,
    /// Notified when the phase leaves `Connected`.
    down: Notify,
}

impl Edges {
    fn new() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Idle as u8),
            up_or_closed: Notify::new(),
            down: Notify::new(),
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
    /// forever.
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

/// The one writer of a connection's state.
pub(crate) struct Publisher {
    tx: watch::Sender<ConnectionState>,
    edges: Arc<Edges>,
}

impl Publisher {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::Sender::new(ConnectionState::idle()),
            edges: Arc::new(Edges::new()),
        }
    }

    pub(crate) fn watch(&self) -> ConnectionWatch {
        ConnectionWatch {
            rx: self.tx.subscribe(),
            edges: self.edges.clone(),
        }
    }

    /// Applies `update`, waking subscribers only when the phase changed.
    pub(crate) fn update(&self, update: impl FnOnce(&mut ConnectionState)) {
        let mut before = None;
        self.tx.send_if_modified(|state| {
            let was = state.phase;
            update(state);
            if state.phase == was {
                return false;
            }
            self.edges.phase.store(state.phase as u8, Ordering::Release);
            before = Some(was);
            true
        });
        if let Some(before) = before {
            self.notify(before);
        }
    }

    /// Wakes the waiters of the edge from `before` to the phase now.
    fn notify(&self, before: Phase) {
        let now = self.edges.phase();
        if matches!(now, Phase::Connected | Phase::Closed) {
            self.edges.up_or_closed.notify_waiters();
        }
        if before == Phase::Connected {
            self.edges.down.notify_waiters();
        }
    }

    pub(crate) fn state(&self) -> watch::Ref<'_, ConnectionState> {
        self.tx.borrow()
    }
}

impl Drop for Publisher {
    /// Publishes `Closed` exactly once, before the sender goes away.
    fn drop(&mut self) {
        let mut before = None;
        self.tx.send_if_modified(|state| {
            if state.phase == Phase::Closed {
                return false;
            }
            if state.phase == Phase::Connected {
                state.disconnects += 1;
            }
            before = Some(state.phase);
            state.phase = Phase::Closed;
            state.retry_at = None;
            self.edges
                .phase
                .store(Phase::Closed as u8, Ordering::Release);
            true
        });
        if let Some(before) = before {
            self.notify(before);
        }
    }
}
