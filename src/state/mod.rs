//! The connection state machine: the state, the loop that drives it from
//! `poll_ready`, and the readiness each state gives.
//!
//! [`Machine`] owns the state, the one timer, the backoff schedule and the
//! publisher of the watch. Nothing outside this module touches them: the
//! service asks the machine to poll, to call, or to make one of the
//! transitions in [`transition`], each of which updates the state, the
//! watch, the counters and the log together. `docs/design.md` draws the
//! states and their transitions.

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

use self::timer::Timer;
use crate::{
    backoff::Delays,
    classify::Detector,
    error::{cause, ConnectFailed, ConnectTimeout, GaveUp, NotReady, Unavailable},
    future::ResponseFuture,
    layer::Config,
    watch::{ConnectionState, ConnectionWatch, Phase, Publisher},
};

enum State<F, S> {
    /// No connection, no attempt: before the first demand.
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
    /// The next `call` sends a request a connection handed back: counted
    /// if it reaches the connection.
    again: bool,
    detector: Option<Arc<Detector>>,
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
            config,
            attempt_start: now,
            connected_at: now,
            outage: false,
            warned: false,
            ready: false,
            again: false,
            generation: 0,
            publisher: Publisher::new(),
        }
    }

    pub(crate) fn watch(&self) -> ConnectionWatch {
        self.publisher.watch()
    }

    /// Marks the next `call` as sending a handed-back request again.
    pub(crate) fn call_again(&mut self) {
        self.again = true;
    }

    /// What the watch shows now.
    fn published(&self) -> tokio::sync::watch::Ref<'_, ConnectionState> {
        self.publisher.state()
    }

    /// The phase this state is reported as.
    fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Connecting { .. } if !self.outage => Phase::Connecting,
            State::Connecting { .. } | State::Disconnected { .. } => Phase::Disconnected,
            State::Connected { .. } => Phase::Connected,
            State::Closed { .. } => Phase::Closed,
        }
    }

    /// The readiness policy: what `poll_ready` answers in each state once
    /// the loop below has made every transition due.
    ///
    /// | state | answer |
    /// |---|---|
    /// | connected | the connection's own (polled by the caller) |
    /// | first attempt, or the reconnect after a proven loss | `Pending` |
    /// | outage (attempt running or retry waiting), fail fast | `Ready(Ok)`: `call` fails with `Unavailable` |
    /// | outage, wait for ready | `Pending` |
    /// | closed | `Err(GaveUp)` |
    fn readiness(&mut self) -> Poll<Result<(), BoxError>> {
        match &self.state {
            State::Closed { error } => Poll::Ready(Err(error.clone().into())),
            _ if self.outage && !self.config.wait_for_ready => self.ready(),
            _ => Poll::Pending,
        }
    }

    /// `poll_ready`'s `Ready(Ok)`: the next `call` may go ahead.
    #[inline]
    fn ready(&mut self) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    /// The error for a call that cannot go to a connection: made without
    /// readiness, after closing, or while disconnected (fail fast). It
    /// describes the state at the moment of the call.
    #[cold]
    fn refusal(&self, ready: bool) -> BoxError {
        match &self.state {
            _ if !ready => Box::new(NotReady::new()),
            State::Closed { error } => Box::new(error.clone()),
            State::Disconnected { retry_at } => Box::new(self.unavailable(Some(*retry_at))),
            _ => Box::new(self.unavailable(None)),
        }
    }

    fn unavailable(&self, retry_at: Option<Instant>) -> Unavailable {
        let state = self.published();
        Unavailable::new(state.last_error.clone(), state.attempt, retry_at)
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
            (true, State::Connected { svc }) => {
                let report = self.detector.as_ref().map(|d| d.report(self.generation));
                let fut = svc.call(req);
                if again {
                    self.resending();
                }
                ResponseFuture::new(fut, report)
            }
            (ready, _) => ResponseFuture::failed(self.refusal(ready)),
        }
    }

    /// The steady path, small enough to inline: when connected and no
    /// classifier needs checking, the connection's readiness (a failure
    /// goes through [`lost`](Self::lost)); otherwise `None`, and the
    /// caller goes on to [`poll_slow`](Self::poll_slow).
    #[inline]
    pub(crate) fn poll_steady<Req>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<Poll<Result<(), BoxError>>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let (State::Connected { svc }, None) = (&mut self.state, &self.detector) else {
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
    /// errors are classified: makes every transition that is due, then
    /// answers by the [readiness policy](Self::readiness).
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
                            return self.readiness()
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
                        return self.readiness();
                    }
                }
                State::Closed { .. } => return self.readiness(),
            }
        }
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
