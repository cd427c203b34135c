//! The clone-able, eager form: one task owns the [`Reconnect`] and serves
//! every clone of a [`Shared`] handle.
//!
//! [`Shared`] and [`SharedLayer`] are also at the crate root;
//! [`ResponseFuture`] is the handle's response future.

mod future;
mod layer;
mod message;
mod queue;
mod signal;
mod wait;
mod worker;

pub use self::{future::ResponseFuture, layer::SharedLayer};

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tower::{BoxError, Service};

use self::{
    message::{Message, Resender},
    queue::QueueTx,
    signal::{CLOSE, DRAIN, MARK_DISCONNECTED, RESET_BACKOFF},
    wait::Wait,
    worker::{Handle, Worker},
};
use crate::{error::NotReady, ConnectionWatch, Reconnect};

/// A clone-able handle on one [`Reconnect`] owned by a background task: the
/// connection manager many callers share.
///
/// Made with [`Reconnect::spawn`] (eager), [`Reconnect::spawn_lazy`], or
/// [`ReconnectLayer::shared`](crate::ReconnectLayer::shared) inside a
/// `ServiceBuilder`. The
/// task connects as soon as it starts (or, lazily, at the first request),
/// reconnects in the background, and sends each request it is handed to the
/// connection. Every clone reaches the same connection and the same
/// [`ConnectionWatch`].
///
/// # Readiness
///
/// `poll_ready` reserves a slot in a bounded queue of `bound` requests, as
/// [`tower::buffer::Buffer`](https://docs.rs/tower/0.5/tower/buffer/struct.Buffer.html)
/// does: it is `Pending` only while the queue is full, and `Err(Closed)`
/// once the handle is closed. What a request meets in the queue follows the
/// [`Reconnect`]'s settings: while `Disconnected` it fails fast with
/// [`Unavailable`](crate::error::Unavailable), or, with
/// `wait_for_ready(true)`, waits there until the connection is back. Every
/// waiting request is served when the connection comes up, however many
/// clones queued them. With a
/// [`wait_timeout`](crate::ReconnectLayer::wait_timeout), a request that
/// has been in the queue that long fails with `Unavailable` instead, and the
/// task drops it unsent. Calling `call` without a `Ready(Ok)` from
/// `poll_ready` first returns [`NotReady`] instead
/// of panicking.
///
/// # Idle connections
///
/// With an [`idle_timeout`](crate::ReconnectLayer::idle_timeout), the task
/// closes the connection once nothing has been in flight for that long, on
/// time (its timer wakes it), and then waits for a request before it dials
/// again, as a [`spawn_lazy`](Reconnect::spawn_lazy) handle does: an idle
/// handle holds no connection and makes no attempt. A healthy connection
/// the server closes while nothing is in flight leaves it idle in the same
/// way, unless a request is queued, which reconnects it at once.
///
/// # Why not `Buffer<Reconnect>`
///
/// A `Buffer` drives its service only while it holds a request, so a
/// buffered `Reconnect` connects at the first request, learns that an idle
/// connection went away only when the next request finds it, and lets a
/// running attempt stall between requests. `Shared` drives the `Reconnect`
/// all the time, without a polling loop: it connects at once, the retry
/// timer and the connect attempt run in the background, and an idle
/// connection that closes wakes the task through the connection's
/// `poll_ready` (the connectors of `redial::http` register that wake-up;
/// a connection of your own must too for this to work), so the watch shows
/// it at once and the reconnect starts at once. It also carries
/// [`reset_backoff`](Self::reset_backoff) and [`close`](Self::close) for
/// every clone. `Buffer<Reconnect>` is enough when requests are frequent and
/// nobody needs to know about the connection between them.
///
/// Under `tower::balance`, balance over plain `Reconnect`s in wait-for-ready
/// mode, not over `Shared` handles: a handle is ready whenever its queue has
/// room, so the balancer could not skip a dead endpoint.
///
/// # Closing
///
/// [`close`](Self::close) stops the task: the connection is dropped, the
/// watch publishes `Closed` once, queued requests fail with
/// [`Closed`](crate::error::Closed), and so does every later call.
/// Dropping the last handle closes too, but only once what was queued has
/// been sent, as tower's `Buffer` does: a caller holding a response future
/// (after `handle.oneshot(request)`, say) still gets its answer. A queued
/// request whose caller gave up is skipped, so a task waiting for a
/// connection for nobody closes at its next wake-up (a retry, at the
/// latest). In wait-for-ready mode, an attempt that fails once the last
/// handle is gone closes the task, and what is left fails with `Closed`:
/// with no handle left, nothing else could ever end it.
/// A clone that reserved a queue slot (`poll_ready`) before the close gets
/// `Closed` too: the task lives on, holding nothing but the queue, until
/// every such slot is used or given back, so no request is stranded in it.
/// A panic in the make service or the connection's `poll_ready`/`call` ends
/// the task the same way: callers get `Closed`, never a hang.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use std::convert::Infallible;
/// use redial::{Phase, Reconnect};
/// use tower::{service_fn, ServiceExt};
///
/// let make = service_fn(|_: ()| async {
///     Ok::<_, Infallible>(service_fn(|n: u32| async move { Ok::<_, Infallible>(n * 10) }))
/// });
/// let shared = Reconnect::new(make, ()).spawn(64);
/// let watch = shared.watch();
/// watch.connected().await?; // connects without waiting for a request
///
/// let (a, b) = (shared.clone(), shared.clone());
/// assert_eq!(a.oneshot(1).await?, 10);
/// assert_eq!(b.oneshot(2).await?, 20);
///
/// shared.close();
/// assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
/// assert!(watch.connected().await.is_err());
/// # Ok(())
/// # }
/// ```
pub struct Shared<Req, F> {
    tx: QueueTx<Message<Req, F>>,
    closer: Arc<Closer<Req, F>>,
    watch: ConnectionWatch,
}

