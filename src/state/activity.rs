//! What tells the machine that a connection is idle, with an idle timeout:
//! the requests in flight on it and when the last one ended.
//!
//! Each response future holds an [`InFlight`], a clone of the connection's
//! `Arc<Activity>`, so the `Arc`'s strong count is the count of requests in
//! flight (plus the machine's own). Taking and giving one back is the
//! reference count's atomic: no allocation and no second counter. A
//! request that ends records the time in `last_done` before it lets go of
//! the count, so a machine that sees no request in flight also sees when
//! the last one ended.

use std::sync::{
    atomic::{fence, AtomicU64, Ordering},
    Arc,
};

use tokio::time::Instant;

/// One connection's activity, shared by the machine and the response
/// futures of the requests in flight on it.
#[derive(Debug)]
pub(super) struct Activity {
    /// When the connection was made.
    since: Instant,
    /// When the last request ended, as nanoseconds after `since`; 0 until
    /// one has.
    last_done: AtomicU64,
}

impl Activity {
    pub(super) fn new(since: Instant) -> Arc<Self> {
        Arc::new(Self {
            since,
            last_done: AtomicU64::new(0),
        })
    }

    /// When the connection became idle: when it was made or when the last
    /// request ended; `None` while a request is in flight.
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

/// A request in flight: from `call` until its response future resolves or
/// is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn new(activity: &Arc<Activity>) -> Self {
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let done = u64::try_from(self.0.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Stored before the count drops (the field is dropped after this
        // body), whose release publishes it; `fetch_max`, as requests on one
        // connection may end out of order.
        self.0.last_done.fetch_max(done, Ordering::Relaxed);
    }
}
