//! The state machine of SPEC §2–3, without the polling.
//!
//! [`Machine`] owns the state, the one timer, the backoff schedule and the
//! publisher, and every transition goes through one of its methods, which
//! update the state, the watch, the counters and the log together. Every way
//! of losing a connection goes through [`Machine::lost`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::task::AtomicWaker;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::BoxError;

use crate::{
    backoff::Delays,
    error::{Cause, ConnectionLost, GaveUp, NotReady, Unavailable},
    layer::{Classifier, Config},
    watch::{ConnectionWatch, Phase, Publisher},
};

/// How much earlier than a retry time its timer is armed: just under the
/// timer's one-millisecond resolution (see `attempt_failed`).
const TIMER_SLACK: Duration = Duration::from_nanos(999_999);

pub(crate) enum State<F, S> {
    /// No connection, no attempt: before the first demand.
    Idle,
    /// An attempt is running and waits for the make service to be ready.
    Preparing,
    /// An attempt is running: the make future, bounded by the deadline
    /// in the timer.
    Connecting {
        fut: Pin<Box<F>>,
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

pub(crate) struct Machine<F, S> {
    pub(crate) state: State<F, S>,
    pub(crate) config: Config,
    /// The one timer: the deadline while an attempt runs, the retry time
    /// while disconnected, unused while connected. Made on first use, inside
    /// the runtime.
    sleep: Option<Pin<Box<Sleep>>>,
    delays: Delays,
    proof_of_life: Duration,
    /// Attempts since the last healthy connection.
    attempt: u32,
    attempt_start: Instant,
    connected_at: Instant,
    /// Set from the first failure until a connection proves itself: while
    /// set, attempts are reported as `Disconnected` (sticky) and requests
    /// fail fast.
    outage: bool,
    /// The current outage was logged at warn level: later failures in it
    /// are logged at debug, so an outage does not flood the logs. Cleared
    /// when a proven connection is lost, which starts a new episode.
    warned: bool,
    last_error: Option<Cause>,
    /// `poll_ready` returned `Ready(Ok)` and no `call` has used it yet.
    pub(crate) ready: bool,
    detector: Option<Arc<Detector>>,
    /// Counts connections, so a late fatal error from an old one is ignored.
    generation: u64,
    publisher: Publisher,
}

/// Lets a response future report a fatal error back to the service.
pub(crate) struct Detector {
    classifier: Arc<Classifier>,
    /// The highest connection generation a fatal error was seen on.
    lost: AtomicU64,
    /// What the fatal error said, for the watch and the log.
    message: Mutex<Option<String>>,
    /// The task that last polled for readiness: a report wakes it, so an
    /// owner that polls only when woken (the shared worker) drops the dead
    /// connection at once, as it would on a `poll_ready` error.
    waker: AtomicWaker,
}

/// What a response future carries to report a fatal error.
pub(crate) struct Report {
    detector: Arc<Detector>,
    generation: u64,
}

impl Report {
    pub(crate) fn error(&self, err: &(dyn std::error::Error + Send + Sync + 'static)) {
        if (self.detector.classifier)(err) {
            if let Ok(mut message) = self.detector.message.lock() {
                *message = Some(err.to_string());
            }
            self.detector
                .lost
                .fetch_max(self.generation, Ordering::AcqRel);
            self.detector.waker.wake();
        }
    }
}

/// A response error the classifier called fatal, as text: the error itself
/// went to the caller.
#[derive(Debug)]
struct FatalResponse(String);

impl fmt::Display for FatalResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fatal response error: {}", self.0)
    }
}

impl std::error::Error for FatalResponse {}

// ===== impl Machine =====

impl<F, S> Machine<F, S> {
    pub(crate) fn new(config: Config) -> Self {
        let now = Instant::now();
        let detector = config.classifier.clone().map(|classifier| {
            Arc::new(Detector {
                classifier,
                lost: AtomicU64::new(0),
                message: Mutex::new(None),
                waker: AtomicWaker::new(),
            })
        });
        Self {
            state: State::Idle,
            sleep: None,
            delays: config.backoff.iter(),
            proof_of_life: config.backoff.proof_of_life(),
            config,
            attempt: 0,
            attempt_start: now,
            connected_at: now,
            outage: false,
            warned: false,
            last_error: None,
            ready: false,
            detector,
            generation: 0,
            publisher: Publisher::new(),
        }
    }

    pub(crate) fn watch(&self) -> ConnectionWatch {
        self.publisher.watch()
    }

