//! TLS for the connectors (feature `tls`): `.tls(config)` wraps the
//! connector that dials in a [`TlsConnector`], which does the rustls
//! handshake over whatever that connector returns.
//!
//! Why tokio-rustls and not hyper-rustls's `HttpsConnector`, which also
//! wraps a `Service<Uri>`: it would ask more of the connector than
//! `with_connector` does (hyper-util's `Connection` on its I/O), pass
//! `http://` targets through as plain TCP unless told to refuse them, build
//! its ALPN list over the config's own, and return a handshake failure as an
//! `io::Error` inside another, where `source()` cannot reach the rustls
//! error. What it would do for us besides, the server name and two I/O
//! adapters, is the few lines below, and hyper-rustls would pull in
//! tokio-rustls anyway.

mod stream;

use std::{
    any::type_name,
    error::Error as StdError,
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::{pki_types::ServerName, ClientConfig};
use tower::{BoxError, Service};

pub use self::stream::TlsStream;
use super::{
    connector::{Http1Connector, Http2Connector},
    scheme::Schemes,
};

// ===== tls() =====

impl<B, C> Http1Connector<B, C> {
    /// Speaks TLS to the server, with `config`: the connector then dials
    /// `https://` targets only.
    ///
    /// Each attempt dials with the connector so far (hyper-util's
    /// [`HttpConnector`](hyper_util::client::legacy::connect::HttpConnector)
    /// after [`new`](Self::new)) and does the rustls handshake over the
    /// connection before HTTP/1 starts, all inside the connect timeout:
    ///
    /// - ALPN offers `http/1.1`, unless `config.alpn_protocols` already
    ///   lists protocols, which are then offered as they are;
    /// - the server name (SNI, and the name the certificate must carry) is
    ///   the target's host: a DNS name, or an IP address, for which no SNI
    ///   is sent and the certificate must name the address;
    /// - a handshake that fails, such as a certificate that `config` does not
    ///   trust, fails the attempt with [`TlsFailed`], the rustls error its
    ///   source; under [`Reconnect`](crate::Reconnect) that is a
    ///   [`ConnectFailed`](crate::error::ConnectFailed), retried on the
    ///   backoff schedule like a refused dial;
    /// - an `http://` target, or one without a scheme, fails the attempt at
    ///   once with [`SchemeMismatch`](super::SchemeMismatch).
    ///
    /// The connector so far is called with the `https://` target itself: one
    /// of your own given to `with_connector` must dial it (an
    /// `HttpConnector` needs `enforce_http(false)`; [`new`](Self::new)'s has
    /// it). Its settings stay reachable through
    /// `get_mut().get_mut()`.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use hyper::body::Bytes;
    /// use redial::http::Http1Connector;
    /// use rustls::{ClientConfig, RootCertStore};
    ///
    /// let roots = RootCertStore::empty(); // add your CA here
    /// let config = ClientConfig::builder()
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let connector = Http1Connector::<Empty<Bytes>>::new().tls(config);
    /// assert_eq!(connector.get_ref().config().alpn_protocols, [b"http/1.1"]);
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(self, config: ClientConfig) -> Http1Connector<B, TlsConnector<C>> {
        self.map_connector(|connector| TlsConnector::new(connector, config, b"http/1.1"))
    }
}

impl<B, C> Http2Connector<B, C> {
    /// Speaks TLS to the server, with `config`: the connector then dials
    /// `https://` targets only.
    ///
    /// As [`Http1Connector::tls`], but ALPN offers `h2` unless
    /// `config.alpn_protocols` already lists protocols. The connection is
    /// handed out once the server's HTTP/2 preface has come over TLS, so a
    /// server that completes the handshake but does not speak HTTP/2 fails
    /// the attempt too.
    ///
    /// ```no_run
    /// use http_body_util::Full;
    /// use hyper::body::Bytes;
    /// use redial::{http::{Http2Connector, SharedHttp2}, ReconnectLayer};
    /// use rustls::{ClientConfig, RootCertStore};
    /// use tower::Layer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// let config = ClientConfig::builder()
    ///     .with_root_certificates(RootCertStore::empty()) // add your CA here
    ///     .with_no_client_auth();
    /// let uri: http::Uri = "https://orders.internal:8443".parse()?;
    /// let client: SharedHttp2<Full<Bytes>> = ReconnectLayer::new(uri)
    ///     .layer(Http2Connector::new().tls(config))
    ///     .spawn(1024);
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(self, config: ClientConfig) -> Http2Connector<B, TlsConnector<C>> {
        self.map_connector(|connector| TlsConnector::new(connector, config, b"h2"))
    }
}

// ===== TlsConnector =====

/// The connector of [`Http1Connector::tls`] and [`Http2Connector::tls`]: a
/// `Service<Uri>` that dials an `https://` target with the connector `C`,
/// then does the TLS handshake over what it returns.
///
/// It resolves to a [`TlsStream`] or fails with the connector's error,
/// [`TlsFailed`] or [`SchemeMismatch`](super::SchemeMismatch); see
/// [`Http1Connector::tls`].
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub struct TlsConnector<C> {
    connector: C,
    tls: tokio_rustls::TlsConnector,
}

impl<C> TlsConnector<C> {
    fn new(connector: C, mut config: ClientConfig, alpn: &[u8]) -> Self {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        Self {
            connector,
            tls: Arc::new(config).into(),
        }
    }

    /// The TLS settings each handshake uses, ALPN filled in.
    pub fn config(&self) -> &Arc<ClientConfig> {
        self.tls.config()
    }

    /// The connector that dials.
    pub fn get_ref(&self) -> &C {
        &self.connector
    }

    /// The connector that dials, mutably: to change its settings in place.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.connector
    }
}

