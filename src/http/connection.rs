use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use hyper::{
    body::{Body, Incoming},
    client::conn::{http1, http2},
};
use tokio::{runtime::Handle, sync::oneshot};
use tower::{BoxError, Service};

use super::origin::Origin;

// ===== Http1Connection =====

/// One HTTP/1 connection, made by [`Http1Connector`]: a
/// `Service<http::Request<B>>` answering `http::Response<Incoming>`, one
/// request at a time (`poll_ready` is `Pending` while a response is
/// outstanding).
///
/// The request URI is sent in origin-form and a missing `Host` header is
/// filled in; see the [module docs](super#request-uris).
///
/// # Closing
///
/// `poll_ready` returns `Err(`[`ConnectionClosed`]`)` once the connection has
/// closed: the server closed it (idle or after a `Connection: close`
/// response), the socket failed, or a request was cancelled mid-flight
/// (HTTP/1 cannot abandon one request and keep the connection). While the
/// connection is open, `poll_ready` leaves the caller's waker with the task
/// driving it, even when it answers `Ready(Ok)`, so a task parked on
/// readiness alone is woken within milliseconds of an idle connection going
/// away. redial's eager shared handle relies on this to notice idle
/// disconnects without polling.
///
/// Calling `call` without a `Ready(Ok)` from `poll_ready` first never
/// panics: hyper sends the request if the connection can take it, and
/// otherwise its response future fails with hyper's "connection was not
/// ready" error. Dropping the connection closes it once no response is
/// outstanding; the driving task then ends.
///
/// [`Http1Connector`]: super::Http1Connector
///
/// # Examples
///
/// Used directly, without reconnecting:
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::Request;
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::http::Http1Connector;
/// use tower::{Service, ServiceExt};
///
/// let mut connection = Http1Connector::new().oneshot("http://127.0.0.1:3000".parse()?).await?;
/// let req = Request::get("/").body(Empty::<Bytes>::new())?;
/// let res = connection.ready().await?.call(req).await?;
/// println!("{}", res.status());
/// # Ok(())
/// # }
/// ```
pub struct Http1Connection<B> {
    pub(crate) sender: http1::SendRequest<B>,
    pub(crate) closed: CloseSignal,
    pub(crate) origin: Origin,
}

impl<B> Service<Request<B>> for Http1Connection<B>
where
    B: Body + Send + 'static,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The close signal first, so our waker is left with it even when the
        // sender is ready.
        if let Poll::Ready(closed) = self.closed.poll_closed(cx) {
            return Poll::Ready(Err(closed.into()));
        }
        self.sender
            .poll_ready(cx)
            .map_err(|err| ConnectionClosed::new(Some(err)).into())
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        self.origin.http1(&mut req);
        ResponseFuture::new(self.sender.send_request(req))
    }
}

impl<B> fmt::Debug for Http1Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Connection")
            .field("target", &self.origin)
            .field("closed", &self.closed.is_closed())
            .field("ready", &self.sender.is_ready())
            .finish()
    }
}

// ===== Http2Connection =====

/// One HTTP/2 connection, made by [`Http2Connector`]: a
/// `Service<http::Request<B>>` answering `http::Response<Incoming>`, with
/// any number of requests in flight at once (each on its own stream).
///
/// A path-only request URI gets the target's scheme and authority; see the
/// [module docs](super#request-uris).
///
/// # Closing
///
/// `poll_ready` returns `Err(`[`ConnectionClosed`]`)` once the connection has
/// closed: the server closed it or sent `GOAWAY` and finished, the socket
/// failed, or a keep-alive ping went unanswered (when set up with
/// [`Http2Connector::builder`]). While the connection is open, `poll_ready`
/// leaves the caller's waker with the task driving it, even when it answers
/// `Ready(Ok)`, so a task parked on readiness alone is woken within
/// milliseconds of an idle connection going away. redial's eager shared
/// handle relies on this to notice idle disconnects without polling.
///
/// Calling `call` without a `Ready(Ok)` from `poll_ready` first is allowed
/// while the connection is open; on a closed one the response future fails
/// with hyper's error, not a panic. Dropping the connection closes it once
/// no stream is outstanding; the driving task then ends.
///
/// [`Http2Connector`]: super::Http2Connector
/// [`Http2Connector::builder`]: super::Http2Connector::builder
///
/// # Examples
///
/// Used directly, without reconnecting:
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::Request;
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::http::Http2Connector;
/// use tower::{Service, ServiceExt};
///
/// let mut connection = Http2Connector::new().oneshot("http://127.0.0.1:50051".parse()?).await?;
/// let req = Request::get("/").body(Empty::<Bytes>::new())?;
/// let res = connection.ready().await?.call(req).await?;
/// println!("{}", res.status());
/// # Ok(())
/// # }
/// ```
pub struct Http2Connection<B> {
    pub(crate) sender: http2::SendRequest<B>,
    pub(crate) closed: CloseSignal,
    pub(crate) origin: Origin,
}

