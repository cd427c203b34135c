//! What the response futures on one connection share with the machine, when
//! it tracks them: the classifier's [`Report`] (`disconnect_on`) and, with
//! an idle timeout, the requests in flight and when the last one ended.
//!
//! Each response future holds an [`InFlight`], a clone of the connection's
//! `Arc<Activity>`, so the `Arc`'s strong count is the count of requests in
//! flight (plus the machine's own). Taking and giving one back is the
//! reference count's atomic: no allocation and no second counter. With an
//! idle timeout, a request that ends records the time in `last_done` before
//! it lets go of the count, so a machine that sees no request in flight
//! also sees when the last one ended.

use std::{
    mem::ManuallyDrop,
    sync::{
        atomic::{fence, AtomicU64, Ordering},
        Arc,
    },
};

use tokio::time::Instant;
use tower::BoxError;

use crate::classify::Report;

/// One connection's activity, shared by the machine and the response
/// futures of the requests in flight on it. Made at each connect, when the
/// service has a classifier or an idle timeout.
pub(crate) struct Activity {
    /// The classifier's report of a fatal error on this connection.
    report: Option<Report>,
    /// An idle timeout: requests record when they end.
    timed: bool,
    /// When the connection was made.
    since: Instant,
    /// When the last request ended, as nanoseconds after `since`; 0 until
    /// one has.
    last_done: AtomicU64,
}

impl Activity {
    pub(super) fn new(report: Option<Report>, timed: bool, since: Instant) -> Arc<Self> {
        Arc::new(Self {
            report,
            timed,
            since,
            last_done: AtomicU64::new(0),
        })
    }

    /// When the connection became idle: when it was made or when the last
    /// request ended; `None` while a request is in flight. Only with an
    /// idle timeout do requests record when they end.
    pub(super) fn idle_since(self: &Arc<Self>) -> Option<Instant> {
        if Arc::strong_count(self) > 1 {
            return None;
        }
        // Pairs with the release of the last `InFlight`'s count, so the
        // time it stored before letting go is seen.
        fence(Ordering::Acquire);
        let nanos = self.last_done.load(Ordering::Relaxed);
        Some(self.since + std::time::Duration::from_nanos(nanos))
    }
}

/// A request in flight on a tracked connection: from `call` until its
/// response future resolves or is dropped.
///
/// Dropping one is a single call, out of line, and the `Arc` inside has no
/// drop glue of its own (a `ManuallyDrop`, given back inside `drop`): a
/// response future with none, on the steady path, keeps drop glue small
/// enough for the compiler to inline and fold away.
pub(crate) struct InFlight(Option<ManuallyDrop<Arc<Activity>>>);

impl InFlight {
    pub(super) fn new(activity: &Arc<Activity>) -> Self {
        Self(Some(ManuallyDrop::new(Arc::clone(activity))))
    }

    /// The response is here: a fatal error is reported, and the request is
    /// no longer in flight, even if its future is kept.
    #[inline(never)]
    pub(crate) fn done(in_flight: &mut Option<Self>, error: Option<&BoxError>) {
        let Some(mut this) = in_flight.take() else {
            return;
        };
        let activity = this.0.take().map(ManuallyDrop::into_inner);
        // Emptied: nothing left for its `drop` to do.
        std::mem::forget(this);
        let Some(activity) = activity else {
            return;
        };
        if let (Some(report), Some(error)) = (&activity.report, error) {
            report.error(&**error);
        }
        activity.ended();
    }
}

impl Activity {
    /// A request on this connection ended. Called before the request's
    /// count drops, whose release publishes the time.
    fn ended(&self) {
        if self.timed {
            let done = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            // `fetch_max`, as requests on one connection may end out of
            // order.
            self.last_done.fetch_max(done, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    #[inline(never)]
    fn drop(&mut self) {
        if let Some(activity) = self.0.take().map(ManuallyDrop::into_inner) {
            activity.ended();
        }
    }
}
