use tokio::sync::{mpsc, oneshot};
use tower::BoxError;

/// A request on its way to the worker, with the channel its response
/// future waits on.
pub(crate) struct Message<Req, F> {
    pub(crate) request: Req,
    pub(crate) tx: Tx<F>,
    /// The caller's span, entered while the worker calls the service.
    pub(crate) span: tracing::Span,
}

/// The worker answers with the service's response future, or the error
/// that stopped the request from being sent.
pub(crate) type Tx<F> = oneshot::Sender<Result<F, BoxError>>;
pub(crate) type Rx<F> = oneshot::Receiver<Result<F, BoxError>>;

/// Where a response future sends a request its connection handed back:
/// the task's second queue, read before the first, unbounded since each
/// request goes there at most once.
pub(crate) type ResendTx<Req, F> = mpsc::UnboundedSender<Message<Req, F>>;
pub(crate) type ResendRx<Req, F> = mpsc::UnboundedReceiver<Message<Req, F>>;
