//! hyper HTTP/1 and HTTP/2 connectors: make services from a [`Uri`] to a
//! connection, for [`Reconnect`](crate::Reconnect).
//!
//! [`Http1Connector`] and [`Http2Connector`] dial TCP through hyper-util's
//! [`HttpConnector`] (or any connector of yours, see
//! [`with_connector`](Http1Connector::with_connector)), do the hyper
//! handshake, spawn the task that drives the connection, and hand back an
//! [`Http1Connection`] or [`Http2Connection`]: a
//! `tower::Service<http::Request<B>>` whose `poll_ready` fails once the
//! connection has closed. Under [`Reconnect`](crate::Reconnect) that failure
//! is the signal to reconnect.
//!
//! This module is behind the `http` feature.
//!
//! # Example
//!
//! A reconnecting hyper client:
//!
//! ```
//! # use std::convert::Infallible;
//! # use http_body_util::Full;
//! # use hyper_util::rt::TokioIo;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # tokio::spawn(async move {
//! #     while let Ok((tcp, _)) = listener.accept().await {
//! #         let hello = hyper::service::service_fn(|_req| async {
//! #             Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("hello"))))
//! #         });
//! #         let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), hello);
//! #         tokio::spawn(conn);
//! #     }
//! # });
//! use http::{Request, Uri};
//! use http_body_util::{BodyExt, Empty};
//! use hyper::body::Bytes;
//! use redial::{http::Http1Connector, ReconnectLayer};
//! use tower::{Layer, ServiceExt};
//!
//! let uri: Uri = format!("http://{addr}").parse()?;
//! let client = ReconnectLayer::new(uri).layer(Http1Connector::new());
//!
//! let req = Request::get("/hello").body(Empty::<Bytes>::new())?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "hello");
//! # Ok(())
//! # }
//! ```
//!
//! To share one connection between tasks, put the `Reconnect` under
//! [`tower::buffer::Buffer`](https://docs.rs/tower/0.5/tower/buffer/struct.Buffer.html)
//! (`ServiceBuilder::new().buffer(1024).layer(ReconnectLayer::new(uri))`),
//! then call `ready().await?.call(req)` on a clone in each task.
//!
//! # Closing
//!
//! A connection's `poll_ready` returns `Err(`[`ConnectionClosed`]`)` once the
//! task driving it has finished: the server closed it, the socket failed, or
//! the protocol failed. While the connection is open, `poll_ready` also
//! leaves the caller's waker with that task, so a task that only polls
//! readiness is woken as soon as an idle connection goes away, with no
//! request and no timer. hyper's `SendRequest::poll_ready` alone does not do
//! this (it reports a close, but does not wake anyone for it); redial's
//! eager shared handle relies on it to notice idle disconnects and reconnect
//! in the background.
//!
//! # Request URIs
//!
//! Each connection knows the [`Uri`] it was dialled with (its *target*) and
//! fills in what a request leaves out, so the same request works with
//! hyper-util's legacy `Client` and here:
//!
//! - **HTTP/1** ([`Http1Connection`]) sends the request target in origin-form
//!   (`/path?query`), as hyper-util's `Client` does when no proxy is used: an
//!   absolute URI (`http://host/path`) is cut down to its path and query, a
//!   `CONNECT` request's to its authority. A request without a `Host` header
//!   gets one from its own URI's authority, or else from the target's.
//!   Requests for a forward proxy, which need absolute-form, are therefore
//!   not supported.
//! - **HTTP/2** ([`Http2Connection`]) needs a scheme and an authority on
//!   every request (the `:scheme` and `:authority` pseudo-headers): a request
//!   with only a path (`/path`, as tonic's generated clients send) gets the
//!   target's scheme and authority, as tonic's `Channel` does; an absolute
//!   URI is sent as it is. `CONNECT` requests are sent as they are.
//!
//! The request's own URI never chooses where it goes: that is the target's
//! job.
//!
//! # Errors
//!
//! Every error is a [`tower::BoxError`]. A connect attempt fails with the
//! connector's error (hyper-util's `ConnectError`, for instance `invalid URL,
//! scheme is not http` for a target like `127.0.0.1:3000` without
//! `http://`, or `tcp connect error` with the `io::Error` as its source) or
//! the handshake's [`hyper::Error`]; `Reconnect` wraps either in
//! [`ConnectFailed`](crate::error::ConnectFailed). `poll_ready` fails with
//! [`ConnectionClosed`]; a response future with the [`hyper::Error`] hyper
//! gave. Nothing here panics on a bad target or request.
//!
//! # Costs
//!
//! One allocation per connect attempt (the boxed [`ConnectFuture`]) and one
//! per request ([`ResponseFuture`] boxes hyper's response future, whose type
//! has no name), plus hyper's own; one tokio task per live connection.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};

