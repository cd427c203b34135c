//! The readiness policy: which state answers `Pending`, `Ready(Ok)` or an
//! error, the wait timeout, and the error a call meets when it cannot go to
//! a connection. One place, so every path of `poll_ready` answers alike.

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::BoxError;

use super::{Machine, State};
use crate::{
    error::{NotReady, Unavailable},
    watch::Phase,
};

impl<F, S> Machine<F, S> {
    /// The phase this state is reported as.
    pub(super) fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Connecting { .. } if !self.outage => Phase::Connecting,
            State::Connecting { .. } | State::Disconnected { .. } => Phase::Disconnected,
            State::Connected { .. } => Phase::Connected,
            State::Closed { .. } => Phase::Closed,
        }
    }

    /// The readiness policy: what `poll_ready` answers in each state once
    /// the `poll_slow` loop has made every transition due.
    ///
    /// | state | answer |
    /// |---|---|
    /// | connected | the connection's own (polled by the caller) |
    /// | first attempt, or the reconnect after a proven loss or an idle close | `Pending`; with a wait timeout, `Ready(Ok)` once the wait ran out: `call` fails with `Unavailable` |
    /// | outage (attempt running or retry waiting), fail fast | `Ready(Ok)`: `call` fails with `Unavailable` |
    /// | outage, wait for ready | as the second row |
    /// | closed | `Err(GaveUp)` |
    pub(super) fn readiness(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.waited = false;
        match &self.state {
            State::Closed { error } => {
                self.wait.disarm();
                Poll::Ready(Err(error.clone().into()))
            }
            _ if self.outage && !self.config.wait_for_ready => {
                self.wait.disarm();
                self.ready()
            }
            _ => self.poll_wait(cx),
        }
    }

    /// A caller waits for a connection: `Pending`, or, once the wait timeout
    /// has run since the wait's first `Pending`, `Ready(Ok)` for a `call`
    /// that fails with `Unavailable`.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Some(limit) = self.config.wait_timeout else {
            return Poll::Pending;
        };
        let now = Instant::now();
        let until = match self.wait.armed_at() {
            Some(until) => until,
            None => {
                self.wait.deadline(now + limit);
                now + limit
            }
        };
        // By the clock too, as the retry time is: a deadline the timer has
        // not fired yet still counts.
        if now < until && self.wait.poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.wait.disarm();
        self.waited = true;
        self.ready()
    }

    /// `poll_ready`'s `Ready(Ok)`: the next `call` may go ahead.
    #[inline]
    pub(super) fn ready(&mut self) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    /// The error for a call that cannot go to a connection: made without
    /// readiness, after closing, or while disconnected (fail fast). It
    /// describes the state at the moment of the call.
    #[cold]
    pub(super) fn refusal(&self, ready: bool) -> BoxError {
        match &self.state {
            _ if !ready => Box::new(NotReady::new()),
            State::Closed { error } => Box::new(error.clone()),
            State::Disconnected { retry_at } => Box::new(self.unavailable(Some(*retry_at))),
            _ => Box::new(self.unavailable(None)),
        }
    }

    pub(super) fn unavailable(&self, retry_at: Option<Instant>) -> Unavailable {
        let state = self.published();
        let error = Unavailable::new(state.last_error.clone(), state.attempt, retry_at);
        match self.config.wait_timeout.filter(|_| self.waited) {
            Some(waited) => error.after_waiting(waited),
            None => error,
        }
    }
}
