use tokio::sync::oneshot;
use tower::BoxError;

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