use http::{
    header::HOST,
    uri::{Authority, Parts, PathAndQuery, Scheme},
    HeaderValue, Method, Request, Response, Uri,
};
use hyper::{
    body::{Body, Incoming},
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioExecutor};
use tokio::{runtime::Handle, sync::oneshot};
use tower::{BoxError, Service};

// ===== Http1Connector =====

/// Makes HTTP/1 connections: a `Service<Uri>` whose response is an
/// [`Http1Connection`]. Give it to [`ReconnectLayer`](crate::ReconnectLayer)
/// or [`Reconnect::new`](crate::Reconnect::new) with the server's `Uri`.
///
/// Each call dials the `Uri` through the connector `C`, does the HTTP/1
/// handshake with the [`http1::Builder`], spawns the task that drives the
/// connection on the current tokio runtime, and resolves to the connection.
/// `B` is the request body type.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::Uri;
/// use http_body_util::Full;
/// use hyper::body::Bytes;
/// use redial::{http::Http1Connector, Backoff, ReconnectLayer};
/// use tower::ServiceBuilder;
///
/// let uri: Uri = "http://127.0.0.1:3000".parse().unwrap();
/// let client = ServiceBuilder::new()
///     .layer(ReconnectLayer::new(uri).backoff(Backoff::constant(Duration::from_secs(1))))
///     .service(Http1Connector::<Full<Bytes>>::new());
/// # let _ = client;
/// ```
pub struct Http1Connector<B, C = HttpConnector> {
    connector: C,
    builder: http1::Builder,
    _body: PhantomData<fn(B)>,
}

impl<B> Http1Connector<B> {
    /// A connector that dials with hyper-util's [`HttpConnector`]
    /// (`http://` targets only), with `TCP_NODELAY` set, since requests and
    /// responses are small messages that should not wait for more.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use redial::http::Http1Connector;
    ///
    /// let connector = Http1Connector::<Empty<Bytes>>::new();
    /// # let _ = connector;
    /// ```
    pub fn new() -> Self {
        Self::with_connector(default_connector())
    }
}

impl<B, C> Http1Connector<B, C> {
    /// A connector that dials with `connector`: hyper-util's
    /// [`HttpConnector`] set up your way, or any `tower::Service<Uri>` whose
    /// response is a hyper I/O type (`hyper::rt::Read + Write + Unpin +
    /// Send`), such as a TLS connector.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use hyper_util::client::legacy::connect::HttpConnector;
    /// use redial::http::Http1Connector;
    ///
    /// let mut tcp = HttpConnector::new();
    /// tcp.set_keepalive(Some(Duration::from_secs(30)));
    /// let connector = Http1Connector::<Empty<Bytes>, _>::with_connector(tcp);
    /// # let _ = connector;
    /// ```
    pub fn with_connector(connector: C) -> Self {
        Self {
            connector,
            builder: http1::Builder::new(),
            _body: PhantomData,
        }
    }

    /// Sets the hyper settings each handshake uses.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::{body::Bytes, client::conn::http1};
    /// use redial::http::Http1Connector;
    ///
    /// let mut settings = http1::Builder::new();
    /// settings.title_case_headers(true);
    /// let connector = Http1Connector::<Empty<Bytes>>::new().builder(settings);
    /// # let _ = connector;
    /// ```
    ///
    /// Default is `http1::Builder::new()`.
    pub fn builder(mut self, builder: http1::Builder) -> Self {
        self.builder = builder;
        self
    }

    /// The connector that dials.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use hyper_util::client::legacy::connect::HttpConnector;
    /// use redial::http::Http1Connector;
    ///
    /// let connector = Http1Connector::<Empty<Bytes>>::new();
    /// let _tcp: &HttpConnector = connector.get_ref();
    /// ```
    pub fn get_ref(&self) -> &C {
        &self.connector
    }

