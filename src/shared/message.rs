use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;
use tower::BoxError;

use super::{signal::RESEND, worker::Handle};

/// A request on its way to the worker, with the channel its response
/// future waits on.
pub(crate) struct Message<Req, F> {
    pub(crate) request: Req,
    pub(crate) tx: Tx<F>,
    /// The caller's span, entered while the worker calls the service.
    pub(crate) span: tracing::Span,
    /// With a wait timeout: the worker sends the request only if it takes
    /// this before the caller's wait runs out.
    pub(crate) claim: Option<super::wait::Claim>,
}

/// The worker answers with the service's response future, or the error
/// that stopped the request from being sent.
pub(crate) type Tx<F> = oneshot::Sender<Result<F, BoxError>>;
pub(crate) type Rx<F> = oneshot::Receiver<Result<F, BoxError>>;

/// The task's second queue: requests a connection handed back, read before
/// the first. Every response future holds it (shared: one reference count
/// per request), and the task is told by a signal bit, so that it reads the
/// queue only when something is in it, not on every request.
///
/// A `VecDeque` under a lock rather than a channel: a request goes there at
/// most once, so the queue is rare and short, and a `VecDeque` allocates
/// nothing until the first, where tokio's unbounded channel allocates a
/// block of 32 messages for every handle up front.
pub(crate) struct Resender<Req, F> {
    queue: Mutex<Resends<Req, F>>,
    handle: Arc<Handle>,
}

struct Resends<Req, F> {
    messages: VecDeque<Message<Req, F>>,
    /// The task has closed: nothing more is taken.
    closed: bool,
}

impl<Req, F> Resender<Req, F> {
    /// The error for a request the task can no longer answer: `Closed`,
    /// with the reason the task closed (a panic, giving up) once known.
    pub(crate) fn closed_error(&self) -> BoxError {
        self.handle.closed_error()
    }

    pub(crate) fn new(handle: Arc<Handle>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Resends {
                messages: VecDeque::new(),
                closed: false,
            }),
            handle,
        })
    }

    /// Never held across a call that could panic, so a poisoned lock still
    /// holds a consistent queue.
    fn lock(&self) -> MutexGuard<'_, Resends<Req, F>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` with the task and wakes it; gives it back if the
    /// task has closed.
    pub(crate) fn send(&self, message: Message<Req, F>) -> Result<(), Message<Req, F>> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(message);
            }
            queue.messages.push_back(message);
        }
        self.handle.signal.send(RESEND);
        Ok(())
    }

    /// The oldest request waiting to go again, if any.
    pub(crate) fn try_recv(&self) -> Option<Message<Req, F>> {
        self.lock().messages.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().messages.is_empty()
    }

    /// Takes nothing more; what is queued stays, for the task to fail.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }
}
