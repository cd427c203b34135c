//! The connection state machine: the state, the loop that drives it from
//! `poll_ready`, and the readiness each state gives.
//!
//! [`Machine`] owns the state, the one timer, the backoff schedule and the
//! publisher of the watch. Nothing outside this module touches them: the
//! service asks the machine to poll, to call, or to make one of the
//! transitions in [`transition`], each of which updates the state, the
//! watch, the counters and the log together. `docs/design.md` draws the
//! states and their transitions.

mod activity;
mod age;
mod ready;
mod timer;
mod transition;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tower::{BoxError, Service};
use tracing::{instrument::Instrumented, Instrument};

pub(crate) use self::activity::InFlight;
use self::{activity::Activity, age::Aging, timer::Timer};
use crate::{
    backoff::{Delays, Spread},
    classify::Detector,
    config::Config,
    error::{cause, ConnectFailed, ConnectTimeout, GaveUp},
    future::ResponseFuture,
    watch::{Aggregate, ConnectionState, ConnectionWatch, Publisher},
};

enum State<F, S> {
    /// No connection, no attempt: before the first demand, or after an idle
    /// close until the next.
    Idle,
    /// An attempt is running, bounded by the deadline in the timer: the
    /// make future, or `None` while the make service is not ready yet. The
    /// future runs in a span named for the connection, so what a connector
    /// logs, and what the tasks it spawns log (redial's `http` connections
    /// do), says which connection it is about.
    Connecting {
        fut: Option<Pin<Box<Instrumented<F>>>>,
    },
    Connected {
        svc: S,
    },
    /// Waiting for the retry timer.
    Disconnected {
        retry_at: Instant,
    },
    Closed {
        error: GaveUp,
    },
}

/// The state machine of one [`Reconnect`](crate::Reconnect).
///
/// The attempt count, the last error and the counters live only in the
/// published [`ConnectionState`]; the machine reads them back from there.
pub(crate) struct Machine<F, S> {
    state: State<F, S>,
    config: Config,
    timer: Timer,
    delays: Delays,
    proof_of_life: Duration,
    attempt_start: Instant,
    connected_at: Instant,
    /// Set from the first failure until a connection proves itself (cleared
    /// when a proven connection is lost, not when one is made, since a
    /// connection that dies young does not end the outage): while set,
    /// attempts are reported as `Disconnected` (sticky) and requests fail
    /// fast.
    outage: bool,
    /// The current outage was logged at warn level: later failures in it
    /// are logged at debug, so an outage does not flood the logs.
    warned: bool,
    /// `poll_ready` returned `Ready(Ok)` and no `call` has used it yet.
    ready: bool,
    /// That `Ready(Ok)` ended a wait that ran out (`wait_timeout`): the
    /// `call` fails with `Unavailable`, saying so.
    waited: bool,
    /// No classifier, no idle timeout and no maximum age: a connected
    /// `poll_ready` can take the steady path.
    steady: bool,
    /// Idle because the connection was closed for idleness (or lost while
    /// idle): a request reopens it. Cleared when an attempt starts.
    dormant: bool,
    /// The last connection ended in an idle close: making the next one is
    /// routine, logged as a first connection is.
    idle_closed: bool,
    /// A task polls this machine with no request in hand (the `Shared`
    /// worker): while dormant, `poll_ready` is `Pending` instead of
    /// dialling again, until the task has a request and calls `resume`.
    parks: bool,
    /// With a classifier or an idle timeout, while connected: what the
    /// response futures on the connection share with the machine (the
    /// requests in flight, the report of a fatal error).
    activity: Option<Arc<Activity>>,
    /// A caller's wait for a connection, with a wait timeout: armed at the
    /// first `Pending` of the wait. Not the main timer, which the wait
    /// outlives (it spans attempts and retries, each with its own deadline).
    wait: Timer,
    /// The next `call` sends a request a connection handed back: counted
    /// if it reaches the connection.
    again: bool,
    detector: Option<Arc<Detector>>,
    /// With a maximum connection age, while connected: when the connection
    /// is due for replacement, and the replacement under way.
    aging: Option<Box<Aging<F>>>,
    /// Counts connections, so a late fatal error from an old one is ignored.
    generation: u64,
    publisher: Publisher,
}

// ===== impl Machine =====