    /// The connector that dials, mutably: to change its settings in place.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use redial::http::Http1Connector;
    ///
    /// let mut connector = Http1Connector::<Empty<Bytes>>::new();
    /// connector.get_mut().set_connect_timeout(Some(Duration::from_secs(2)));
    /// ```
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.connector
    }
}

impl<B, C> Service<Uri> for Http1Connector<B, C>
where
    C: Service<Uri>,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Http1Connection<B>;
    type Error = BoxError;
    type Future = ConnectFuture<Http1Connection<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.connector.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let origin = Origin::new(&target);
        let dialling = self.connector.call(target);
        let builder = self.builder.clone();
        ConnectFuture::new(async move {
            let runtime = Handle::try_current().map_err(|_| NoRuntime)?;
            let io = dialling.await.map_err(Into::into)?;
            let (sender, conn) = builder.handshake::<_, B>(io).await?;
            let closed = CloseSignal::spawn(&runtime, conn);
            Ok(Http1Connection {
                sender,
                closed,
                origin,
            })
        })
    }
}

impl<B, C: Clone> Clone for Http1Connector<B, C> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            builder: self.builder.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> Default for Http1Connector<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, C> fmt::Debug for Http1Connector<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Connector")
            .field("connector", &std::any::type_name::<C>())
            .field("builder", &self.builder)
            .finish()
    }
}

// ===== Http2Connector =====

/// Makes HTTP/2 connections (prior knowledge, or whatever the connector
/// negotiates): a `Service<Uri>` whose response is an [`Http2Connection`].
/// Give it to [`ReconnectLayer`](crate::ReconnectLayer) or
/// [`Reconnect::new`](crate::Reconnect::new) with the server's `Uri`.
///
/// Each call dials the `Uri` through the connector `C`, does the HTTP/2
/// handshake with the [`http2::Builder`] (streams run on
/// [`TokioExecutor`]), spawns the task that drives the connection on the
/// current tokio runtime, and resolves to the connection. `B` is the request
/// body type. This is the form for gRPC: a tonic generated client runs over
/// it, since a path-only request gets the target's scheme and authority (see
/// the [module docs](self#request-uris)).
///
/// # Examples
///
/// ```
/// use http::Uri;
/// use http_body_util::Full;
/// use hyper::body::Bytes;
/// use redial::{http::Http2Connector, ReconnectLayer};
/// use tower::Layer;
///
/// let uri: Uri = "http://127.0.0.1:50051".parse().unwrap();
/// let client = ReconnectLayer::new(uri)
///     .wait_for_ready(true)
///     .layer(Http2Connector::<Full<Bytes>>::new());
/// # let _ = client;
/// ```
pub struct Http2Connector<B, C = HttpConnector> {
    connector: C,
    builder: http2::Builder<TokioExecutor>,
    _body: PhantomData<fn(B)>,
}

impl<B> Http2Connector<B> {
    /// A connector that dials with hyper-util's [`HttpConnector`]
    /// (`http://` targets only, HTTP/2 by prior knowledge), with
    /// `TCP_NODELAY` set, as tonic does.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use redial::http::Http2Connector;
    ///
    /// let connector = Http2Connector::<Empty<Bytes>>::new();
    /// # let _ = connector;
    /// ```
    pub fn new() -> Self {
        Self::with_connector(default_connector())
    }
}

impl<B, C> Http2Connector<B, C> {
    /// A connector that dials with `connector`: hyper-util's
    /// [`HttpConnector`] set up your way, or any `tower::Service<Uri>` whose
    /// response is a hyper I/O type (`hyper::rt::Read + Write + Unpin +
    /// Send`), such as a TLS connector that negotiates `h2`.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use hyper_util::client::legacy::connect::HttpConnector;
    /// use redial::http::Http2Connector;
    ///
    /// let mut tcp = HttpConnector::new();
    /// tcp.set_nodelay(true);
    /// let connector = Http2Connector::<Empty<Bytes>, _>::with_connector(tcp);
    /// # let _ = connector;
    /// ```
    pub fn with_connector(connector: C) -> Self {
        Self {
            connector,
            builder: http2::Builder::new(TokioExecutor::new()),
            _body: PhantomData,
        }
    }

