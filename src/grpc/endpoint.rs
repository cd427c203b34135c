use std::{fmt, future::Future, time::Duration};

use http::{HeaderValue, Uri};
use hyper::body::Bytes;
use tonic::body::Body;
use tower::Layer;

use super::{
    error::{Error, Kind},
    Channel,
};
use crate::{http::Http2Connector, redact::Redacted, Backoff, Phase, ReconnectLayer};

/// hyper's default keep-alive timeout, which tonic's `Endpoint` keeps when
/// only the interval is set.
const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a [`Channel`] connects, and how: the builder that replaces
/// `tonic::transport::Endpoint`, with the same names.
///
/// Setters take and return the endpoint; [`connect`](Self::connect) or
/// [`connect_lazy`](Self::connect_lazy) makes the channel. See the
/// [module docs](super) for what differs from tonic.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use redial::grpc::Endpoint;
///
/// let endpoint = Endpoint::from_static("http://127.0.0.1:50051")
///     .connect_timeout(Duration::from_secs(5))
///     .timeout(Duration::from_secs(10))
///     .wait_for_ready(true);
/// # let _ = endpoint;
/// ```
#[must_use]
#[derive(Clone)]
pub struct Endpoint {
    uri: Uri,
    user_agent: Option<HeaderValue>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    keep_alive_interval: Option<Duration>,
    keep_alive_timeout: Option<Duration>,
    tcp_nodelay: bool,
    backoff: Backoff,
    wait_for_ready: bool,
    wait_timeout: Option<Duration>,
    max_attempts: Option<u32>,
    buffer_size: Option<usize>,
    #[cfg(feature = "tls")]
    tls: Option<rustls::ClientConfig>,
}

impl Endpoint {
    /// An endpoint for a static URI (`http://host:port`).
    ///
    /// # Panics
    ///
    /// If `s` is not a valid URI, as `http::Uri::from_static`.
    pub fn from_static(s: &'static str) -> Self {
        Self::from(Uri::from_static(s))
    }

    /// An endpoint for a URI in `s`, or an error if it is not one.
    ///
    /// ```
    /// use redial::grpc::Endpoint;
    ///
    /// assert!(Endpoint::from_shared("http://127.0.0.1:50051".to_string()).is_ok());
    /// assert!(Endpoint::from_shared("http://[::1").is_err());
    /// ```
    pub fn from_shared(s: impl Into<Bytes>) -> Result<Self, Error> {
        Uri::from_maybe_shared(s.into())
            .map(Self::from)
            .map_err(|e| Error::new(Kind::InvalidUri, Some(crate::error::cause(e))))
    }

    /// Sets what the `user-agent` header of every request starts with, as
    /// tonic's does: `"Greeter"` sends `Greeter redial/<version>`, after the
    /// request's own user agent if it has one. An error if it is not a
    /// valid header value.
    ///
    /// Default is none: `redial/<version>` alone (tonic sends `tonic/…`).
    pub fn user_agent<T>(self, user_agent: T) -> Result<Self, Error>
    where
        T: TryInto<HeaderValue>,
    {
        match user_agent.try_into() {
            Ok(agent) => Ok(Self {
                user_agent: Some(agent),
                ..self
            }),
            Err(_) => Err(Error::new(Kind::InvalidUserAgent, None)),
        }
    }

