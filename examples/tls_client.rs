//! Reconnecting HTTPS clients (feature `tls`), over HTTP/2 and HTTP/1, for
//! a TLS server that goes away and comes back, and one that does not trust
//! the server's certificate.
//!
//! The example makes a certificate authority and a server certificate for
//! `localhost` at run time (rcgen), starts a hello-world TLS server on
//! 127.0.0.1 (tokio-rustls and hyper, HTTP/2 or HTTP/1 as ALPN chose), and
//! three shared clients of `https://localhost:<port>`:
//!
//! ```text
//! let h2: SharedHttp2<Body> = layer.layer(Http2Connector::new().tls(config)).spawn(64);
//! ```
//!
//! - `h2` and `http1` trust the CA: they send a request every 200 ms, fail
//!   fast while the server is away, and reconnect by themselves (TLS
//!   handshake included) when it is back;
//! - `untrusted` trusts another CA: every attempt fails with the handshake's
//!   error (rustls's `UnknownIssuer`, in the error's source chain), retried
//!   on the backoff schedule, and its one request fails fast with that cause.
//!
//! A task per client prints every change of its `ConnectionWatch`. The
//! server runs for 1 s, is stopped (closing every connection) for 1 s, then
//! restarts on the same port for 1 s more.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example tls_client --all-features
//! ```
//!
//! Add `RUST_LOG=redial=debug` to see the crate's own log next to it.

#[path = "common/report.rs"]
mod report;
#[path = "common/server.rs"]
mod server;
#[path = "common/tls.rs"]
mod tls;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use redial::{
    error::Unavailable,
    http::{Http1Connector, Http2Connector, SharedHttp2},
    Backoff, ReconnectLayer,
};
use report::{chain, connects, print_changes, timed, Clock, Outcome, Tally, Ticks};
use server::Server;
use tls::TestCa;
use tokio::{net::TcpListener, sync::oneshot, task::JoinSet, time::Instant};
use tokio_rustls::TlsAcceptor;
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let clock = report::start();
    let end = clock.0 + Duration::from_secs(3);

    let ca = TestCa::new()?;
    let acceptor = TlsAcceptor::from(ca.server_config(&[b"h2", b"http/1.1"])?);
    let mut server = Server::start(
        ([127, 0, 0, 1], 0).into(),
        move |listener, stop, answered| {
            tokio::spawn(serve(listener, acceptor.clone(), stop, answered))
        },
    )?;
    let uri: Uri = format!("https://localhost:{}", server.addr.port()).parse()?;
    clock.say(format!("TLS server listening on {uri}"));

    // The whole client: a layer with the target, a connector with TLS, a
    // task. Both protocols' handles have one type.
    let layer = ReconnectLayer::new(uri)
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::constant(Duration::from_millis(300)));
    let h2: SharedHttp2<Body> = layer
        .layer(Http2Connector::new().tls(ca.client_config()?))
        .spawn(64);
    let http1: SharedHttp2<Body> = layer
        .layer(Http1Connector::new().tls(ca.client_config()?))
        .spawn(64);
    let other_ca = TestCa::new()?;
    let untrusted: SharedHttp2<Body> = layer
        .layer(Http2Connector::new().tls(other_ca.client_config()?))
        .spawn(64);

    let clients = [("h2", h2), ("http1", http1), ("untrusted", untrusted)];
    let printers: Vec<_> = clients
        .iter()
        .map(|(name, client)| {
            let label = format!("{name} watch");
            tokio::spawn(print_changes(label, client.watch(), clock, false))
        })
        .collect();

    // The untrusted client's first attempt fails during the handshake; a
    // request then fails fast, with the handshake's error as its cause.
    let [h2, http1, untrusted] = clients.map(|(_, client)| client);
    let mut states = untrusted.watch().subscribe();
    states
        .wait_for(|state| state.last_error().is_some())
        .await?;
    match get(&mut untrusted.clone(), "/untrusted").await {
        Ok(body) => clock.say(format!("untrusted GET: {body:?}, not expected")),
        Err(err) => clock.say(format!("untrusted GET failed: {}", chain(&*err))),
    }

    let senders = [
        tokio::spawn(send_until("h2", h2.clone(), end, clock)),
        tokio::spawn(send_until("http1", http1.clone(), end, clock)),
    ];
    server
        .outage(clock, Duration::from_secs(1), Duration::from_secs(2))
        .await?;
    let mut tallies = Vec::new();
    for sender in senders {
        tallies.push(sender.await?);
    }

    let states = [h2.watch().state(), http1.watch().state()];
    let untrusted_state = untrusted.watch().state();
    for client in [&h2, &http1, &untrusted] {
        client.close();
    }
    // Each watch shows `closed`, and its printer ends.
    for printer in printers {
        printer.await?;
    }
    for ((name, state), tally) in ["h2", "http1"].iter().zip(states).zip(tallies) {
        println!("{name}: {}; {}", tally.counts("ok"), connects(&state));
    }
    println!(
        "untrusted: {} attempts, none connected",
        untrusted_state.attempt()
    );
    println!("server: {} requests answered", server.answered());
    Ok(())
}

/// Sends `GET /<name>/<n>` every 200 ms until `end`, printing each result.
async fn send_until(
    name: &str,
    mut client: SharedHttp2<Body>,
    end: Instant,
    clock: Clock,
) -> Tally {
    let mut tally = Tally::default();
    let mut ticks = Ticks::until(end, Duration::from_millis(200));
    while let Some(n) = ticks.next().await {
        let path = format!("/{name}/{n}");
        let (result, took) = timed(get(&mut client, &path)).await;
        let (outcome, line) = match result {
            Some(Ok(body)) => (Outcome::Ok, format!("{body:?} ({took:.0?})")),
            Some(Err(err)) if err.is::<Unavailable>() => (
                Outcome::FailedFast,
                format!("failed fast: {}", chain(&*err)),
            ),
            Some(Err(err)) => (Outcome::Other, format!("error: {}", chain(&*err))),
            None => (Outcome::Other, "no answer in 5 s".into()),
        };
        tally.record(clock, outcome, format!("{name} GET {path}: {line}"));
    }
    tally
}

async fn get<S>(client: &mut S, path: &str) -> Result<String, BoxError>
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    let req = Request::get(path).body(Body::default())?;
    let res = client.ready().await?.call(req).await?;
    let version = res.version();
    let body = res.into_body().collect().await?.to_bytes();
    Ok(format!("{} ({version:?})", String::from_utf8_lossy(&body)))
}

// ===== the server =====

/// Accepts TLS on `listener` and answers `hello from <path>` over HTTP/2 or
/// HTTP/1 until `stop`, then closes the listener and every connection.
async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut stop: oneshot::Receiver<()>,
    answered: Arc<AtomicUsize>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (acceptor, answered) = (acceptor.clone(), answered.clone());
                conns.spawn(async move {
                    // A client that does not trust the certificate ends
                    // the handshake here.
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let hello = service_fn(move |req: Request<Incoming>| {
                        answered.fetch_add(1, Ordering::Relaxed);
                        let body = Body::from(format!("hello from {}", req.uri().path()));
                        async move { Ok::<_, Infallible>(Response::new(body)) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(tls), hello).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    conns.shutdown().await;
}