/// What every clone of a [`Shared`] holds: the state shared with the
/// worker, a sender to clone for a new handle, and the sender of the
/// task's queue of requests to send again, which each response future gets
/// a clone of. When the last handle goes, the worker is told to send what
/// is queued and close.
struct Closer<Req, F> {
    handle: Arc<Handle>,
    tx: mpsc::Sender<Message<Req, F>>,
    resend: Arc<Resender<Req, F>>,
    /// How long a request may wait in the queue (`wait_timeout`).
    wait_timeout: Option<Duration>,
}

impl<Req, F> Drop for Closer<Req, F> {
    /// The last handle is gone: what it queued is still sent (its callers
    /// hold response futures, as after a `oneshot`), then the task closes.
    fn drop(&mut self) {
        self.handle.signal.send(DRAIN);
    }
}

// ===== impl Reconnect =====

impl<M, T> Reconnect<M, T>
where
    M: Service<T>,
{
    /// Moves this service into a background task that connects at once,
    /// and returns a clone-able handle to it, queueing up to `bound`
    /// requests.
    ///
    /// # Panics
    ///
    /// If `bound` is 0, or when called outside a tokio runtime.
    #[track_caller]
    pub fn spawn<Req>(self, bound: usize) -> Shared<Req, <Self as Service<Req>>::Future>
    where
        Self: Service<Req, Error = BoxError> + Send + 'static,
        <Self as Service<Req>>::Future: Send + 'static,
        Req: Send + 'static,
    {
        Shared::start(self, bound, true)
    }

    /// As [`spawn`](Self::spawn), but the task connects only when the first
    /// request arrives; after that it is as eager.
    ///
    /// # Panics
    ///
    /// If `bound` is 0, or when called outside a tokio runtime.
    #[track_caller]
    pub fn spawn_lazy<Req>(self, bound: usize) -> Shared<Req, <Self as Service<Req>>::Future>
    where
        Self: Service<Req, Error = BoxError> + Send + 'static,
        <Self as Service<Req>>::Future: Send + 'static,
        Req: Send + 'static,
    {
        Shared::start(self, bound, false)
    }
}

// ===== impl Shared =====

