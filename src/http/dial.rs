use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    marker::PhantomData,
    task::{Context, Poll},
};

use http::Uri;
use hyper::{
    body::Body,
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Handle;
use tower::{BoxError, Service};

use super::{
    connection::{CloseSignal, Conn, Http1Connection, Http2Connection},
    connector::ConnectFuture,
    origin::Origin,
    preface::Preface,
};

// ===== Dialer =====

/// What both connectors are: the connector that dials, and hyper's builder
/// `H`, which knows the rest of the attempt (see [`Handshake`]).
pub(crate) struct Dialer<H, B, C> {
    pub(crate) connector: C,
    pub(crate) builder: H,
    _body: PhantomData<fn(B)>,
}

impl<H, B, C> Dialer<H, B, C> {
    pub(crate) fn new(connector: C, builder: H) -> Self {
        Self {
            connector,
            builder,
            _body: PhantomData,
        }
    }

    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        C: Service<Uri>,
        C::Error: Into<BoxError>,
    {
        self.connector.poll_ready(cx).map_err(Into::into)
    }

    /// Dials `target`, then hands the I/O to the builder, on a runtime that
    /// can drive the connection.
    pub(crate) fn call(&mut self, target: Uri) -> ConnectFuture<H::Connection>
    where
        C: Service<Uri>,
        C::Response: Read + Write + Unpin + Send + 'static,
        C::Error: Into<BoxError>,
        C::Future: Send + 'static,
        H: Handshake<B>,
    {
        let origin = Origin::new(&target);
        let dialling = self.connector.call(target);
        let builder = self.builder.clone();
        ConnectFuture::new(async move {
            let runtime = Handle::try_current().map_err(|_| NoRuntime)?;
            let io = dialling.await.map_err(Into::into)?;
            builder.connect(io, &runtime, origin).await
        })
    }

    pub(crate) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        H: fmt::Debug,
    {
        f.debug_struct(name)
            .field("connector", &std::any::type_name::<C>())
            .field("builder", &self.builder)
            .finish()
    }
}

impl<H: Clone, B, C: Clone> Clone for Dialer<H, B, C> {
    fn clone(&self) -> Self {
        Self::new(self.connector.clone(), self.builder.clone())
    }
}

// ===== Handshake =====

/// What HTTP/1 and HTTP/2 do differently once the I/O is dialled: hyper's
/// handshake, what follows it, and the connection it gives. Implemented by
/// hyper's builders, for the body types each protocol takes.
pub(crate) trait Handshake<B>: Clone + Send + 'static {
    type Connection;

    /// Does the handshake over `io` and spawns the task that drives the
    /// connection on `runtime`.
    fn connect<I>(
        self,
        io: I,
        runtime: &Handle,
        origin: Origin,
    ) -> impl Future<Output = Result<Self::Connection, BoxError>> + Send
    where
        I: Read + Write + Unpin + Send + 'static;
}

impl<B> Handshake<B> for http1::Builder
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Connection = Http1Connection<B>;

    async fn connect<I>(
        self,
        io: I,
        runtime: &Handle,
        origin: Origin,
    ) -> Result<Http1Connection<B>, BoxError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let (sender, conn) = self.handshake::<_, B>(io).await?;
        let closed = CloseSignal::spawn(runtime, conn);
        Ok(Http1Connection {
            inner: Conn::new(sender, closed, origin),
        })
    }
}

impl<B> Handshake<B> for http2::Builder<TokioExecutor>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Connection = Http2Connection<B>;

    async fn connect<I>(
        self,
        io: I,
        runtime: &Handle,
        origin: Origin,
    ) -> Result<Http2Connection<B>, BoxError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let (io, spoke) = Preface::new(io);
        let (sender, conn) = self.handshake::<_, B>(io).await?;
        let mut closed = CloseSignal::spawn(runtime, conn);
        // The handshake returns before the server has said anything: wait
        // for its preface, so a peer that never speaks HTTP/2 fails the
        // attempt (by the connect timeout) rather than looking connected.
        if spoke.await.is_err() {
            let ended = std::future::poll_fn(|cx| closed.poll_closed(cx)).await;
            return Err(ended.into());
        }
        Ok(Http2Connection {
            inner: Conn::new(sender, closed, origin),
        })
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