impl<F, S> Machine<F, S> {
    pub(crate) fn new(config: Config) -> Self {
        let now = Instant::now();
        Self {
            state: State::Idle,
            timer: Timer::new(),
            delays: config.backoff.iter(),
            proof_of_life: config.backoff.proof_of_life(),
            detector: config.classifier.clone().map(Detector::new),
            steady: config.classifier.is_none()
                && config.idle_timeout.is_none()
                && config.max_connection_age.is_none(),
            config,
            attempt_start: now,
            connected_at: now,
            outage: false,
            warned: false,
            ready: false,
            waited: false,
            dormant: false,
            idle_closed: false,
            parks: false,
            activity: None,
            wait: Timer::new(),
            again: false,
            aging: None,
            generation: 0,
            publisher: Publisher::new(),
        }
    }

    pub(crate) fn watch(&self) -> ConnectionWatch {
        self.publisher.watch()
    }

    /// Makes this the `spread`'s connection of a pool: its updates refresh
    /// the pool's watch, and its first redials are spread apart from the
    /// others'.
    pub(crate) fn join_pool(&mut self, pool: &Arc<Aggregate>, spread: Spread) {
        pool.join(&self.publisher, spread);
    }

    /// Marks the next `call` as sending a handed-back request again.
    pub(crate) fn call_again(&mut self) {
        self.again = true;
    }

