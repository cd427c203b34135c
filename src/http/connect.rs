//! One connect attempt: dial, then hyper's handshake, as one named future.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, Write};
use tokio::runtime::Handle;
use tower::{BoxError, Service};

use super::{handshake::Handshake, origin::Origin};

/// Dials `target` with `connector`, then hands the I/O to hyper's
/// `builder`, on a runtime that can drive the connection.
pub(super) fn connect<B, C, H>(
    connector: &mut C,
    builder: H,
    target: Uri,
) -> ConnectFuture<H::Connection>
where
    C: Service<Uri>,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    H: Handshake<B>,
{
    let origin = Origin::new(&target);
    let dialling = connector.call(target);
    ConnectFuture::new(async move {
        let runtime = Handle::try_current().map_err(|_| NoRuntime)?;
        let io = dialling.await.map_err(Into::into)?;
        builder.connect(io, &runtime, origin).await
    })
}

// ===== ConnectFuture =====

/// The future of a connect attempt by [`Http1Connector`](super::Http1Connector)
/// or [`Http2Connector`](super::Http2Connector): dial, handshake, spawn the driving task. It resolves
/// to the connection `S`.
///
/// It boxes the work once per attempt, since hyper's handshake future has
/// no name. It is `Send`; dropping it abandons the attempt.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use redial::http::{ConnectFuture, Http1Connection, Http1Connector};
/// use tower::Service;
///
/// let mut connector = Http1Connector::<Empty<Bytes>>::new();
/// let attempt: ConnectFuture<Http1Connection<_>> = connector.call("http://127.0.0.1:3000".parse()?);
/// let connection = attempt.await?;
/// # let _ = connection;
/// # Ok(())
/// # }
/// ```
pub struct ConnectFuture<S> {
    inner: Pin<Box<dyn Future<Output = Result<S, BoxError>> + Send>>,
}

impl<S> ConnectFuture<S> {
    pub(super) fn new<F>(fut: F) -> Self
    where
        F: Future<Output = Result<S, BoxError>> + Send + 'static,
    {
        Self {
            inner: Box::pin(fut),
        }
    }
}

impl<S> Future for ConnectFuture<S> {
    type Output = Result<S, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S> fmt::Debug for ConnectFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectFuture").finish_non_exhaustive()
    }
}

// ===== NoRuntime =====

/// A connect attempt outside a tokio runtime: no task can drive the
/// connection.
#[derive(Debug)]
struct NoRuntime;

impl fmt::Display for NoRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no tokio runtime to drive the http connection")
    }
}

impl StdError for NoRuntime {}
