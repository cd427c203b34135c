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
//! This module is behind the `http` feature; TLS (see [TLS](#tls)) behind
//! `tls`.
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
//! To share one connection between tasks, spawn it:
//! `ReconnectLayer::new(uri).layer(Http2Connector::new()).spawn(1024)` gives
//! a clone-able [`Shared`](crate::Shared) handle that connects at once and
//! notices an idle connection closing (see [Closing](#closing)); a tonic
//! generated client takes it as its channel (`HealthClient::new(shared)`).
//! [`SharedHttp2`] and [`SharedHttp1`] name its type, to keep in a struct.
//!
//! # TLS
//!
//! With the `tls` feature, `.tls(config)` on either connector, with a
//! [`rustls::ClientConfig`](https://docs.rs/rustls/0.23/rustls/client/struct.ClientConfig.html),
//! makes it dial `https://` targets: TCP as before, then the rustls
//! handshake, then HTTP, all inside one connect attempt and so inside the
//! connect timeout. The connector sets ALPN (`h2` for HTTP/2, `http/1.1`
//! for HTTP/1) unless the config lists its own protocols, and names the
//! server after the target's host (SNI, and the name the certificate must
//! carry). A certificate the config does not trust fails the attempt with
//! `TlsFailed`, rustls's error in its `source()`, and is retried on the
//! backoff schedule like any failed attempt; a server that never answers
//! the handshake runs into the connect timeout. An `https://` target on a
//! connector without TLS, or an `http://` one with it, fails at once with
//! [`SchemeMismatch`].
//!
//! The connector's type changes (`Http2Connector<B, TlsConnector<C>>`), but
//! not the shared handle's: [`SharedHttp2`] and [`SharedHttp1`] name it
//! with TLS as without.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! use http_body_util::Full;
//! use hyper::body::Bytes;
//! use redial::{http::{Http2Connector, SharedHttp2}, ReconnectLayer};
//! use rustls::{pki_types::CertificateDer, ClientConfig, RootCertStore};
//! use tower::{Layer, ServiceExt};
//!
//! let mut roots = RootCertStore::empty();
//! roots.add(CertificateDer::from(std::fs::read("ca.der")?))?;
//! let config = ClientConfig::builder()
//!     .with_root_certificates(roots)
//!     .with_no_client_auth();
//!
//! let uri: http::Uri = "https://orders.internal:8443".parse()?;
//! let client: SharedHttp2<Full<Bytes>> = ReconnectLayer::new(uri)
//!     .layer(Http2Connector::new().tls(config))
//!     .spawn(1024);
//! let res = client.oneshot(http::Request::get("/orders").body(Full::default())?).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! redial drives rustls through tokio-rustls rather than hyper-rustls's
//! `HttpsConnector`, which asks more of a custom connector's I/O than
//! `with_connector` does, lets `http://` targets through in plain text, and
//! hides rustls's error inside nested `io::Error`s, out of reach of
//! `source()`. rustls is built with its `ring` provider, so
//! `ClientConfig::builder()` works as it is; enable another provider in your
//! own build and build the config with
//! `ClientConfig::builder_with_provider` instead.
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
//! # Keep-alive
//!
//! A peer that goes silent without closing the connection (a host that
//! died, a proxy or load balancer that hung, a NAT or firewall entry that
//! expired) leaves a connection that looks open: nothing arrives, and
//! nothing says why. Left alone, an idle one is never noticed, and a
//! request sent on it waits until the operating system gives up on the
//! data (about 15 minutes on Linux). Three settings shorten that; all are
//! off by default, as in gRPC.
//!
//! - **HTTP/2 pings**:
//!   [`Http2Connector::keep_alive(interval, timeout)`](Http2Connector::keep_alive)
//!   sends a `PING` every `interval`, idle or not, and closes the
//!   connection when one goes unanswered for `timeout`, so a silent peer is
//!   noticed within `interval + timeout`. `poll_ready` then fails with
//!   [`ConnectionClosed`] ("http connection closed: keep-alive timed out",
//!   [`is_keep_alive_timeout`](ConnectionClosed::is_keep_alive_timeout)),
//!   the watch shows the loss, and `Reconnect` dials again by its usual
//!   rules; a request in flight fails with hyper's timeout error and is not
//!   resent. Whatever speaks HTTP/2 at the far end must answer them: the
//!   server, through TCP proxies and load balancers, or an HTTP/2 proxy
//!   itself. So they catch a hung proxy or a hung server process as well as
//!   a dead host. Use them for HTTP/2 and gRPC.
//! - **TCP keep-alive**: `tcp_keepalive(idle)` on either connector
//!   ([`Http1Connector::tcp_keepalive`], [`Http2Connector::tcp_keepalive`])
//!   has the kernel probe a socket idle for `idle` and close it when the
//!   probes go unanswered (on Linux 9 more, 75 s apart, unless set through
//!   [`get_mut`](Http1Connector::get_mut)). Use it for HTTP/1, which has no
//!   pings. It is slower and coarser: it sees only the next TCP hop (a
//!   proxy answers for the server) and only the host (the kernel of a
//!   server whose process hangs answers too). It also keeps NAT and
//!   firewall entries from expiring.
//! - **`TCP_USER_TIMEOUT`** (Linux, Android, Fuchsia): `tcp_user_timeout(t)`
//!   on either connector bounds how long written data may stay
//!   unacknowledged before the kernel closes the connection, so a request
//!   sent into a dead path fails after `t`, not 15 minutes. It adds to
//!   either of the above; set it above the longest stall your network may
//!   have.
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::Empty;
//! use hyper::body::Bytes;
//! use redial::http::{Http1Connector, Http2Connector};
//!
//! let grpc = Http2Connector::<Empty<Bytes>>::new()
//!     .keep_alive(Duration::from_secs(30), Duration::from_secs(10));
//! let rest = Http1Connector::<Empty<Bytes>>::new()
//!     .tcp_keepalive(Duration::from_secs(60))
//!     .tcp_user_timeout(Duration::from_secs(30));
//! # let _ = (grpc, rest);
//! ```
//!
//! Servers may police pings. A gRPC server (grpc-go, grpc-java, grpc-core)
//! by default allows one ping every 5 minutes, and while no call is open
//! (when `keep_alive` pings too) one every 2 hours; after a few pings
//! sooner than that it answers with `GOAWAY ENHANCE_YOUR_CALM` and the
//! debug data `too_many_pings`. The connection
//! closes ([`ConnectionClosed::is_too_many_pings`]), the next one pings at
//! twice the interval (gRFC A8), for every clone of the connector, and one
//! warning says so; [`Http2Connector::keep_alive_interval`] tells the
//! interval in use. Doubling converges, but each step costs a connection:
//! set the server's policy to match instead (grpc-go's
//! `keepalive.EnforcementPolicy { MinTime, PermitWithoutStream: true }`,
//! grpc-java's `permitKeepAliveTime` and `permitKeepAliveWithoutCalls`).
//! hyper's and tonic's servers answer every ping. Only the debug data
//! `too_many_pings` counts: h2 also sends `ENHANCE_YOUR_CALM` for other
//! abuse (`too_many_resets`), which slower pings would not cure.
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
//! Every error is a [`tower::BoxError`]. A connect attempt fails with
//! [`SchemeMismatch`] when the target's scheme does not fit the connector
//! (an `https://` target without TLS, `127.0.0.1:3000` without `http://`),
//! before anything is dialled; with the dialling connector's error
//! (hyper-util's `ConnectError`, for instance `tcp connect error` with the
//! `io::Error` as its source); with `TlsFailed` when the TLS handshake fails
//! (feature `tls`); or with the HTTP handshake's [`hyper::Error`].
//! `Reconnect` wraps each in [`ConnectFailed`](crate::error::ConnectFailed).
//! `poll_ready` fails with [`ConnectionClosed`]; a response future with the
//! [`hyper::Error`] hyper gave. Nothing here panics on a bad target or
//! request.
//!
//! # Costs
//!
//! One allocation per connect attempt (the boxed [`ConnectFuture`]) and one
//! per request ([`ResponseFuture`] boxes hyper's response future, whose type
//! has no name), plus hyper's own; one tokio task per live connection.
//!
//! [`Uri`]: http::Uri
//! [`HttpConnector`]: hyper_util::client::legacy::connect::HttpConnector

