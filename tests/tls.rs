#![cfg(feature = "tls")]
//! `redial::http` over TLS against real TLS servers on 127.0.0.1
//! (tokio-rustls's server side under hyper) with certificates from a CA
//! made at run time: a reconnecting client through a restart over HTTP/1
//! and HTTP/2, ALPN and the server name, a certificate the client does not
//! trust, a server that never answers the handshake, and targets whose
//! scheme does not fit the connector.
//!
//! Real sockets need the real clock, so every wait here is on an event (the
//! watch, a handshake or a close the server saw); timing checks are lower
//! bounds, which no scheduling delay can break, and the timeouts only keep a
//! broken build from hanging.
mod support;
#[path = "../examples/common/tls.rs"]
mod tls;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use redial::{
    error::{Closed, ConnectFailed, ConnectTimeout, GaveUp, Unavailable},
    http::{Http1Connector, Http2Connector, SchemeMismatch, SharedHttp2, TlsFailed},
    Backoff, Phase, ReconnectLayer,
};
use rustls::CertificateError;
use support::{
    errors::find,
    net::guard,
    server::{listen, serve_connection, Open, Proto, Running},
};
use tls::TestCa;
use tokio::{io::AsyncReadExt, net::TcpStream, sync::watch, time::Instant};
use tokio_rustls::TlsAcceptor;
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const RETRY: Duration = Duration::from_millis(50);

// ===== through a restart =====

/// HTTP/1 over TLS: requests succeed before a server restart and after it,
/// the watch shows the loss and the reconnect, and each handshake offered
/// `http/1.1` and named `localhost`.
#[tokio::test]
async fn http1_over_tls_recovers_after_server_restart() {
    recovers_after_restart(Proto::Http1, "http/1.1").await;
}

/// HTTP/2 over TLS: as for HTTP/1, with `h2`; path-only requests get the
/// `https` scheme.
#[tokio::test]
async fn http2_over_tls_recovers_after_server_restart() {
    recovers_after_restart(Proto::Http2, "h2").await;
}

async fn recovers_after_restart(proto: Proto, alpn: &str) {
    support::trace_init();
    let ca = TestCa::new().unwrap();
    let mut server = TlsServer::start(&ca, Behaviour::Serve(proto), &[b"h2", b"http/1.1"]);
    let uri: Uri = format!("https://localhost:{}", server.addr.port())
        .parse()
        .unwrap();
    let config = ca.client_config().unwrap();
    // One name for the shared handle of either protocol, TLS or not.
    let mut client: SharedHttp2<Body> = match proto {
        Proto::Http1 => layer(uri.clone())
            .layer(Http1Connector::new().tls(config))
            .spawn(8),
        Proto::Http2 => layer(uri.clone())
            .layer(Http2Connector::new().tls(config))
            .spawn(8),
    };
    let watch = client.watch();
    let mut phases = watch.subscribe();
    let mut seen = vec![phases.borrow_and_update().is_connected()];
    let recorder = tokio::spawn(async move {
        while phases.changed().await.is_ok() {
            let connected = phases.borrow_and_update().is_connected();
            if seen.last() != Some(&connected) {
                seen.push(connected);
            }
        }
        seen
    });

    for path in ["/before/0", "/before/1"] {
        assert_eq!(
            guard(get(&mut client, path)).await.unwrap(),
            format!("hello {path}")
        );
    }
    server.stop().await;
    assert_ne!(guard(watch.disconnected()).await.phase(), Phase::Connected);
    server.restart();
    guard(watch.connected()).await.unwrap();
    for path in ["/after/0", "/after/1"] {
        assert_eq!(
            guard(get(&mut client, path)).await.unwrap(),
            format!("hello {path}")
        );
    }

    let state = watch.state();
    assert_eq!((state.connects(), state.disconnects()), (2, 1), "{state:?}");
    client.close();
    assert_eq!(
        guard(recorder).await.unwrap(),
        [false, true, false, true, false]
    );
    let handshake = Handshake {
        sni: Some("localhost".into()),
        alpn: Some(alpn.into()),
    };
    assert_eq!(server.handshakes(), [handshake.clone(), handshake]);
    let seen = server.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    if proto == Proto::Http2 {
        assert_eq!(seen[0], format!("{uri}before/0"));
    }
}

// ===== ALPN and the server name =====

