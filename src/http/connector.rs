use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::{
    body::Body,
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioExecutor};
use tower::{BoxError, Service};

use super::{
    connection::{Http1Connection, Http2Connection},
    dial::Dialer,
};

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
    inner: Dialer<http1::Builder, B, C>,
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
            inner: Dialer::new(connector, http1::Builder::new()),
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
        self.inner.builder = builder;
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
        &self.inner.connector
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
        &mut self.inner.connector
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
/// current tokio runtime, and resolves to the connection once the server has
/// sent its preface, so a peer that accepts TCP but never speaks HTTP/2
/// fails the attempt (under `Reconnect`, by the connect timeout) instead of
/// looking connected. `B` is the request body type. This is the form for
/// gRPC: a tonic generated client runs over it, since a path-only request
/// gets the target's scheme and authority (see the
/// [module docs](super#request-uris)).
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
    inner: Dialer<http2::Builder<TokioExecutor>, B, C>,
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
            inner: Dialer::new(connector, http2::Builder::new(TokioExecutor::new())),
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
        self.inner.builder = builder;
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
        &self.inner.connector
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
        &mut self.inner.connector
    }
}

// ===== Service, Clone, Default, Debug =====

// Both connectors' trait impls, alike but for the connection each makes and
// the bounds its handshake puts on the body `B`: the work is `Dialer`'s.
macro_rules! connector_impls {
    ($connector:ident => $connection:ident, B: $($body:tt)+) => {
        impl<B, C> Service<Uri> for $connector<B, C>
        where
            C: Service<Uri>,
            C::Response: Read + Write + Unpin + Send + 'static,
            C::Error: Into<BoxError>,
            C::Future: Send + 'static,
            B: $($body)+,
            B::Data: Send,
            B::Error: Into<BoxError>,
        {
            type Response = $connection<B>;
            type Error = BoxError;
            type Future = ConnectFuture<$connection<B>>;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut self, target: Uri) -> Self::Future {
                self.inner.call(target)
            }
        }

        impl<B, C: Clone> Clone for $connector<B, C> {
            fn clone(&self) -> Self {
                Self {
                    inner: self.inner.clone(),
                }
            }
        }

        impl<B> Default for $connector<B> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<B, C> fmt::Debug for $connector<B, C> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.inner.fmt_as(stringify!($connector), f)
            }
        }
    };
}

connector_impls!(Http1Connector => Http1Connection, B: Body + Send + 'static);
connector_impls!(Http2Connector => Http2Connection, B: Body + Unpin + Send + 'static);

fn default_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

// ===== ConnectFuture =====

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
    pub(crate) fn new<F>(fut: F) -> Self
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
