//! How the handles ask the task to reset its backoff, drop the connection or
//! close, and response futures tell it of a request to send again: bits in
//! an atomic, and futures-util's `AtomicWaker` to wake the
//! task.
//!
//! A channel would do, but the task would have to poll it on every wake-up,
//! once per request on a quiet connection; here a wake-up costs it one
//! `register` and one atomic load (docs/design.md has the figures).

use std::{
    sync::atomic::{
        AtomicU8,
        Ordering::{AcqRel, Acquire, Release},
    },
    task::Context,
};

use futures_util::task::AtomicWaker;

/// Start the backoff schedule afresh.
pub(crate) const RESET_BACKOFF: u8 = 1;
/// Drop the current connection and reconnect.
pub(crate) const MARK_DISCONNECTED: u8 = 2;
/// Close for good.
pub(crate) const CLOSE: u8 = 4;
/// A request waits in the queue of requests to send again.
pub(crate) const RESEND: u8 = 8;
/// Every handle is gone: send what is queued, then close.
pub(crate) const DRAIN: u8 = 16;

/// Requests from the handles to the task, as bits.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pending: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    /// Sets `bits` and wakes the task.
    pub(crate) fn send(&self, bits: u8) {
        self.pending.fetch_or(bits, Release);
        self.waker.wake();
    }

    /// Takes the bits sent since the last call (0 for none). Registers the
    /// task's waker first, so a `send` after the read wakes it again.
    #[inline]
    pub(crate) fn take(&self, cx: &Context<'_>) -> u8 {
        self.waker.register(cx.waker());
        if self.pending.load(Acquire) == 0 {
            return 0;
        }
        self.pending.swap(0, AcqRel)
    }

    /// Forgets the task's waker: the task is ending, and the handles must
    /// not keep it alive.
    pub(crate) fn unregister(&self) {
        drop(self.waker.take());
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        task::{Wake, Waker},
    };

    use super::*;

    struct Task;

    impl Wake for Task {
        fn wake(self: Arc<Self>) {}
    }

    /// `unregister` lets go of the task's waker: a handle that outlives
    /// the task does not keep the task's memory.
    #[test]
    fn unregister_lets_go_of_the_tasks_waker() {
        let task = Arc::new(Task);
        let waker = Waker::from(task.clone());
        let signal = Signal::default();
        assert_eq!(signal.take(&Context::from_waker(&waker)), 0);
        drop(waker);
        assert_eq!(Arc::strong_count(&task), 2, "the signal holds the waker");
        signal.unregister();
        assert_eq!(Arc::strong_count(&task), 1);
    }
}