    /// What the watch shows now.
    fn published(&self) -> tokio::sync::watch::Ref<'_, ConnectionState> {
        self.publisher.state()
    }

    /// Sends `req` on the connection if the last `poll_ready` allowed it;
    /// otherwise fails with the error that describes the state now.
    #[inline]
    pub(crate) fn call<Req>(&mut self, req: Req) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
    {
        let again = std::mem::take(&mut self.again);
        match (std::mem::take(&mut self.ready), &mut self.state) {
            // Nothing to track, the steady path: a future the compiler sees
            // is bare, so its drop folds away.
            (true, State::Connected { svc }) if self.steady => {
                let fut = svc.call(req);
                if again {
                    self.resending();
                }
                ResponseFuture::new(fut, None)
            }
            (ready, _) => self.call_tracked(req, ready, again),
        }
    }

    /// A call with a classifier's report or an idle timeout's in-flight
    /// count to attach, or one that fails.
    #[inline]
    fn call_tracked<Req>(&mut self, req: Req, ready: bool, again: bool) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
    {
        match (ready, &mut self.state) {
            (true, State::Connected { svc }) => {
                let in_flight = self.activity.as_ref().map(InFlight::new);
                let fut = svc.call(req);
                if again {
                    self.resending();
                }
                ResponseFuture::new(fut, in_flight)
            }
            (ready, _) => {
                let error = self.refusal(ready);
                self.waited = false;
                ResponseFuture::failed(error)
            }
        }
    }

    /// The steady path, small enough to inline: when connected and neither
    /// a classifier nor an idle timeout needs checking, the connection's
    /// readiness (a failure goes through [`lost`](Self::lost)); otherwise
    /// `None`, and the caller goes on to [`poll_slow`](Self::poll_slow).
    #[inline]
    pub(crate) fn poll_steady<Req>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BoxError>>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let (State::Connected { svc }, true) = (&mut self.state, self.steady) else {
            return None;
        };
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => Some(self.ready()),
            Poll::Ready(Err(e)) => {
                self.lost(Some(cause(e)));
                None
            }
            Poll::Pending => Some(Poll::Pending),
        }
    }

    /// Connecting, waiting, reconnecting, and a connection whose response
    /// errors are classified or whose idleness is timed: makes every
    /// transition that is due, then answers by the
    /// [readiness policy](Self::readiness).
    ///
    /// A connection that goes dormant here (closed for idleness, or lost
    /// while idle) is dialled again in the same call, for the request that
    /// polls; unless the machine [parks](Self::parks), and the task that
    /// drives it waits for a request first.
    #[inline(never)]
    pub(crate) fn poll_slow<M, T, Req>(
        &mut self,
        cx: &mut Context<'_>,
        make: &mut M,
        target: &T,
    ) -> Poll<Result<(), BoxError>>
    where
        M: Service<T, Future = F, Response = S>,
        M::Error: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
        F: Future<Output = Result<S, M::Error>>,
        T: Clone,
    {
        if let Some(detector) = &self.detector {
            // Registered before looking, so a report in between wakes us.
            detector.register(cx);
            if let Some(fatal) = detector.take_loss(self.generation) {
                self.lost(Some(fatal));
            }
        }
        loop {
            if self.config.idle_timeout.is_some() {
                if self.parks && self.is_dormant() {
                    return Poll::Pending;
                }
                if self.idle_expired(cx) {
                    self.idle_close();
                    continue;
                }
            }
            // Ageing runs only while connected: every way out of
            // `Connected` stops it.
            if self.aging.is_some() {
                self.poll_age(cx, make, target);
            }
            match &mut self.state {
                State::Connected { svc } => match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return self.ready(),
                    Poll::Ready(Err(e)) => self.lost(Some(cause(e))),
                    Poll::Pending => return Poll::Pending,
                },
                State::Idle => self.start_attempt(),
                State::Connecting { fut } => {
                    match poll_attempt(fut, cx, make, target, &self.config) {
                        Poll::Ready(Ok(svc)) => self.connected(svc),
                        Poll::Ready(Err(e)) => self.attempt_failed(cause(e)),
                        Poll::Pending if self.timer.poll(cx).is_pending() => {
                            return self.readiness(cx)
                        }
                        Poll::Pending => {
                            let timeout = ConnectTimeout::new(self.config.connect_timeout);
                            self.attempt_failed(cause(timeout));
                        }
                    }
                }
                State::Disconnected { retry_at } => {
                    // Due by the clock, or by the timer, which fires up to
                    // a millisecond early to make up for tokio's rounding.
                    if Instant::now() >= *retry_at || self.timer.poll(cx).is_ready() {
                        self.start_attempt();
                    } else {
                        return self.readiness(cx);
                    }
                }
                State::Closed { .. } => return self.readiness(cx),
            }
        }
    }

    /// With an idle timeout, while connected: whether the connection has
    /// been idle for the timeout (by the clock, or by the timer). If not,
    /// the timer is left armed to check back, no later than the idle
    /// deadline: a request that ends does not wake the machine, so while
    /// requests are in flight the timer comes back a timeout from now, and
    /// when it has passed before the deadline it is armed again for it. It
    /// is reset only then, not on every request; but it is polled on every
    /// call, so that it wakes the task that polled last, even when it was
    /// armed for something else and never polled (a connect deadline whose
    /// attempt succeeded at once).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(limit), Some(activity)) = (self.config.idle_timeout, &self.activity) else {
            return false;
        };
        if !matches!(self.state, State::Connected { .. }) {
            return false;
        }
        let due = match activity.idle_since() {
            Some(idle_since) => {
                let idle_at = idle_since + limit;
                if Instant::now() >= idle_at {
                    return true;
                }
                idle_at
            }
            None => Instant::now() + limit,
        };
        let now = Instant::now();
        let still_good = self
            .timer
            .armed_at()
            .is_some_and(|at| at <= due && at > now);
        if !still_good {
            self.timer.deadline(due);
        }
        // Registers this task: nothing else wakes it.
        let _ = self.timer.poll(cx);
        false
    }

    /// Whether the machine sits idle after an idle close, or a loss while
    /// idle, waiting for a request to connect again.
    pub(crate) fn is_dormant(&self) -> bool {
        self.dormant && matches!(self.state, State::Idle)
    }

    /// A request has come for a dormant machine: the next `poll_ready`
    /// connects.
    pub(crate) fn resume(&mut self) {
        self.dormant = false;
    }

    /// Makes the machine [park](Self::parks) and hands over its wait
    /// timeout, for a task that drives it with no request in hand and times
    /// each request's wait itself.
    pub(crate) fn run_by_task(&mut self) -> Option<Duration> {
        self.parks = true;
        self.config.wait_timeout.take()
    }
}

/// Drives a running attempt: the make service's readiness, then its future.
/// The deadline is the caller's.
fn poll_attempt<M, T, F, S>(
    fut: &mut Option<Pin<Box<Instrumented<F>>>>,
    cx: &mut Context<'_>,
    make: &mut M,
    target: &T,
    config: &Config,
) -> Poll<Result<S, ConnectFailed>>
where
    M: Service<T, Future = F, Response = S>,
    M::Error: Into<BoxError>,
    F: Future<Output = Result<S, M::Error>>,
    T: Clone,
{
    let fut = match fut {
        Some(fut) => fut,
        None => {
            ready!(make.poll_ready(cx)).map_err(ConnectFailed::new)?;
            let span = tracing::debug_span!("redial", name = config.name.as_deref());
            fut.insert(Box::pin(make.call(target.clone()).instrument(span)))
        }
    };
    fut.as_mut().poll(cx).map_err(ConnectFailed::new)
}

impl<F, S> fmt::Debug for Machine<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.published();
        f.debug_struct("Reconnect")
            .field("phase", &state.phase)
            .field("attempt", &state.attempt)
            .field("connects", &state.connects)
            .field("disconnects", &state.disconnects)
            .field("config", &self.config)
            .finish()
    }
}