/// ALPN lists the config's own protocols when it has some: the server, which
/// prefers `x-redial` to `h2`, picks it.
#[tokio::test]
async fn the_configs_own_alpn_is_offered_as_it_is() {
    let ca = TestCa::new().unwrap();
    let server = TlsServer::start(&ca, Behaviour::Serve(Proto::Http2), &[b"x-redial", b"h2"]);
    let mut config = ca.client_config().unwrap();
    config.alpn_protocols = vec![b"x-redial".to_vec()];
    let connector = Http2Connector::<Body>::new().tls(config);
    assert_eq!(connector.get_ref().config().alpn_protocols, [b"x-redial"]);

    let mut conn = guard(connector.oneshot(server.uri("127.0.0.1")))
        .await
        .unwrap();
    assert_eq!(guard(get(&mut conn, "/x")).await.unwrap(), "hello /x");
    assert_eq!(server.handshakes()[0].alpn.as_deref(), Some("x-redial"));
}

/// The server name is the target's host: `localhost` is sent as SNI; for an
/// IP address none is, and the certificate is checked against the address.
#[tokio::test]
async fn the_server_name_is_the_targets_host() {
    let ca = TestCa::new().unwrap();
    let server = TlsServer::start(&ca, Behaviour::Serve(Proto::Http1), &[b"http/1.1"]);
    for host in ["localhost", "127.0.0.1"] {
        let connector = Http1Connector::<Body>::new().tls(ca.client_config().unwrap());
        let mut conn = guard(connector.oneshot(server.uri(host))).await.unwrap();
        assert_eq!(guard(get(&mut conn, "/")).await.unwrap(), "hello /");
    }
    let sni: Vec<_> = server.handshakes().into_iter().map(|h| h.sni).collect();
    assert_eq!(sni, [Some("localhost".to_owned()), None]);
}

// ===== failures =====

/// A certificate the client does not trust fails each attempt with
/// `ConnectFailed` over `TlsFailed` over rustls's `UnknownIssuer`, retried
/// on the schedule: each attempt starts no sooner than its delay after the
/// one before, and the schedule's end gives up after its 4 attempts.
#[tokio::test]
async fn untrusted_certificate_fails_to_connect_on_the_backoff_schedule() {
    support::trace_init();
    let ca = TestCa::new().unwrap();
    let server = TlsServer::start(&ca, Behaviour::Serve(Proto::Http2), &[b"h2"]);
    let other_ca = TestCa::new().unwrap();
    let delays = [30, 60, 90].map(Duration::from_millis);

    // The dialler notes when each attempt starts.
    let dials = Arc::new(Mutex::new(Vec::new()));
    let noted = dials.clone();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let tcp = tcp.map_request(move |uri: Uri| {
        noted.lock().unwrap().push(Instant::now());
        uri
    });
    let connector = Http2Connector::with_connector(tcp).tls(other_ca.client_config().unwrap());
    let mut client: SharedHttp2<Body> = ReconnectLayer::new(server.uri("localhost"))
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::from_delays(delays.into_iter()))
        .layer(connector)
        .spawn(8);
    let watch = client.watch();

    let mut states = watch.subscribe();
    let failed = guard(states.wait_for(|s| s.last_error().is_some()))
        .await
        .unwrap()
        .clone();
    assert_eq!(failed.phase(), Phase::Disconnected);
    assert_untrusted(failed.last_error().unwrap());
    // Failing fast (or, once given up, closed): the cause is the same.
    let err = guard(get(&mut client, "/")).await.unwrap_err();
    assert!(
        find::<Unavailable>(&*err).is_some() || find::<Closed>(&*err).is_some(),
        "{err:?}"
    );
    assert_untrusted(&*err);

    let state = guard(states.wait_for(|s| s.is_closed()))
        .await
        .unwrap()
        .clone();
    assert_eq!(state.attempt(), 4);
    let gave_up = find::<GaveUp>(state.last_error().unwrap()).unwrap();
    assert_eq!(gave_up.attempts(), 4);
    assert_untrusted(gave_up);

    let dials = dials.lock().unwrap().clone();
    let gaps: Vec<_> = dials.windows(2).map(|w| w[1] - w[0]).collect();
    println!("untrusted certificate: dial gaps {gaps:?} for delays {delays:?}");
    assert_eq!(gaps.len(), delays.len());
    for (gap, delay) in gaps.iter().zip(delays) {
        // A retry may start up to 1 ms early (the timer's slack), never more.
        assert!(*gap >= delay - Duration::from_millis(1), "{gaps:?}");
    }
    // The server saw each handshake refused by the client, and no request.
    guard(until(&server.log.failed, 4)).await;
    guard(until(&server.log.open, 0)).await;
    assert!(server.seen().is_empty() && server.handshakes().is_empty());
}

