use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
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
/// the first. Unbounded, since a request goes there at most once.
pub(crate) type ResendRx<Req, F> = mpsc::UnboundedReceiver<Message<Req, F>>;

/// Where a response future sends a request its connection handed back.
/// Every response future holds one (shared: one reference count per
/// request), and the task is told by a signal bit, so that it reads the
/// second queue only when something is in it, not on every request.
pub(crate) struct Resender<Req, F> {
    tx: mpsc::UnboundedSender<Message<Req, F>>,
    handle: Arc<Handle>,
}

impl<Req, F> Resender<Req, F> {
    pub(crate) fn new(handle: Arc<Handle>) -> (Self, ResendRx<Req, F>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, handle }, rx)
    }

    /// Queues `message` with the task and wakes it; gives it back if the
    /// task has closed.
    pub(crate) fn send(&self, message: Message<Req, F>) -> Result<(), Message<Req, F>> {
        self.tx.send(message).map_err(|err| err.0)?;
        self.handle.signal.send(RESEND);
        Ok(())
    }
}
