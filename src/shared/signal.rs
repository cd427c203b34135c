//! How the handles ask the worker to reset its backoff or to close.
//!
//! A channel would do, but the worker would have to poll it on every
//! wake-up, that is once per request on a quiet connection: about 200
//! instructions, 7 % of a request through the handle. Here the worker
//! registers its waker once (again only if the task's waker changes), and a
//! wake-up costs it one atomic load.
//!
//! The protocol: a sender sets its bits, then wakes the registered waker
//! under the lock, without taking it out. The worker registers under the
//! same lock before it reads the bits. Whichever takes the lock second sees
//! the other's work: the sender finds the waker and wakes the task, or the
//! worker's read comes after the sender's bits. `tests/loom.rs` checks this
//! with every interleaving loom can make.

use std::task::{Context, Waker};

use super::sync::{
    AtomicU8, Mutex,
    Ordering::{AcqRel, Acquire, Release},
};

/// Start the backoff schedule afresh.
pub(crate) const RESET_BACKOFF: u8 = 1;
/// Close for good.
pub(crate) const CLOSE: u8 = 2;

/// Requests from the handles to the worker, as bits.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pending: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Sets `bits` and wakes the worker.
    pub(crate) fn send(&self, bits: u8) {
        self.pending.fetch_or(bits, Release);
        // A poisoned lock still holds a valid waker: a panic while holding
        // it cannot leave it half-written.
        let slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waker) = &*slot {
            waker.wake_by_ref();
        }
    }

    /// Takes the bits sent since the last call (0 for none), and makes sure
    /// the next `send` wakes `cx`'s task. `registered` is the worker's copy
    /// of the waker it registered, so that it registers only when the waker
    /// changes.
    #[inline]
    pub(crate) fn take(&self, registered: &mut Option<Waker>, cx: &mut Context<'_>) -> u8 {
        if !registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.register(registered, cx);
        }
        if self.pending.load(Acquire) == 0 {
            return 0;
        }
        self.pending.swap(0, AcqRel)
    }

    #[cold]
    fn register(&self, registered: &mut Option<Waker>, cx: &mut Context<'_>) {
        let waker = cx.waker().clone();
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
        *registered = Some(waker);
    }

    /// Forgets the worker's waker: the task is ending, and the handles must
    /// not keep it alive.
    pub(crate) fn unregister(&self) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