    /// Arms the one timer for `at`, making it on first use.
    fn timer(&mut self, at: Instant) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(sleep_until(at))),
        }
    }

    /// Polls the timer: `Ready` once its deadline (or retry time) passed.
    pub(crate) fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }

    /// The phase this state is reported as.
    fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Preparing | State::Connecting { .. } if !self.outage => Phase::Connecting,
            State::Preparing | State::Connecting { .. } | State::Disconnected { .. } => {
                Phase::Disconnected
            }
            State::Connected { .. } => Phase::Connected,
            State::Closed { .. } => Phase::Closed,
        }
    }

    /// What `poll_ready` answers while no connection is up: in an outage in
    /// fail-fast mode, ready (so `call` can fail fast with `Unavailable`);
    /// otherwise pending, until the attempt resolves.
    pub(crate) fn pending<E>(&mut self) -> Poll<Result<(), E>> {
        if self.outage && !self.config.wait_for_ready {
            self.ready = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// The error for a call that cannot go to a connection: made without
    /// readiness, after closing, or while disconnected (fail fast).
    #[cold]
    pub(crate) fn refusal(&self, ready: bool) -> BoxError {
        match &self.state {
            _ if !ready => Box::new(NotReady::new()),
            State::Closed { error } => Box::new(error.clone()),
            _ => Box::new(self.unavailable()),
        }
    }

    /// The error for a request that cannot be sent now.
    fn unavailable(&self) -> Unavailable {
        let retry_at = match self.state {
            State::Disconnected { retry_at } => Some(retry_at),
            _ => None,
        };
        Unavailable::new(self.last_error.clone(), self.attempt, retry_at)
    }

    /// Idle or Disconnected → an attempt (Preparing).
    #[cold]
    pub(crate) fn start_attempt(&mut self, target: &dyn fmt::Debug) {
        let now = Instant::now();
        self.attempt += 1;
        self.attempt_start = now;
        let deadline = now + self.config.connect_timeout;
        self.timer(deadline);
        self.state = State::Preparing;
        tracing::debug!(?target, attempt = self.attempt, "connecting");
        let (phase, attempt) = (self.phase(), self.attempt);
        self.publisher.update(|s| {
            s.phase = phase;
            s.attempt = attempt;
            s.retry_at = None;
        });
    }

    /// The attempt's make future resolved with a connection.
    #[cold]
    pub(crate) fn connected(&mut self, svc: S, target: &dyn fmt::Debug) {
        self.connected_at = Instant::now();
        if self.generation > 0 || self.outage {
            tracing::info!(?target, attempt = self.attempt, "reconnected");
        } else {
            tracing::debug!(?target, attempt = self.attempt, "connected");
        }
        self.last_error = None;
        self.generation += 1;
        // Disarm the connect deadline: once connected, no timer fires.
        self.sleep = None;
        self.state = State::Connected { svc };
        self.publisher.update(|s| {
            s.phase = Phase::Connected;
            s.last_error = None;
            s.retry_at = None;
            s.connects += 1;
        });
    }

    /// The running attempt failed: schedule the next one, counted from the
    /// start of this one, or give up.
    #[cold]
    pub(crate) fn attempt_failed(&mut self, cause: Cause, target: &dyn fmt::Debug) {
        let gave_up = self
            .config
            .max_attempts
            .is_some_and(|max| self.attempt >= max);
        let delay = if gave_up { None } else { self.delays.next() };
        let Some(delay) = delay else {
            return self.close(GaveUp::new(self.attempt, Some(cause)), target);
        };
        let now = Instant::now();
        let retry_at = (self.attempt_start + delay).max(now);
        let retry_in = retry_at - now;
        if self.warned {
            tracing::debug!(?target, attempt = self.attempt, ?retry_in, %cause, "connect attempt failed");
        } else {
            tracing::warn!(?target, attempt = self.attempt, ?retry_in, %cause, "connect attempt failed; retrying with backoff");
            self.warned = true;
        }
        self.outage = true;
        self.last_error = Some(cause.clone());
        // tokio's timer rounds a deadline up to its next millisecond and the
        // driver's sleep rounds up again, so a timer fires up to ~2 ms late;
        // arming it just under a millisecond early puts the attempt on time
        // (on a paused clock at whole milliseconds, exactly on time).
        self.timer(retry_at.checked_sub(TIMER_SLACK).unwrap_or(retry_at));
        self.state = State::Disconnected { retry_at };
        self.publisher.update(|s| {
            s.phase = Phase::Disconnected;
            s.last_error = Some(cause);
            s.retry_at = Some(retry_at);
        });
    }

    /// The one way a connection goes away: inner `poll_ready` error, fatal
    /// response error, or `mark_disconnected`.
    ///
    /// A connection that lived at least the first retry delay proved itself:
    /// the schedule starts afresh and the first reconnect is immediate. One
    /// that died sooner counts as a failed attempt, so a peer that accepts
    /// and closes is dialled on the growing schedule, never in a loop.
    #[cold]
    pub(crate) fn lost(&mut self, source: Option<Cause>, target: &dyn fmt::Debug) {
        if !matches!(self.state, State::Connected { .. }) {
            return;
        }
        let now = Instant::now();
        let cause: Cause = Arc::new(ConnectionLost::new(source));
        let proven = now.duration_since(self.connected_at) >= self.proof_of_life;
        // Drop the connection now; the transitions below publish the phase.
        self.state = State::Idle;
        self.publisher.update(|s| s.disconnects += 1);
        if !proven {
            return self.attempt_failed(cause, target);
        }
        // Losing a connection that served well is routine (servers close
        // idle connections); only failing to get a new one is worth a warning.
        tracing::info!(?target, %cause, "connection lost; reconnecting");
        self.warned = false;
        self.delays = self.config.backoff.iter();
        self.attempt = 0;
        self.outage = false;
        self.last_error = Some(cause.clone());
        // The reconnect is due now, but starts in `poll_ready`, so that its
        // connect deadline runs from when it is driven: after a
        // `mark_disconnected` the next `poll_ready` may come much later.
        self.state = State::Disconnected { retry_at: now };
        self.publisher.update(|s| {
            s.phase = Phase::Disconnected;
            s.attempt = 0;
            s.last_error = Some(cause);
            s.retry_at = Some(now);
        });
    }

    /// Leaves the polling task's waker for a fatal error report. Called
    /// before looking for one, so a report in between is not missed.
    pub(crate) fn await_report(&self, cx: &Context<'_>) {
        if let Some(detector) = &self.detector {
            detector.waker.register(cx.waker());
        }
    }

    /// The fatal error a response future reported on the current
    /// connection, if any.
    /// Whether response errors are classified, so the steady path must
    /// look for a reported loss.
    pub(crate) fn classifies(&self) -> bool {
        self.detector.is_some()
    }

    #[inline]
    pub(crate) fn reported_lost(&self) -> Option<Cause> {
        match self.detector {
            None => None,
            Some(_) => self.reported_lost_slow(),
        }
    }

    #[cold]
    fn reported_lost_slow(&self) -> Option<Cause> {
        let detector = self.detector.as_ref()?;
        if detector.lost.load(Ordering::Acquire) < self.generation {
            return None;
        }
        let message = detector.message.lock().ok()?.take()?;
        Some(Arc::new(FatalResponse(message)))
    }

    /// What a response future needs to report a fatal error, when a
    /// classifier is set.
    pub(crate) fn report(&self) -> Option<Report> {
        let detector = self.detector.as_ref()?;
        Some(Report {
            detector: detector.clone(),
            generation: self.generation,
        })
    }

    /// Gives up: terminal.
    #[cold]
    fn close(&mut self, error: GaveUp, target: &dyn fmt::Debug) {
        tracing::error!(?target, attempts = error.attempts(), %error, "gave up reconnecting");
        let cause: Cause = Arc::new(error.clone());
        self.state = State::Closed { error };
        self.sleep = None;
        self.last_error = Some(cause.clone());
        self.publisher.update(|s| {
            s.phase = Phase::Closed;
            s.last_error = Some(cause);
            s.retry_at = None;
        });
    }

    /// The schedule starts afresh, and a pending retry is due now.
    #[cold]
    pub(crate) fn reset_backoff(&mut self) {
        self.delays = self.config.backoff.iter();
        if let State::Disconnected { retry_at } = &mut self.state {
            let now = Instant::now();
            *retry_at = now;
            self.timer(now);
            self.publisher.update(|s| s.retry_at = Some(now));
        }
    }
}

impl<F, S> fmt::Debug for Machine<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.publisher.state();
        f.debug_struct("Reconnect")
            .field("phase", &state.phase)
            .field("attempt", &state.attempt)
            .field("connects", &state.connects)
            .field("disconnects", &state.disconnects)
            .field("config", &self.config)
            .finish()
    }
}