    /// Sets the hyper settings each handshake uses, such as HTTP/2
    /// keep-alive pings, which also catch a peer that vanished without
    /// closing the socket.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::Empty;
    /// use hyper::{body::Bytes, client::conn::http2};
    /// use hyper_util::rt::{TokioExecutor, TokioTimer};
    /// use redial::http::Http2Connector;
    ///
    /// let mut settings = http2::Builder::new(TokioExecutor::new());
    /// settings
    ///     .timer(TokioTimer::new())
    ///     .keep_alive_interval(Duration::from_secs(20))
    ///     .keep_alive_timeout(Duration::from_secs(10));
    /// let connector = Http2Connector::<Empty<Bytes>>::new().builder(settings);
    /// # let _ = connector;
    /// ```
    ///
    /// Default is `http2::Builder::new(TokioExecutor::new())`.
    pub fn builder(mut self, builder: http2::Builder<TokioExecutor>) -> Self {
        self.builder = builder;
        self
    }

    /// The connector that dials.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use hyper_util::client::legacy::connect::HttpConnector;
    /// use redial::http::Http2Connector;
    ///
    /// let connector = Http2Connector::<Empty<Bytes>>::new();
    /// let _tcp: &HttpConnector = connector.get_ref();
    /// ```
    pub fn get_ref(&self) -> &C {
        &self.connector
    }

    /// The connector that dials, mutably: to change its settings in place.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use redial::http::Http2Connector;
    ///
    /// let mut connector = Http2Connector::<Empty<Bytes>>::new();
    /// connector.get_mut().set_connect_timeout(Some(Duration::from_secs(2)));
    /// ```
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.connector
    }
}

impl<B, C> Service<Uri> for Http2Connector<B, C>
where
    C: Service<Uri>,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Http2Connection<B>;
    type Error = BoxError;
    type Future = ConnectFuture<Http2Connection<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.connector.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let origin = Origin::new(&target);
        let dialling = self.connector.call(target);
        let builder = self.builder.clone();
        ConnectFuture::new(async move {
            let runtime = Handle::try_current().map_err(|_| NoRuntime)?;
            let io = dialling.await.map_err(Into::into)?;
            let (sender, conn) = builder.handshake::<_, B>(io).await?;
            let closed = CloseSignal::spawn(&runtime, conn);
            Ok(Http2Connection {
                sender,
                closed,
                origin,
            })
        })
    }
}

impl<B, C: Clone> Clone for Http2Connector<B, C> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            builder: self.builder.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> Default for Http2Connector<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, C> fmt::Debug for Http2Connector<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connector")
            .field("connector", &std::any::type_name::<C>())
            .field("builder", &self.builder)
            .finish()
    }
}

fn default_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

// ===== Http1Connection =====

/// One HTTP/1 connection, made by [`Http1Connector`]: a
/// `Service<http::Request<B>>` answering `http::Response<Incoming>`, one
/// request at a time (`poll_ready` is `Pending` while a response is
/// outstanding).
///
/// The request URI is sent in origin-form and a missing `Host` header is
/// filled in; see the [module docs](self#request-uris).
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
    sender: http1::SendRequest<B>,
    closed: CloseSignal,
    origin: Origin,
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
/// [module docs](self#request-uris).
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
    sender: http2::SendRequest<B>,
    closed: CloseSignal,
    origin: Origin,
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

// ===== futures =====

/// The future of a connect attempt by [`Http1Connector`] or
/// [`Http2Connector`]: dial, handshake, spawn the driving task. It resolves
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
    fn new<F>(fut: F) -> Self
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

// ===== errors =====

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

// ===== CloseSignal =====

/// The connection's side of the task that drives it: the task holds the
/// sender and drops it when the connection ends (sending hyper's error
/// first, if any), which wakes whoever polled the receiver last.
struct CloseSignal {
    /// `None` once the close has been seen.
    rx: Option<oneshot::Receiver<hyper::Error>>,
}

