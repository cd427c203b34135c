use std::{
    fmt,
    marker::PhantomData,
    task::{Context, Poll},
};

use http::Uri;
use hyper::{
    body::Body,
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::{BoxError, Service};

use super::{
    connect::{connect, ConnectFuture},
    connection::{Http1Connection, Http2Connection},
    executor::BoxedExecutor,
    handshake::Http2Settings,
    scheme::Schemes,
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
    connector: C,
    builder: http1::Builder,
    schemes: Schemes,
    _body: PhantomData<fn(B)>,
}

impl<B> Http1Connector<B> {
    /// A connector that dials with hyper-util's [`HttpConnector`]
    /// (`http://` targets only), with `TCP_NODELAY` set, since requests and
    /// responses are small messages that should not wait for more.
    /// Other targets fail at once with [`SchemeMismatch`](super::SchemeMismatch).
    pub fn new() -> Self {
        Self {
            schemes: Schemes::Http,
            ..Self::with_connector(default_connector())
        }
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
            schemes: Schemes::Any,
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
    /// let connector = Http1Connector::<Empty<Bytes>>::new().hyper_builder(settings);
    /// # let _ = connector;
    /// ```
    ///
    /// Default is `http1::Builder::new()`.
    pub fn hyper_builder(mut self, builder: http1::Builder) -> Self {
        self.builder = builder;
        self
    }

    /// The connector that dials.
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

// ===== Http2Connector =====

/// Makes HTTP/2 connections (prior knowledge, or whatever the connector
/// negotiates): a `Service<Uri>` whose response is an [`Http2Connection`].
/// Give it to [`ReconnectLayer`](crate::ReconnectLayer) or
/// [`Reconnect::new`](crate::Reconnect::new) with the server's `Uri`.
///
/// Each call dials the `Uri` through the connector `C`, does the HTTP/2
/// handshake with the [`http2::Builder`] (streams run on
/// [`BoxedExecutor`]), spawns the task that drives the connection on the
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
    connector: C,
    builder: Http2Settings,
    schemes: Schemes,
    _body: PhantomData<fn(B)>,
}

impl<B> Http2Connector<B> {
    /// A connector that dials with hyper-util's [`HttpConnector`]
    /// (`http://` targets only, HTTP/2 by prior knowledge), with
    /// `TCP_NODELAY` set, as tonic does.
    /// Other targets fail at once with [`SchemeMismatch`](super::SchemeMismatch).
    pub fn new() -> Self {
        Self {
            schemes: Schemes::Http,
            ..Self::with_connector(default_connector())
        }
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
            builder: Http2Settings::new(),
            schemes: Schemes::Any,
            _body: PhantomData,
        }
    }

    /// Sets the hyper settings each handshake uses. For keep-alive pings,
    /// use [`keep_alive`](Self::keep_alive), which overrides these
    /// settings' own.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::{body::Bytes, client::conn::http2};
    /// use redial::http::{BoxedExecutor, Http2Connector};
    ///
    /// let mut settings = http2::Builder::new(BoxedExecutor::new());
    /// settings.initial_stream_window_size(1 << 20);
    /// let connector = Http2Connector::<Empty<Bytes>>::new().hyper_builder(settings);
    /// # let _ = connector;
    /// ```
    ///
    /// Default is `http2::Builder::new(BoxedExecutor::new())`: hyper's
    /// tasks run on tokio, each boxed first (see [`BoxedExecutor`]).
    pub fn hyper_builder(mut self, builder: http2::Builder<BoxedExecutor>) -> Self {
        self.builder.set_hyper(builder);
        self
    }

    /// The connector that dials.
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

    /// What each handshake gets besides the dialled I/O, for the
    /// keep-alive settings, which live with them.
    pub(super) fn settings(&self) -> &Http2Settings {
        &self.builder
    }

    pub(super) fn settings_mut(&mut self) -> &mut Http2Settings {
        &mut self.builder
    }
}

// ===== Service, Clone, Default, Debug =====

// Both connectors' trait impls, alike but for the connection each makes and
// the bounds its handshake puts on the body `B`: the work is `connect`'s.
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
                self.connector.poll_ready(cx).map_err(Into::into)
            }

            fn call(&mut self, target: Uri) -> Self::Future {
                match self.schemes.check(&target) {
                    Ok(()) => connect::<B, _, _>(&mut self.connector, self.builder.clone(), target),
                    Err(refused) => ConnectFuture::new(async move { Err(refused.into()) }),
                }
            }
        }

        #[cfg(feature = "tls")]
        impl<B, C> $connector<B, C> {
            /// The same settings over the connector `wrap(connector)`, which
            /// then decides which targets it takes.
            pub(super) fn map_connector<D>(self, wrap: impl FnOnce(C) -> D) -> $connector<B, D> {
                $connector {
                    connector: wrap(self.connector),
                    builder: self.builder,
                    schemes: Schemes::Any,
                    _body: PhantomData,
                }
            }
        }

        impl<B, C: Clone> Clone for $connector<B, C> {
            fn clone(&self) -> Self {
                Self {
                    connector: self.connector.clone(),
                    builder: self.builder.clone(),
                    schemes: self.schemes,
                    _body: PhantomData,
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
                f.debug_struct(stringify!($connector))
                    .field("connector", &std::any::type_name::<C>())
                    .field("builder", &self.builder)
                    .field("schemes", &self.schemes)
                    .finish()
            }
        }
    };
}

connector_impls!(Http1Connector => Http1Connection, B: Body + Send + 'static);
connector_impls!(Http2Connector => Http2Connection, B: Body + Unpin + Send + 'static);

fn default_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // The connector checks the target's scheme itself (`Schemes`), so the
    // same TCP dialler serves `https://` targets under `.tls(config)`.
    http.enforce_http(false);
    http
}
