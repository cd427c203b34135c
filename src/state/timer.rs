//! The timer of a service: the connect deadline while an attempt runs, the
//! retry time while disconnected, the idle deadline while connected (with an
//! idle timeout; nothing otherwise). The machine has a second one for a
//! caller's wait (with a wait timeout).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{sleep_until, Instant, Sleep};

/// How much earlier than a retry time the timer is armed: just under the
/// timer's one-millisecond resolution. tokio rounds a deadline up to its
/// next millisecond and the driver's sleep rounds up again, so a timer
/// fires up to ~2 ms late; armed this much early, the attempt starts on
/// time, and on a paused clock at whole milliseconds exactly on time.
const SLACK: Duration = Duration::from_nanos(999_999);

/// A `Sleep` made on first use (inside the runtime) and reset after that.
pub(super) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    pub(super) const fn new() -> Self {
        Self { sleep: None }
    }

    /// Fires at `at`: a connect deadline, which must not fire early.
    pub(super) fn deadline(&mut self, at: Instant) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(sleep_until(at))),
        }
    }

    /// Fires at a retry time, to within the timer's resolution (see
    /// [`SLACK`]).
    pub(super) fn retry(&mut self, at: Instant) {
        self.deadline(at.checked_sub(SLACK).unwrap_or(at));
    }

    /// Nothing to fire. The `Sleep` is dropped rather than reset far into
    /// the future, which would make a paused clock jump there.
    pub(super) fn disarm(&mut self) {
        self.sleep = None;
    }

    /// When it fires, if armed.
    pub(super) fn armed_at(&self) -> Option<Instant> {
        self.sleep.as_ref().map(|sleep| sleep.deadline())
    }

    /// `Ready` once the time it was armed for has passed; `Ready` when
    /// disarmed.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}
