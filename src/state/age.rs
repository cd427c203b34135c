//! The maximum connection age: a connection that reaches it is replaced by
//! a new one, made while the old one goes on serving.
//!
//! The replacement is an attempt like any other (the make service's
//! readiness, then its future, under the connect timeout), but it runs
//! beside a live connection instead of in place of one, so it has its own
//! timer and its own retry schedule, and its failures leave the state and
//! the watch alone: the old connection is healthy, and it stays in use.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::time::Instant;
use tower::{BoxError, Service};
use tracing::instrument::Instrumented;

use super::{poll_attempt, timer::Timer, Activity, Machine, State};
use crate::{
    backoff::{jittered, Delays},
    error::{cause, Cause, ConnectTimeout},
};

/// How far each connection's age is spread either way, so that connections
/// made together are not all replaced together.
const SPREAD: f64 = 0.1;

/// One connection's ageing: made when it connects, with a maximum age.
pub(super) struct Aging<F> {
    /// When the connection is due for replacement; while a replacement
    /// runs, its connect deadline; after one failed, when to try again.
    timer: Timer,
    /// The replacement under way: its make future, or `None` while the make
    /// service is not ready yet.
    attempt: Option<Option<Pin<Box<Instrumented<F>>>>>,
    attempt_start: Instant,
    /// The retry schedule after failed replacements, from the first.
    delays: Option<Delays>,
    /// A failed replacement was logged at warn level: the next ones in a
    /// row are logged at debug.
    warned: bool,
}

impl<F> Aging<F> {
    fn new(due: Instant) -> Self {
        let mut timer = Timer::new();
        timer.deadline(due);
        Self {
            timer,
            attempt: None,
            attempt_start: due,
            delays: None,
            warned: false,
        }
    }
}

impl<F, S> Machine<F, S> {
    /// A connection was made: with a maximum age, it is due for replacement
    /// at that age, spread ±10 %.
    pub(super) fn start_ageing(&mut self, now: Instant) {
        self.aging = self
            .config
            .max_connection_age
            .map(|age| Box::new(Aging::new(now + jittered(age, SPREAD))));
    }

    /// While connected, with a maximum age: starts the replacement when the
    /// connection is due, drives it, and puts the new connection in the old
    /// one's place once it is made. The timer is left registered for the
    /// next step.
    pub(super) fn poll_age<M, T>(&mut self, cx: &mut Context<'_>, make: &mut M, target: &T)
    where
        M: Service<T, Future = F, Response = S>,
        M::Error: Into<BoxError>,
        F: Future<Output = Result<S, M::Error>>,
        T: Clone,
    {
        loop {
            let Some(aging) = self.aging.as_deref_mut() else {
                return;
            };
            let attempt = match &mut aging.attempt {
                Some(attempt) => attempt,
                None => {
                    if aging.timer.poll(cx).is_pending() {
                        return;
                    }
                    let now = Instant::now();
                    aging.attempt_start = now;
                    aging.timer.deadline(now + self.config.connect_timeout);
                    tracing::debug!(
                        name = self.config.name.as_deref(),
                        "connection reached its maximum age; connecting its replacement"
                    );
                    aging.attempt.insert(None)
                }
            };
            match poll_attempt(attempt, cx, make, target, &self.config) {
                // On to the new connection's age: its timer must be polled
                // to wake this task on time.
                Poll::Ready(Ok(svc)) => self.replaced(svc),
                Poll::Ready(Err(e)) => self.replacement_failed(cause(e)),
                Poll::Pending if aging.timer.poll(cx).is_pending() => return,
                Poll::Pending => {
                    let timeout = ConnectTimeout::new(self.config.connect_timeout);
                    self.replacement_failed(cause(timeout));
                }
            }
        }
    }

    /// The replacement is up: it takes the old connection's place, and the
    /// old one is dropped, which lets what it has in flight finish on it.
    #[cold]
    fn replaced(&mut self, svc: S) {
        let now = Instant::now();
        tracing::info!(
            name = self.config.name.as_deref(),
            "replaced the connection at its maximum age"
        );
        self.connected_at = now;
        self.generation += 1;
        if let Some(old) = &self.activity {
            let report = self.detector.as_ref().map(|d| d.report(self.generation));
            let timed = self.config.idle_timeout.is_some();
            // Idle since when the old one was, if it was: a replacement is
            // no request, and must not keep an idle connection from its
            // idle close.
            let idle_since = old.idle_since().unwrap_or(now);
            self.activity = Some(Activity::new(report, timed, idle_since));
        }
        self.state = State::Connected { svc };
        self.start_ageing(now);
        self.publisher.announce(|s| {
            s.connects += 1;
            s.replaced += 1;
        });
    }

    /// The replacement failed: the old connection stays, and the next try
    /// is due on the backoff schedule, counted from this one's start. A
    /// schedule that ends leaves the connection as it is, for good.
    #[cold]
    fn replacement_failed(&mut self, cause: Cause) {
        let Some(aging) = self.aging.as_deref_mut() else {
            return;
        };
        aging.attempt = None;
        let delay = aging
            .delays
            .get_or_insert_with(|| self.config.backoff.iter())
            .next();
        let name = self.config.name.as_deref();
        let Some(delay) = delay else {
            tracing::warn!(name, %cause, "could not replace the connection at its maximum age; keeping it");
            self.aging = None;
            return;
        };
        let retry_at = (aging.attempt_start + delay).max(Instant::now());
        if std::mem::replace(&mut aging.warned, true) {
            tracing::debug!(name, %cause, "replacing the connection failed");
        } else {
            tracing::warn!(name, %cause, retry_in = ?(retry_at - Instant::now()), "replacing the connection at its maximum age failed; keeping it and retrying with backoff");
        }
        aging.timer.retry(retry_at);
    }

    /// The connection ended (lost, closed for idleness, or the service
    /// closed): so does its ageing, and any replacement under way.
    pub(super) fn stop_ageing(&mut self) {
        self.aging = None;
    }
}
