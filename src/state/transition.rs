//! The transitions. Each one changes the state, the timer, the watch, the
//! counters and the log together; no other code changes them.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{Activity, Machine, State};
use crate::{
    error::{Cause, ConnectionLost, GaveUp},
    watch::Phase,
};

impl<F, S> Machine<F, S> {
    /// How much later than alone the first redial of a run of the schedule
    /// comes: nothing, unless this connection is one of a pool's.
    fn spread_offset(&self) -> Duration {
        self.publisher
            .spread()
            .map_or(Duration::ZERO, |spread| spread.offset(self.proof_of_life))
    }

    /// The name logs identify this connection by.
    fn name(&self) -> Option<&str> {
        self.config.name.as_deref()
    }

    /// Idle or Disconnected → an attempt, bounded by the connect timeout.
    #[cold]
    pub(super) fn start_attempt(&mut self) {
        let now = Instant::now();
        self.dormant = false;
        self.attempt_start = now;
        self.timer.deadline(now + self.config.connect_timeout);
        self.state = State::Connecting { fut: None };
        let phase = self.phase();
        let mut attempt = 0;
        self.publisher.update(|s| {
            s.attempt += 1;
            s.phase = phase;
            s.retry_at = None;
            attempt = s.attempt;
        });
        tracing::debug!(name = self.name(), attempt, "connecting");
    }

    /// The attempt resolved with a connection.
    #[cold]
    pub(super) fn connected(&mut self, svc: S) {
        self.connected_at = Instant::now();
        let attempt = self.published().attempt;
        // After an idle close the new connection is routine, as the first.
        let routine = std::mem::take(&mut self.idle_closed);
        if (self.generation > 0 && !routine) || self.outage {
            tracing::info!(name = self.name(), attempt, "reconnected");
        } else {
            tracing::debug!(name = self.name(), attempt, "connected");
        }
        self.generation += 1;
        self.start_ageing(self.connected_at);
        if self.detector.is_some() || self.config.idle_timeout.is_some() {
            let report = self.detector.as_ref().map(|d| d.report(self.generation));
            let timed = self.config.idle_timeout.is_some();
            self.activity = Some(Activity::new(report, timed, self.connected_at));
        }
        // Once connected, no timer fires but the idle deadline, armed by
        // the `poll_slow` loop that goes on from here.
        if self.config.idle_timeout.is_none() {
            self.timer.disarm();
        }
        // Any wait for a connection is over.
        self.wait.disarm();
        self.waited = false;
        self.state = State::Connected { svc };
        self.publisher.update(|s| {
            s.phase = Phase::Connected;
            s.last_error = None;
            s.retry_at = None;
            s.connects += 1;
        });
    }

    /// The running attempt failed: schedule the next one, counted from the
    /// start of this one (gRPC's rule), or give up.
    #[cold]
    pub(super) fn attempt_failed(&mut self, cause: Cause) {
        let attempt = self.published().attempt;
        let out_of_attempts = self.config.max_attempts.is_some_and(|max| attempt >= max);
        let delay = if out_of_attempts {
            None
        } else {
            self.delays.next()
        };
        let Some(delay) = delay else {
            return self.give_up(GaveUp::new(attempt, Some(cause)));
        };
        let now = Instant::now();
        // The first failure of an outage: in a pool, spread apart from the
        // other connections, which may have failed at the same instant.
        let spread = if self.outage {
            Duration::ZERO
        } else {
            self.spread_offset()
        };
        let retry_at = (self.attempt_start + delay + spread).max(now);
        let retry_in = retry_at - now;
        if self.warned {
            tracing::debug!(name = self.name(), attempt, ?retry_in, %cause, "connect attempt failed");
        } else {
            tracing::warn!(name = self.name(), attempt, ?retry_in, %cause, "connect attempt failed; retrying with backoff");
            self.warned = true;
        }
        self.outage = true;
        self.timer.retry(retry_at);
        self.state = State::Disconnected { retry_at };
        self.publisher.update(|s| {
            s.phase = Phase::Disconnected;
            s.last_error = Some(cause);
            s.retry_at = Some(retry_at);
        });
    }