impl<B> Service<Request<B>> for Http2Connection<B>
where
    B: Body + Send + 'static,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // hyper's HTTP/2 `poll_ready` registers no waker: the close signal
        // is what wakes a parked caller.
        if let Poll::Ready(closed) = self.closed.poll_closed(cx) {
            return Poll::Ready(Err(closed.into()));
        }
        self.sender
            .poll_ready(cx)
            .map_err(|err| ConnectionClosed::new(Some(err)).into())
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture {
        self.origin.http2(&mut req);
        ResponseFuture::new(self.sender.send_request(req))
    }
}

impl<B> fmt::Debug for Http2Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection")
            .field("target", &self.origin)
            .field("closed", &self.closed.is_closed())
            .finish()
    }
}

// ===== ResponseFuture =====

/// The response future of [`Http1Connection`] and [`Http2Connection`]:
/// hyper's, boxed because its type has no name. It fails with the
/// [`hyper::Error`] hyper gives, as a [`BoxError`].
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::Request;
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::http::{Http2Connector, ResponseFuture};
/// use tower::{Service, ServiceExt};
///
/// let mut connection = Http2Connector::new().oneshot("http://127.0.0.1:50051".parse()?).await?;
/// let req = Request::get("/").body(Empty::<Bytes>::new())?;
/// let pending: ResponseFuture = connection.ready().await?.call(req);
/// match pending.await {
///     Ok(res) => println!("{}", res.status()),
///     Err(err) if err.is::<hyper::Error>() => println!("hyper failed: {err}"),
///     Err(err) => return Err(err),
/// }
/// # Ok(())
/// # }
/// ```
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>,
}

impl ResponseFuture {
    fn new<F>(fut: F) -> Self
    where
        F: Future<Output = hyper::Result<Response<Incoming>>> + Send + 'static,
    {
        Self {
            inner: Box::pin(fut),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx).map_err(Into::into)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// ===== ConnectionClosed =====

/// The connection has closed: what `poll_ready` of [`Http1Connection`] and
/// [`Http2Connection`] returns from then on. Under
/// [`Reconnect`](crate::Reconnect) it becomes the source of
/// [`ConnectionLost`](crate::error::ConnectionLost).
///
/// Its [`source`](StdError::source) is hyper's error when the connection
/// failed, the first time it is reported, and `None` when it closed
/// cleanly (the server closed it) or on later reports.
///
/// # Examples
///
/// ```
/// use std::error::Error;
/// use redial::http::ConnectionClosed;
///
/// fn closed_cleanly(err: &tower::BoxError) -> bool {
///     err.downcast_ref::<ConnectionClosed>()
///         .is_some_and(|closed| closed.source().is_none())
/// }
/// # let _ = closed_cleanly;
/// ```
#[derive(Debug)]
pub struct ConnectionClosed {
    source: Option<hyper::Error>,
}

impl ConnectionClosed {
    fn new(source: Option<hyper::Error>) -> Self {
        Self { source }
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http connection closed")
    }
}

impl StdError for ConnectionClosed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|err| err as _)
    }
}

// ===== CloseSignal =====

/// The connection's side of the task that drives it: the task holds the
/// sender and drops it when the connection ends (sending hyper's error
/// first, if any), which wakes whoever polled the receiver last.
pub(crate) struct CloseSignal {
    /// `None` once the close has been seen.
    rx: Option<oneshot::Receiver<hyper::Error>>,
}

impl CloseSignal {
    pub(crate) fn spawn<F>(runtime: &Handle, conn: F) -> Self
    where
        F: Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        runtime.spawn(async move {
            match conn.await {
                Ok(()) => tracing::debug!("http connection closed"),
                Err(err) => {
                    tracing::debug!(%err, "http connection failed");
                    let _ = tx.send(err);
                }
            }
        });
        Self { rx: Some(rx) }
    }

    /// `Ready` once the connection has closed; otherwise `Pending`, with the
    /// waker left for the close.
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionClosed> {
        let Some(rx) = &mut self.rx else {
            return Poll::Ready(ConnectionClosed::new(None));
        };
        let ended = std::task::ready!(Pin::new(rx).poll(cx));
        self.rx = None;
        Poll::Ready(ConnectionClosed::new(ended.ok()))
    }

    fn is_closed(&self) -> bool {
        self.rx.is_none()
    }
}