    /// Sets a deadline on every call, from the moment it is made: a call
    /// that has not been answered by then (waiting for a connection
    /// included) fails with `DeadlineExceeded`. A request's own
    /// `grpc-timeout` (`tonic::Request::set_timeout`) wins when shorter.
    /// As in tonic, the server is not told of this one.
    ///
    /// Default is none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the bound on each connect attempt: TCP, the HTTP/2 handshake and
    /// the server's preface (see
    /// [`ReconnectLayer::connect_timeout`]).
    ///
    /// Must be greater than zero. Default is 30 s, where tonic has none.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends an HTTP/2 `PING` every `interval` and treats one unanswered
    /// for [`keep_alive_timeout`](Self::keep_alive_timeout) as a lost
    /// connection, with
    /// [`Http2Connector::keep_alive`](crate::http::Http2Connector::keep_alive).
    ///
    /// Default is none: no pings.
    pub fn http2_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    /// Sets how long a keep-alive `PING` may go unanswered. It has effect
    /// only with [`http2_keep_alive_interval`](Self::http2_keep_alive_interval).
    ///
    /// Default is 20 s, hyper's and so tonic's.
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive_timeout = Some(timeout);
        self
    }

    /// Accepted for tonic's sake; changes nothing. redial's pings run while
    /// no call is open too (as this setting's `true` asks), since an idle
    /// connection is the one nothing else would find dead, and the channel
    /// keeps its connection up between calls.
    ///
    /// Default is `true` in effect.
    pub fn keep_alive_while_idle(self, _enabled: bool) -> Self {
        self
    }

    /// Sets `TCP_NODELAY` on the connection's socket.
    ///
    /// Default is `true`, as in tonic.
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// Sets the delay policy between connect attempts (redial's own).
    ///
    /// Default is [`Backoff::default()`]: 2 s, ×1.6, up to 120 s, ±20 %.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets what a call does while the channel is disconnected (redial's
    /// own, gRPC's "wait for ready"): with `false` it fails at once with
    /// `Unavailable`; with `true` it waits for the connection, up to its
    /// deadline if it has one.
    ///
    /// Default is `false`.
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = wait;
        self
    }

    /// Bounds how long a call waits for a connection (redial's own, beside
    /// [`wait_for_ready`](Self::wait_for_ready)): a call still waiting
    /// after `timeout` fails with `DeadlineExceeded`, naming the last
    /// connect error, and is never sent. It bounds the wait in the channel's
    /// queue, where [`timeout`](Self::timeout) bounds the whole call; the
    /// shorter ends it (see
    /// [`ReconnectLayer::wait_timeout`](crate::ReconnectLayer::wait_timeout)).
    ///
    /// Must be greater than zero. Default is none.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// Sets how many connect attempts in a row may fail before the channel
    /// gives up and closes (redial's own): calls then fail with
    /// `Unavailable` and [`GaveUp`](crate::error::GaveUp) as the source.
    ///
    /// Must be at least 1. Default is unlimited.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets how many calls may queue for the connection task; a call beyond
    /// that waits for room. `None` keeps the default.
    ///
    /// Default is 1024, as in tonic; 0 counts as 1.
    pub fn buffer_size(mut self, size: impl Into<Option<usize>>) -> Self {
        self.buffer_size = size.into();
        self
    }

    /// Sets the TLS settings for an `https://` endpoint: the connector does
    /// the rustls handshake inside the connect timeout, offers ALPN `h2`
    /// unless the config lists its own protocols, and sends the endpoint's
    /// host as the server name (see the `http` module's TLS section). As
    /// tonic's, it returns an error: here when the endpoint is not
    /// `https://`.
    ///
    /// Default is none: plain `http://`.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Result<Self, Error> {
        if self.uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Err(Error::new(Kind::TlsOnHttp, None));
        }
        self.tls = Some(config);
        Ok(self)
    }

    /// The URI the channel connects to.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Connects, and resolves to the channel once connected, or to the
    /// first attempt's error, as tonic's `connect` does; on error nothing is
    /// left running. After that, the channel reconnects by itself.
    ///
    /// Equivalent to `async fn connect(&self) -> Result<Channel, Error>`;
    /// the future does not borrow the endpoint.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the channel it was connecting, which stops.
    ///
    /// # Errors
    ///
    /// Invalid settings (a zero connect or wait timeout, `max_attempts(0)`,
    /// a bad [`Backoff`]), with the [`ConfigError`](crate::error::ConfigError) as
    /// the source, or the first attempt's failure.
    ///
    /// # Panics
    ///
    /// If polled outside a tokio runtime.
    pub fn connect(&self) -> impl Future<Output = Result<Channel, Error>> + Send + 'static {
        let endpoint = self.clone();
        async move {
            let layer = endpoint
                .layer()
                .validate()
                .map_err(|e| Error::new(Kind::InvalidConfig, Some(crate::error::cause(e))))?;
            let channel = endpoint.spawn(layer);
            let mut states = channel.watch().subscribe();
            let cause = match states
                .wait_for(|s| !matches!(s.phase(), Phase::Idle | Phase::Connecting))
                .await
            {
                Ok(state) if state.phase() == Phase::Connected => None,
                Ok(state) => state.last_error.clone(),
                // The task ended without a word: it panicked.
                Err(_) => None,
            };
            if channel.watch().is_connected() {
                return Ok(channel);
            }
            channel.close();
            Err(Error::new(Kind::Connect, cause))
        }
    }

    /// Makes the channel at once, without waiting: it starts connecting in
    /// the background straight away (where tonic's waits for the first
    /// call), and calls made meanwhile wait for that first attempt.
    ///
    /// # Panics
    ///
    /// If the settings are invalid (a zero connect or wait timeout, or
    /// `max_attempts(0)`), or outside a tokio runtime.
    #[track_caller]
    pub fn connect_lazy(&self) -> Channel {
        self.spawn(self.layer())
    }

    fn layer(&self) -> ReconnectLayer<Uri> {
        let layer = ReconnectLayer::new(self.uri.clone())
            .connect_timeout(self.connect_timeout)
            .backoff(self.backoff.clone())
            .wait_for_ready(self.wait_for_ready);
        let layer = match self.wait_timeout {
            Some(timeout) => layer.wait_timeout(timeout),
            None => layer,
        };
        match self.max_attempts {
            Some(attempts) => layer.max_attempts(attempts),
            None => layer,
        }
    }

    #[track_caller]
    fn spawn(&self, layer: ReconnectLayer<Uri>) -> Channel {
        let mut connector = Http2Connector::<Body>::new();
        connector.get_mut().set_nodelay(self.tcp_nodelay);
        if let Some(interval) = self.keep_alive_interval {
            let timeout = self
                .keep_alive_timeout
                .unwrap_or(DEFAULT_KEEP_ALIVE_TIMEOUT);
            connector = connector.keep_alive(interval, timeout);
        }
        let bound = self.buffer_size.unwrap_or(DEFAULT_BUFFER_SIZE).max(1);
        #[cfg(feature = "tls")]
        if let Some(config) = &self.tls {
            let shared = layer.layer(connector.tls(config.clone())).spawn(bound);
            return Channel::new(shared, self.timeout, self.user_agent.clone());
        }
        let shared = layer.layer(connector).spawn(bound);
        Channel::new(shared, self.timeout, self.user_agent.clone())
    }
}