fn assert_untrusted(err: &(dyn std::error::Error + 'static)) {
    assert!(find::<ConnectFailed>(err).is_some(), "{err:?}");
    let tls = find::<TlsFailed>(err).expect("a TLS failure");
    let expected = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
    assert_eq!(tls.rustls_error(), Some(&expected));
    // Found by walking `source()` too, as any error reporter would.
    assert_eq!(find::<rustls::Error>(err), Some(&expected));
}

/// A server that accepts TCP but never answers the ClientHello: the attempt
/// ends with `ConnectTimeout` at the connect timeout, over HTTP/1 as over
/// HTTP/2, and the client closes the socket it abandoned.
#[tokio::test]
async fn mute_tls_server_times_out_the_connect() {
    support::trace_init();
    let ca = TestCa::new().unwrap();
    for proto in [Proto::Http1, Proto::Http2] {
        let server = TlsServer::start(&ca, Behaviour::Mute, &[]);
        let layer = layer(server.uri("localhost"));
        let config = ca.client_config().unwrap();
        let started = Instant::now();
        let err = match proto {
            Proto::Http1 => get(&mut layer.layer(Http1Connector::new().tls(config)), "/").await,
            Proto::Http2 => get(&mut layer.layer(Http2Connector::new().tls(config)), "/").await,
        }
        .unwrap_err();
        let took = started.elapsed();
        println!("mute TLS server, {proto:?}: failed after {took:?}: {err}");

        assert!(find::<Unavailable>(&*err).is_some(), "{err:?}");
        let timeout = find::<ConnectTimeout>(&*err).expect("a connect timeout");
        assert_eq!(timeout.timeout(), CONNECT_TIMEOUT);
        assert!(took >= CONNECT_TIMEOUT, "{took:?}");
        // The ClientHello arrived; the abandoned socket was closed.
        guard(until(&server.log.open, 0)).await;
        assert!(*server.log.mute_read.borrow() > 0);
    }
}

/// An `https://` target on a connector without TLS, and an `http://` one on
/// a connector with it, fail at once with `SchemeMismatch`, whose message
/// names the rule, before anything is dialled.
#[tokio::test]
async fn a_scheme_that_does_not_fit_the_connector_is_a_clear_error() {
    let ca = TestCa::new().unwrap();
    let server = TlsServer::start(&ca, Behaviour::Serve(Proto::Http1), &[]);
    let https = server.uri("localhost");
    let http: Uri = format!("http://localhost:{}", server.addr.port())
        .parse()
        .unwrap();
    let config = || ca.client_config().unwrap();

    let errors = [
        (
            false,
            Http1Connector::<Body>::new()
                .oneshot(https.clone())
                .await
                .unwrap_err(),
        ),
        (
            false,
            Http2Connector::<Body>::new()
                .oneshot(https.clone())
                .await
                .unwrap_err(),
        ),
        (
            true,
            Http1Connector::<Body>::new()
                .tls(config())
                .oneshot(http.clone())
                .await
                .unwrap_err(),
        ),
        (
            true,
            Http2Connector::<Body>::new()
                .tls(config())
                .oneshot(http.clone())
                .await
                .unwrap_err(),
        ),
    ];
    for (tls, err) in errors {
        let mismatch = err
            .downcast_ref::<SchemeMismatch>()
            .expect("a scheme mismatch");
        assert_eq!(mismatch.tls(), tls);
        let rule = match tls {
            false => "https target needs tls configured on the connector",
            true => "http target: a connector with tls dials https targets only",
        };
        assert_eq!(err.to_string(), rule);
    }

    // Under `Reconnect`, a failed attempt like any other.
    let mut svc = layer(https).layer(Http2Connector::<Body>::new());
    let err = guard(get(&mut svc, "/")).await.unwrap_err();
    assert!(find::<ConnectFailed>(&*err).is_some(), "{err:?}");
    assert!(find::<SchemeMismatch>(&*err).is_some(), "{err:?}");
    let mut svc = layer(http).layer(Http1Connector::<Body>::new().tls(config()));
    let err = guard(get(&mut svc, "/")).await.unwrap_err();
    assert!(find::<SchemeMismatch>(&*err).is_some(), "{err:?}");
    assert_eq!(*server.log.accepts.borrow(), 0, "nothing was dialled");
}

// ===== client helpers =====

fn layer(uri: Uri) -> ReconnectLayer<Uri> {
    ReconnectLayer::new(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::constant(RETRY))
}

/// A GET: readiness, the call, the whole body.
async fn get<S>(svc: &mut S, uri: &str) -> Result<String, BoxError>
where
    S: Service<Request<Body>, Response = Response<Incoming>>,
    S::Error: Into<BoxError>,
{
    let req = Request::get(uri).body(Body::default())?;
    let res = svc
        .ready()
        .await
        .map_err(Into::into)?
        .call(req)
        .await
        .map_err(Into::into)?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn until(count: &watch::Sender<usize>, n: usize) {
    let _ = count.subscribe().wait_for(|&seen| seen == n).await;
}

// ===== TlsServer: hello world over TLS, or mute =====

#[derive(Clone, Copy)]
enum Behaviour {
    /// The TLS handshake, then `hello <path>` over this protocol.
    Serve(Proto),
    /// Reads the ClientHello and whatever follows, and never answers.
    Mute,
}

/// What a completed handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Handshake {
    sni: Option<String>,
    alpn: Option<String>,
}

/// A TLS server that can stop (closing every connection) and start again on
/// the same address, recording what it saw.
struct TlsServer {
    behaviour: Behaviour,
    acceptor: TlsAcceptor,
    addr: SocketAddr,
    log: Arc<Log>,
    running: Option<Running>,
}

#[derive(Default)]
struct Log {
    handshakes: Mutex<Vec<Handshake>>,
    seen: Mutex<Vec<String>>,
    accepts: watch::Sender<usize>,
    failed: watch::Sender<usize>,
    open: watch::Sender<usize>,
    mute_read: watch::Sender<usize>,
}

impl TlsServer {
    fn start(ca: &TestCa, behaviour: Behaviour, alpn: &[&[u8]]) -> Self {
        let mut server = Self {
            behaviour,
            acceptor: TlsAcceptor::from(ca.server_config(alpn).unwrap()),
            addr: ([127, 0, 0, 1], 0).into(),
            log: Arc::default(),
            running: None,
        };
        server.restart();
        server
    }

    fn uri(&self, host: &str) -> Uri {
        format!("https://{host}:{}/", self.addr.port())
            .parse()
            .unwrap()
    }

    fn restart(&mut self) {
        let listener = listen(self.addr, 64);
        self.addr = listener.local_addr().unwrap();
        let (behaviour, acceptor, log) = (self.behaviour, self.acceptor.clone(), self.log.clone());
        self.running = Some(Running::accept(listener, move |stream, _| {
            Some(connection(stream, behaviour, acceptor.clone(), log.clone()))
        }));
    }

    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            guard(running.stop()).await;
        }
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.log.handshakes.lock().unwrap().clone()
    }

    /// The URI of every request, over all runs.
    fn seen(&self) -> Vec<String> {
        self.log.seen.lock().unwrap().clone()
    }
}

async fn connection(
    mut stream: TcpStream,
    behaviour: Behaviour,
    acceptor: TlsAcceptor,
    log: Arc<Log>,
) {
    let _open = Open::new(&log.open);
    log.accepts.send_modify(|n| *n += 1);
    let proto = match behaviour {
        Behaviour::Serve(proto) => proto,
        Behaviour::Mute => {
            let mut buf = [0; 1024];
            while let Ok(read @ 1..) = stream.read(&mut buf).await {
                log.mute_read.send_modify(|n| *n += read);
            }
            return;
        }
    };
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(_) => return log.failed.send_modify(|n| *n += 1),
    };
    let (_, session) = tls.get_ref();
    log.handshakes.lock().unwrap().push(Handshake {
        sni: session.server_name().map(str::to_owned),
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    });
    let hello = service_fn(move |req: Request<Incoming>| {
        log.seen.lock().unwrap().push(req.uri().to_string());
        let body = Body::from(format!("hello {}", req.uri().path()));
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    serve_connection(TokioIo::new(tls), proto, true, hello).await;
}