mod close;
mod connect;
mod connection;
mod connector;
mod executor;
mod handshake;
mod keepalive;
mod origin;
mod ping;
mod preface;
mod replay;
mod scheme;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use self::tls::{TlsConnecting, TlsConnector, TlsFailed, TlsStream};
pub use self::{
    close::ConnectionClosed,
    connect::ConnectFuture,
    connection::{Http1Connection, Http2Connection, ResponseFuture},
    connector::{Http1Connector, Http2Connector},
    executor::BoxedExecutor,
    scheme::SchemeMismatch,
};

/// The [`Shared`](crate::Shared) handle on an [`Http1Connection`] whose
/// requests have body `B`: what
/// `ReconnectLayer::new(uri).layer(Http1Connector::new()).spawn(bound)`
/// returns, named so that it can be stored.
///
/// Both connections answer with one [`ResponseFuture`], so this is the same
/// type as [`SharedHttp2`]: a field of either type holds a handle of either
/// protocol.
///
/// # Examples
///
/// ```
/// # use std::convert::Infallible;
/// # use hyper_util::rt::TokioIo;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # tokio::spawn(async move {
/// #     while let Ok((tcp, _)) = listener.accept().await {
/// #         let search = hyper::service::service_fn(|_req| async {
/// #             Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("2 hits"))))
/// #         });
/// #         let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), search);
/// #         tokio::spawn(conn);
/// #     }
/// # });
/// use http::{Request, Response, Uri};
/// use http_body_util::{BodyExt, Full};
/// use hyper::body::{Bytes, Incoming};
/// use redial::{http::{Http1Connector, SharedHttp1}, ReconnectLayer};
/// use tower::{BoxError, Layer, ServiceExt};
///
/// struct App {
///     search: SharedHttp1<Full<Bytes>>,
/// }
///
/// impl App {
///     async fn search(&self, query: &str) -> Result<Response<Incoming>, BoxError> {
///         let req = Request::get(format!("/search?q={query}")).body(Full::default())?;
///         self.search.clone().oneshot(req).await
///     }
/// }
///
/// let uri: Uri = format!("http://{addr}").parse()?;
/// let app = App {
///     search: ReconnectLayer::new(uri).layer(Http1Connector::new()).spawn(1024),
/// };
/// let res = app.search("redial").await?;
/// assert_eq!(res.into_body().collect().await?.to_bytes(), "2 hits");
/// # Ok(())
/// # }
/// ```
pub type SharedHttp1<B> =
    crate::Shared<http::Request<B>, crate::future::ResponseFuture<ResponseFuture>>;