    /// The one way a connection goes away: its `poll_ready` failed, a
    /// response error was classified fatal, or the owner marked it
    /// disconnected. Does nothing when not connected.
    ///
    /// A connection that lived at least the first retry delay proved itself:
    /// the schedule starts afresh and the reconnect is due at once. One that
    /// died sooner counts as a failed attempt, so a peer that accepts and
    /// closes is dialled on the growing schedule, never in a loop. With an
    /// idle timeout, a proven connection lost while no request was in
    /// flight (a server closing it for idleness) leaves the machine dormant
    /// instead: the next request connects, and nothing dials before it.
    #[cold]
    pub(crate) fn lost(&mut self, source: Option<Cause>) {
        if !matches!(self.state, State::Connected { .. }) {
            return;
        }
        let now = Instant::now();
        let cause: Cause = Arc::new(ConnectionLost::new(source));
        let proven = now.duration_since(self.connected_at) >= self.proof_of_life;
        self.stop_ageing();
        let idle = self.activity.take().is_some_and(|activity| {
            self.config.idle_timeout.is_some() && activity.idle_since().is_some()
        });
        // Drop the connection now; what follows publishes the phase.
        self.state = State::Idle;
        self.publisher.update(|s| s.disconnects += 1);
        if !proven {
            return self.attempt_failed(cause);
        }
        self.warned = false;
        self.delays = self.config.backoff.iter();
        self.outage = false;
        if idle {
            // Redialling now would make a connection nobody asked for, which
            // the idle timeout would close again.
            tracing::info!(name = self.name(), %cause, "idle connection lost; reconnecting at the next request");
            self.dormant = true;
            self.timer.disarm();
            self.publisher.update(|s| {
                s.phase = Phase::Idle;
                s.attempt = 0;
                s.last_error = Some(cause);
                s.retry_at = None;
            });
            return;
        }
        // Losing a connection that served well is routine (servers close
        // idle connections); only failing to get a new one is worth a warning.
        tracing::info!(name = self.name(), %cause, "connection lost; reconnecting");
        // The reconnect is due now but starts in `poll_ready`, so that its
        // connect deadline runs from when it is driven: after a
        // `mark_disconnected` the next `poll_ready` may come much later. In
        // a pool, whose connections a server restart cuts at the same
        // instant, each one's is due at its own point of the spread.
        let retry_at = now + self.spread_offset();
        if retry_at > now {
            self.timer.retry(retry_at);
        }
        self.state = State::Disconnected { retry_at };
        self.publisher.update(|s| {
            s.phase = Phase::Disconnected;
            s.attempt = 0;
            s.last_error = Some(cause);
            s.retry_at = Some(retry_at);
        });
    }

    /// Connected → Idle: no request was in flight for the idle timeout.
    /// Nothing failed, so it is no disconnect and no error, and, as after a
    /// proven loss, the schedule starts afresh: the connection stayed up
    /// until we closed it.
    #[cold]
    pub(super) fn idle_close(&mut self) {
        tracing::debug!(name = self.name(), idle_timeout = ?self.config.idle_timeout, "closing idle connection");
        self.state = State::Idle;
        self.activity = None;
        self.stop_ageing();
        self.dormant = true;
        self.idle_closed = true;
        self.timer.disarm();
        self.warned = false;
        self.delays = self.config.backoff.iter();
        self.outage = false;
        self.publisher.update(|s| {
            s.phase = Phase::Idle;
            s.attempt = 0;
            s.last_error = None;
            s.retry_at = None;
            s.idle_closes += 1;
        });
    }

    /// Stops reconnecting: terminal.
    #[cold]
    fn give_up(&mut self, error: GaveUp) {
        tracing::error!(name = self.name(), attempts = error.attempts(), %error, "gave up reconnecting");
        let cause: Cause = Arc::new(error.clone());
        self.stop_ageing();
        self.state = State::Closed { error };
        self.timer.disarm();
        self.publisher.update(|s| {
            s.phase = Phase::Closed;
            s.last_error = Some(cause);
            s.retry_at = None;
        });
    }

    /// A request a connection handed back is sent again on this one:
    /// counted, and logged at debug.
    #[cold]
    pub(super) fn resending(&mut self) {
        let mut resent = 0;
        self.publisher.update(|s| {
            s.resent += 1;
            resent = s.resent;
        });
        tracing::debug!(
            name = self.name(),
            resent,
            "sending a handed-back request again"
        );
    }

    /// The schedule starts afresh, and a waiting retry is due now.
    #[cold]
    pub(crate) fn reset_backoff(&mut self) {
        self.delays = self.config.backoff.iter();
        if let State::Disconnected { retry_at } = &mut self.state {
            let now = Instant::now();
            *retry_at = now;
            self.timer.deadline(now);
            self.publisher.update(|s| s.retry_at = Some(now));
        }
    }
}