impl<C> Service<Uri> for TlsConnector<C>
where
    C: Service<Uri>,
    C::Response: Read + Write + Unpin,
    C::Error: Into<BoxError>,
{
    type Response = TlsStream<C::Response>;
    type Error = BoxError;
    type Future = TlsConnecting<C::Future, C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.connector.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        if let Err(refused) = Schemes::Https.check(&target) {
            return TlsConnecting::refused(refused.into());
        }
        let name = match server_name(&target) {
            Ok(name) => name,
            Err(invalid) => return TlsConnecting::refused(invalid),
        };
        TlsConnecting {
            step: Step::Dialling {
                dial: self.connector.call(target),
                tls: self.tls.clone(),
                name,
            },
        }
    }
}

/// The target's host as rustls names the server: an IPv6 address without
/// its brackets.
fn server_name(target: &Uri) -> Result<ServerName<'static>, BoxError> {
    let host = target.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    Ok(ServerName::try_from(host.to_owned())?)
}

impl<C: Clone> Clone for TlsConnector<C> {
    fn clone(&self) -> Self {
        Self {
            connector: self.connector.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl<C> fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alpn: Vec<_> = self
            .config()
            .alpn_protocols
            .iter()
            .map(|protocol| String::from_utf8_lossy(protocol))
            .collect();
        f.debug_struct("TlsConnector")
            .field("connector", &type_name::<C>())
            .field("alpn", &alpn)
            .finish()
    }
}

// ===== TlsConnecting =====

pin_project! {
    /// The future of a [`TlsConnector`] call: the dial, then the TLS
    /// handshake. It resolves to the [`TlsStream`].
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub struct TlsConnecting<F, I> {
        #[pin]
        step: Step<F, I>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<F, I> {
        Refused {
            error: Option<BoxError>,
        },
        Dialling {
            #[pin]
            dial: F,
            tls: tokio_rustls::TlsConnector,
            name: ServerName<'static>,
        },
        Handshaking {
            #[pin]
            handshake: tokio_rustls::Connect<TokioIo<I>>,
        },
    }
}

impl<F, I> TlsConnecting<F, I> {
    fn refused(error: BoxError) -> Self {
        Self {
            step: Step::Refused { error: Some(error) },
        }
    }
}

impl<F, I, E> Future for TlsConnecting<F, I>
where
    F: Future<Output = Result<I, E>>,
    E: Into<BoxError>,
    I: Read + Write + Unpin,
{
    type Output = Result<TlsStream<I>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut step = self.project().step;
        loop {
            let next = match step.as_mut().project() {
                StepProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("TlsConnecting polled after completion")))
                }
                StepProj::Dialling { dial, tls, name } => {
                    let io = ready!(dial.poll(cx)).map_err(Into::into)?;
                    Step::Handshaking {
                        handshake: tls.connect(name.clone(), TokioIo::new(io)),
                    }
                }
                StepProj::Handshaking { handshake } => {
                    let stream = ready!(handshake.poll(cx)).map_err(TlsFailed::new)?;
                    return Poll::Ready(Ok(TlsStream::new(stream)));
                }
            };
            step.set(next);
        }
    }
}

impl<F, I> fmt::Debug for TlsConnecting<F, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.step {
            Step::Refused { .. } => "TlsConnecting::Refused",
            Step::Dialling { .. } => "TlsConnecting::Dialling",
            Step::Handshaking { .. } => "TlsConnecting::Handshaking",
        })
    }
}

// ===== TlsFailed =====

/// The TLS handshake failed: the server's certificate was not trusted or
/// did not name the target's host, the two ends share no protocol version,
/// cipher suite or ALPN protocol, or the connection ended during the
/// handshake.
///
/// Its [`source()`](StdError::source) is rustls's [`rustls::Error`] (also
/// at [`rustls_error`](Self::rustls_error)) when rustls refused the
/// handshake, and otherwise the `io::Error` that ended it. Under
/// [`Reconnect`](crate::Reconnect) it is the source of a
/// [`ConnectFailed`](crate::error::ConnectFailed).
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[derive(Debug)]
pub struct TlsFailed {
    source: BoxError,
}

impl TlsFailed {
    fn new(err: io::Error) -> Self {
        // tokio-rustls hands rustls's error over inside an `io::Error`,
        // whose `source()` skips it: take it out, so the chain shows it.
        let source: BoxError = match err.downcast::<rustls::Error>() {
            Ok(rustls) => Box::new(rustls),
            Err(err) => Box::new(err),
        };
        Self { source }
    }

    /// rustls's reason, when rustls refused the handshake: for a
    /// certificate that the config does not trust,
    /// `rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)`.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.source.downcast_ref()
    }
}

impl fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tls handshake failed")
    }
}

impl StdError for TlsFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server name is the target's host: a DNS name, or an IP address,
    /// an IPv6 one without its brackets.
    #[test]
    fn the_server_name_is_the_host() {
        let name = |uri: &str| server_name(&uri.parse().unwrap()).unwrap();
        let localhost = ServerName::try_from("localhost").unwrap();
        assert_eq!(name("https://localhost:8443/x"), localhost);
        assert!(matches!(
            name("https://127.0.0.1/"),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            name("https://[::1]:443/"),
            ServerName::IpAddress(_)
        ));
    }
}