/// The [`Shared`](crate::Shared) handle on an [`Http2Connection`] whose
/// requests have body `B`: what
/// `ReconnectLayer::new(uri).layer(Http2Connector::new()).spawn(bound)`
/// returns, named so that it can be stored.
///
/// # Examples
///
/// ```
/// # use std::convert::Infallible;
/// # use hyper_util::rt::{TokioExecutor, TokioIo};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # tokio::spawn(async move {
/// #     while let Ok((tcp, _)) = listener.accept().await {
/// #         let orders = hyper::service::service_fn(|_req| async {
/// #             Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("3 orders"))))
/// #         });
/// #         let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
/// #             .serve_connection(TokioIo::new(tcp), orders);
/// #         tokio::spawn(conn);
/// #     }
/// # });
/// use http::{Request, Response, Uri};
/// use http_body_util::{BodyExt, Full};
/// use hyper::body::{Bytes, Incoming};
/// use redial::{http::{Http2Connector, SharedHttp2}, ReconnectLayer};
/// use tower::{BoxError, Layer, ServiceExt};
///
/// struct App {
///     orders: SharedHttp2<Full<Bytes>>,
/// }
///
/// impl App {
///     async fn orders(&self) -> Result<Response<Incoming>, BoxError> {
///         let req = Request::get("/orders").body(Full::default())?;
///         self.orders.clone().oneshot(req).await
///     }
/// }
///
/// let uri: Uri = format!("http://{addr}").parse()?;
/// let app = App {
///     orders: ReconnectLayer::new(uri).layer(Http2Connector::new()).spawn(1024),
/// };
/// let res = app.orders().await?;
/// assert_eq!(res.into_body().collect().await?.to_bytes(), "3 orders");
/// # Ok(())
/// # }
/// ```
pub type SharedHttp2<B> =
    crate::Shared<http::Request<B>, crate::future::ResponseFuture<ResponseFuture>>;

/// The [`Pool`](crate::Pool) of [`Http1Connection`]s whose requests have
/// body `B`: what
/// `ReconnectLayer::new(uri).pool(n).layer(Http1Connector::new())` returns,
/// named so that it can be stored. The form for HTTP/1 under concurrency,
/// where one connection serves one request at a time.
pub type PoolHttp1<B> =
    crate::Pool<http::Request<B>, crate::future::ResponseFuture<ResponseFuture>>;

/// The [`Pool`](crate::Pool) of [`Http2Connection`]s whose requests have
/// body `B`: what
/// `ReconnectLayer::new(uri).pool(n).layer(Http2Connector::new())` returns,
/// named so that it can be stored.
pub type PoolHttp2<B> =
    crate::Pool<http::Request<B>, crate::future::ResponseFuture<ResponseFuture>>;