/// tonic's default.
const DEFAULT_BUFFER_SIZE: usize = 1024;

impl From<Uri> for Endpoint {
    fn from(uri: Uri) -> Self {
        Self {
            uri,
            user_agent: None,
            timeout: None,
            connect_timeout: ReconnectLayer::DEFAULT_CONNECT_TIMEOUT,
            keep_alive_interval: None,
            keep_alive_timeout: None,
            tcp_nodelay: true,
            backoff: Backoff::default(),
            wait_for_ready: false,
            wait_timeout: None,
            max_attempts: None,
            buffer_size: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl TryFrom<Bytes> for Endpoint {
    type Error = Error;

    fn try_from(s: Bytes) -> Result<Self, Error> {
        Self::from_shared(s)
    }
}

impl TryFrom<String> for Endpoint {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        Self::from_shared(s)
    }
}

impl TryFrom<&'static str> for Endpoint {
    type Error = Error;

    fn try_from(s: &'static str) -> Result<Self, Error> {
        Self::from_shared(s)
    }
}

impl Endpoint {
    fn has_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl fmt::Debug for Endpoint {
    /// Shows the URI with any userinfo (`user:token@`) replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("uri", &Redacted(&self.uri))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("backoff", &self.backoff)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("wait_timeout", &self.wait_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("buffer_size", &self.buffer_size)
            .field("tls", &self.has_tls())
            .finish()
    }
}
