#![cfg(feature = "tls")]
//! `redial::http` over TLS against real TLS servers on 127.0.0.1
//! (tokio-rustls's server side under hyper, `support/tls.rs`) with
//! certificates from a CA made at run time: a reconnecting client through a
//! restart over HTTP/1 and HTTP/2, ALPN and the server name, a certificate
//! the client does not trust, a server that never answers the handshake,
//! and targets whose scheme does not fit the connector.
//!
//! Real sockets need the real clock, so every wait there is on an event
//! (the watch, a handshake or a close the server saw), and the timeouts only
//! keep a broken build from hanging. The retry schedule is checked to the
//! millisecond on a paused clock, over in-memory connections to the same
//! TLS server code.
mod support;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
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
    server::Proto,
    tls::{Behaviour, Handshake, TestCa, TlsServer},
};
use tokio::{sync::watch, time::Instant};
use tokio_rustls::TlsAcceptor;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

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
/// `ConnectFailed` over `TlsFailed` over rustls's `UnknownIssuer`, for the
/// watch and for a request, and is retried until the schedule ends: 4
/// attempts for 3 delays, each refused by the client during the handshake.
#[tokio::test]
async fn untrusted_certificate_fails_to_connect_until_the_schedule_ends() {
    support::trace_init();
    let ca = TestCa::new().unwrap();
    let server = TlsServer::start(&ca, Behaviour::Serve(Proto::Http2), &[b"h2"]);
    let other_ca = TestCa::new().unwrap();
    let delays = [30, 60, 90].map(Duration::from_millis);

    // The dialler notes when each attempt starts (to report, not to check:
    // the check is on the paused clock below).
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
    println!("untrusted certificate, real clock: dial gaps {gaps:?} for delays {delays:?}");
    assert_eq!(dials.len(), 4);
    // The server saw each handshake refused by the client, and no request.
    guard(until(&server.log.failed, |n| n >= 4)).await;
    assert_eq!(
        *server.log.failed.borrow(),
        4,
        "one refused handshake per dial"
    );
    guard(until(&server.log.open, |n| n == 0)).await;
    assert!(server.seen().is_empty() && server.handshakes().is_empty());
}

/// On a paused clock, over in-memory connections to a TLS server: the
/// attempts against an untrusted certificate start exactly on the schedule,
/// each delay counted from the start of the attempt before, then give up.
#[tokio::test(start_paused = true)]
async fn untrusted_certificate_attempts_keep_to_the_schedule_exactly() {
    let ca = TestCa::new().unwrap();
    let acceptor = TlsAcceptor::from(ca.server_config(&[b"h2"]).unwrap());
    let refused = Arc::new(watch::Sender::new(0));
    let dials = Arc::new(Mutex::new(Vec::new()));
    let (noted, counted) = (dials.clone(), refused.clone());
    let dial = service_fn(move |_: Uri| {
        noted.lock().unwrap().push(Instant::now());
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (acceptor, counted) = (acceptor.clone(), counted.clone());
        tokio::spawn(async move {
            if acceptor.accept(server).await.is_err() {
                counted.send_modify(|n| *n += 1);
            }
        });
        async move { Ok::<_, Infallible>(TokioIo::new(client)) }
    });
    let delays = [1000, 3000, 500].map(Duration::from_millis);
    let config = TestCa::new().unwrap().client_config().unwrap();
    let client: SharedHttp2<Body> = ReconnectLayer::new("https://localhost/".parse().unwrap())
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::from_delays(delays.into_iter()))
        .layer(Http2Connector::with_connector(dial).tls(config))
        .spawn(8);

    let mut states = client.watch().subscribe();
    let state = states.wait_for(|s| s.is_closed()).await.unwrap().clone();
    assert_untrusted(find::<GaveUp>(state.last_error().unwrap()).unwrap());
    let dials = dials.lock().unwrap().clone();
    let gaps: Vec<_> = dials.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, delays);
    // Paused clock, in-memory sockets: nothing here can hang on the network.
    until(&refused, |n| n >= 4).await;
    assert_eq!(*refused.borrow(), 4, "one refused handshake per dial");
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
        guard(until(&server.log.open, |n| n == 0)).await;
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

/// Waits until `count` satisfies `done`. A count that only grows is waited
/// for with `>=` and then checked for equality, so an extra one fails the
/// test instead of hanging it.
async fn until(count: &watch::Sender<usize>, done: impl Fn(usize) -> bool) {
    let _ = count.subscribe().wait_for(|&seen| done(seen)).await;
}
