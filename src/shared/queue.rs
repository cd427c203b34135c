//! The handles' side of the task's queue: tokio-util's `PollSender`, with
//! a fast path in front of it.
//!
//! `PollSender::poll_reserve` builds a fresh acquire future in its reusable
//! box on every call, a real share of a request's cost through the handle
//! (tower's `Buffer` pays it too; BENCHMARKS.md has the figures). While the
//! queue has room, which is nearly always, `Sender::try_reserve_owned` takes
//! a slot with no future at all. Only when the queue is full does a handle fall back to the
//! `PollSender`, and wait there. No handle overtakes a waiting one: the
//! channel's semaphore hands a freed slot to its waiters before
//! `try_reserve_owned` can see it.

use std::task::{ready, Context, Poll};

use tokio::sync::mpsc::{self, error::TrySendError, OwnedPermit};
use tokio_util::sync::PollSender;

/// One handle's sender: a slot is reserved by `poll_reserve` and used by
/// `send`, or given back by `abort`.
pub(crate) struct QueueTx<T> {
    /// The sender, while no fast-path slot is reserved (the permit holds it
    /// then).
    tx: Option<mpsc::Sender<T>>,
    /// A slot taken on the fast path.
    permit: Option<OwnedPermit<T>>,
    /// The slow path, made the first time the queue was full (boxed: most
    /// handles never need it).
    slow: Option<Box<PollSender<T>>>,
    /// Where a reservation on the slow path stands.
    slow_state: Slow,
}

/// A reservation on the slow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// None: the fast path is tried first.
    Unused,
    /// Under way: keep polling the `PollSender`.
    Waiting,
    /// Made: `send_item` may be called.
    Reserved,
}

/// The queue is closed: the worker is gone or closing.
#[derive(Debug)]
pub(crate) struct QueueClosed;

impl<T> QueueTx<T> {
    pub(crate) fn new(tx: mpsc::Sender<T>) -> Self {
        Self {
            tx: Some(tx),
            permit: None,
            slow: None,
            slow_state: Slow::Unused,
        }
    }

    /// Whether a slot is reserved, so that `send` will send.
    #[inline]
    pub(crate) fn is_reserved(&self) -> bool {
        self.permit.is_some() || self.slow_state == Slow::Reserved
    }
}

impl<T: Send + 'static> QueueTx<T> {
    /// Reserves a slot, as `PollSender::poll_reserve`; `Ready(Ok)` again at
    /// once while one is held.
    #[inline]
    pub(crate) fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QueueClosed>> {
        if self.is_reserved() {
            return Poll::Ready(Ok(()));
        }
        if self.slow_state == Slow::Unused {
            let Some(tx) = self.tx.take() else {
                return Poll::Ready(Err(QueueClosed));
            };
            match tx.try_reserve_owned() {
                Ok(permit) => {
                    self.permit = Some(permit);
                    return Poll::Ready(Ok(()));
                }
                Err(TrySendError::Closed(tx)) => {
                    self.tx = Some(tx);
                    return Poll::Ready(Err(QueueClosed));
                }
                Err(TrySendError::Full(tx)) => {
                    self.tx = Some(tx);
                    self.slow_state = Slow::Waiting;
                }
            }
        }
        self.poll_slow(cx)
    }

    #[cold]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QueueClosed>> {
        let slow = match (&mut self.slow, &self.tx) {
            (Some(slow), _) => slow,
            (slow @ None, Some(tx)) => slow.insert(Box::new(PollSender::new(tx.clone()))),
            (None, None) => return Poll::Ready(Err(QueueClosed)),
        };
        let reserved = ready!(slow.poll_reserve(cx));
        self.slow_state = if reserved.is_ok() {
            Slow::Reserved
        } else {
            Slow::Unused
        };
        Poll::Ready(reserved.map_err(|_| QueueClosed))
    }

    /// Sends `item` in the reserved slot. `Err` if no slot was reserved or
    /// the queue closed since; the item is dropped.
    #[inline]
    pub(crate) fn send(&mut self, item: T) -> Result<(), QueueClosed> {
        if let Some(permit) = self.permit.take() {
            self.tx = Some(permit.send(item));
            return Ok(());
        }
        match (&mut self.slow, self.slow_state) {
            (Some(slow), Slow::Reserved) => {
                self.slow_state = Slow::Unused;
                slow.send_item(item).map_err(|_| QueueClosed)
            }
            _ => Err(QueueClosed),
        }
    }

    /// Gives back a reserved slot, or stops waiting for one.
    pub(crate) fn abort(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.tx = Some(permit.release());
        } else if self.slow_state != Slow::Unused {
            self.slow_state = Slow::Unused;
            if let Some(slow) = &mut self.slow {
                slow.abort_send();
            }
        }
    }
}