impl<Req, F> Shared<Req, F>
where
    Req: Send + 'static,
    F: Send + 'static,
{
    #[track_caller]
    fn start<M, T>(mut service: Reconnect<M, T>, bound: usize, eager: bool) -> Self
    where
        M: Service<T>,
        Reconnect<M, T>: Service<Req, Error = BoxError, Future = F> + Send + 'static,
    {
        assert!(
            bound > 0,
            "redial: the shared queue bound must be at least 1"
        );
        let (tx, rx) = mpsc::channel(bound);
        let handle = Arc::new(Handle::default());
        let resend = Resender::new(handle.clone());
        let watch = service.watch();
        let wait_timeout = service.run_by_task();
        let worker = Worker::new(service, rx, resend.clone(), eager, handle.clone());
        tokio::spawn(worker.run());
        Self {
            tx: QueueTx::new(tx.clone()),
            closer: Arc::new(Closer {
                handle,
                tx,
                resend,
                wait_timeout,
            }),
            watch,
        }
    }

    /// Gives back a reserved slot, or stops waiting for one: a pool that
    /// polled this handle chose another.
    pub(crate) fn release(&mut self) {
        self.tx.abort();
    }
}

impl<Req, F> Shared<Req, F> {
    fn handle(&self) -> &Handle {
        &self.closer.handle
    }

    /// A watch on the shared connection's state.
    pub fn watch(&self) -> ConnectionWatch {
        self.watch.clone()
    }

    /// Starts the backoff schedule afresh and makes a waiting retry due now,
    /// for every clone (see [`Reconnect::reset_backoff`]).
    pub fn reset_backoff(&self) {
        self.handle().signal.send(RESET_BACKOFF);
    }

    /// Drops the current connection, for every clone, as
    /// [`Reconnect::mark_disconnected`] does: use it when you learn the
    /// connection is broken in a way redial cannot see. The task drops it
    /// at its next wake-up, at once; the watch shows the loss and the
    /// reconnect follows the usual rules. Requests the task already sent
    /// are not cancelled. Does nothing when not connected.
    pub fn mark_disconnected(&self) {
        self.handle().signal.send(MARK_DISCONNECTED);
    }

    /// Closes the connection for every clone: from now on `poll_ready` and
    /// queued requests fail with [`Closed`](crate::error::Closed); the task
    /// then drops the connection and the watch shows `Closed` (await
    /// [`ConnectionWatch::disconnected`] to know it is done). Responses
    /// already on their way are not cancelled.
    pub fn close(&self) {
        self.handle().set_closed(crate::error::Closed::new(None));
        self.handle().signal.send(CLOSE);
    }

    /// Whether the handle is closed: by [`close`](Self::close), by giving
    /// up, or because the task ended.
    pub fn is_closed(&self) -> bool {
        self.handle().is_closed()
    }

    /// Whether `poll_ready` reserved a slot that `call` has not used yet.
    pub(crate) fn is_reserved(&self) -> bool {
        self.tx.is_reserved()
    }

    /// The error for a request that found the handle closed.
    pub(crate) fn closed_error(&self) -> BoxError {
        self.handle().closed_error()
    }
}

impl<Req, F, T, E> Service<Req> for Shared<Req, F>
where
    Req: Send + 'static,
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<Req, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.handle().is_closed() {
            return Poll::Ready(Err(self.handle().closed_error()));
        }
        self.tx
            .poll_reserve(cx)
            .map_err(|_| self.handle().closed_error())
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if !self.tx.is_reserved() {
            return ResponseFuture::failed(Box::new(NotReady::new()));
        }
        if self.handle().is_closed() {
            // Reserved before the close: the worker may be gone, and a
            // message sent now would wait for an answer forever.
            self.tx.abort();
            return ResponseFuture::failed(self.handle().closed_error());
        }
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let (wait, claim) = match self.closer.wait_timeout {
            Some(limit) => {
                let (wait, claim) = Wait::new(limit, self.watch.clone());
                (Some(wait), Some(claim))
            }
            None => (None, None),
        };
        let message = Message {
            request,
            tx,
            span,
            claim,
        };
        match self.tx.send(message) {
            Ok(()) => ResponseFuture::new(rx, wait, self.closer.resend.clone()),
            Err(_) => ResponseFuture::failed(self.handle().closed_error()),
        }
    }
}

impl<Req, F> Clone for Shared<Req, F> {
    fn clone(&self) -> Self {
        Self {
            tx: QueueTx::new(self.closer.tx.clone()),
            closer: self.closer.clone(),
            watch: self.watch.clone(),
        }
    }
}

impl<Req, F> fmt::Debug for Shared<Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.watch.state())
            .field("closed", &self.is_closed())
            .finish()
    }
}