impl CloseSignal {
    fn spawn<F>(runtime: &Handle, conn: F) -> Self
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
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<ConnectionClosed> {
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

// ===== Origin =====

/// What a connection fills in from its target on requests that leave it
/// out.
struct Origin {
    /// The target's scheme and authority, when it has both.
    base: Option<(Scheme, Authority)>,
    /// The `Host` header for the target.
    host: Option<HeaderValue>,
}

impl Origin {
    fn new(target: &Uri) -> Self {
        let base = target.scheme().cloned().zip(target.authority().cloned());
        Self {
            base,
            host: host_header(target),
        }
    }

    /// Origin-form target (authority-form for `CONNECT`) and a `Host`
    /// header, as hyper-util's legacy client sends without a proxy.
    fn http1<B>(&self, req: &mut Request<B>) {
        if !req.headers().contains_key(HOST) {
            let host = match req.uri().authority() {
                Some(_) => host_header(req.uri()),
                None => self.host.clone(),
            };
            if let Some(host) = host {
                req.headers_mut().insert(HOST, host);
            }
        }
        let uri = req.uri();
        if uri.authority().is_none() {
            return;
        }
        let mut parts = Parts::default();
        if req.method() == Method::CONNECT {
            parts.authority = uri.authority().cloned();
        } else {
            parts.path_and_query = Some(path_or_root(uri));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }

    /// A path-only request gets the target's scheme and authority.
    fn http2<B>(&self, req: &mut Request<B>) {
        let uri = req.uri();
        if req.method() == Method::CONNECT || uri.scheme().is_some() {
            return;
        }
        let Some((scheme, authority)) = &self.base else {
            return;
        };
        let mut parts = Parts::default();
        parts.scheme = Some(scheme.clone());
        parts.authority = Some(uri.authority().unwrap_or(authority).clone());
        parts.path_and_query = Some(path_or_root(uri));
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.base {
            Some((scheme, authority)) => write!(f, "{scheme}://{authority}"),
            None => f.write_str("?"),
        }
    }
}

fn path_or_root(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// `host[:port]`, the port only when it is not the scheme's default, as
/// hyper-util's legacy client writes it.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https" | "wss") => 443,
        _ => 80,
    };
    match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    }
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(target: &str) -> Origin {
        Origin::new(&target.parse().unwrap())
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    /// HTTP/1: a path-only request keeps its path and gets the target's
    /// host; an absolute one is cut to origin-form with its own host.
    #[test]
    fn http1_sends_origin_form_with_a_host() {
        let origin = origin("http://127.0.0.1:3000");

        let mut req = request(Method::GET, "/a?b=c");
        origin.http1(&mut req);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.headers()[HOST], "127.0.0.1:3000");

        let mut req = request(Method::GET, "http://example.com:80/x");
        origin.http1(&mut req);
        assert_eq!(req.uri(), "/x");
        assert_eq!(req.headers()[HOST], "example.com");

        let mut req = request(Method::GET, "http://example.com");
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("mine"));
        origin.http1(&mut req);
        assert_eq!(req.uri(), "/");
        assert_eq!(req.headers()[HOST], "mine");

        let mut req = request(Method::CONNECT, "example.com:443");
        origin.http1(&mut req);
        assert_eq!(req.uri(), "example.com:443");
    }

    /// HTTP/2: a path-only request gets the target's scheme and authority;
    /// an absolute one is left alone.
    #[test]
    fn http2_fills_in_scheme_and_authority() {
        let origin = origin("http://127.0.0.1:50051");

        let mut req = request(Method::POST, "/helloworld.Greeter/SayHello");
        origin.http2(&mut req);
        assert_eq!(
            req.uri(),
            "http://127.0.0.1:50051/helloworld.Greeter/SayHello"
        );

        let mut req = request(Method::GET, "https://example.com/x");
        origin.http2(&mut req);
        assert_eq!(req.uri(), "https://example.com/x");
        assert!(!req.headers().contains_key(HOST));
    }

    /// A target without scheme or authority fills in nothing, and nothing
    /// panics.
    #[test]
    fn odd_targets_fill_in_nothing() {
        let origin = origin("/just/a/path");
        let mut req = request(Method::GET, "/x");
        origin.http1(&mut req);
        origin.http2(&mut req);
        assert_eq!(req.uri(), "/x");
        assert!(!req.headers().contains_key(HOST));
    }

    /// The default port of the scheme is left out of `Host`.
    #[test]
    fn host_header_leaves_out_default_ports() {
        let host = |uri: &str| host_header(&uri.parse().unwrap()).unwrap();
        assert_eq!(host("http://a:80/"), "a");
        assert_eq!(host("http://a:8080/"), "a:8080");
        assert_eq!(host("https://a:443/"), "a");
        assert_eq!(host("https://a:80/"), "a:80");
    }
}
