//! Reconnecting hyper clients, over HTTP/1 and HTTP/2, for a server that
//! goes away and comes back.
//!
//! The example starts a hello-world hyper server on 127.0.0.1 (HTTP/1 and
//! HTTP/2 on one port), and two clients built with `redial::http`, each a
//! `Reconnect` under a `tower::buffer::Buffer`:
//!
//! - `http1` fails fast while the server is away: requests get
//!   `Unavailable` at once, without a dial each;
//! - `http2` waits for readiness: requests made while the server is away
//!   wait, and are answered once it is back.
//!
//! Each client sends a request every 250 ms, and a task per client prints
//! every change of its `ConnectionWatch`. The server runs for 2 s, is
//! stopped (closing every connection) for 2 s, then restarts on the same
//! port for 2 s more.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example hyper_client --all-features
//! ```
//!
//! Add `RUST_LOG=redial=debug` to see the crate's own log next to it.

#[path = "common/report.rs"]
mod report;
#[path = "common/server.rs"]
mod server;

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
    http::{Http1Connector, Http2Connector},
    Backoff, ReconnectLayer,
};
use report::{chain, connects, print_changes, timed, Clock, Outcome, Tally, Ticks};
use server::Server;
use tokio::{net::TcpListener, sync::oneshot, task::JoinSet, time::Instant};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let clock = report::start();
    let end = clock.0 + Duration::from_secs(6);

    let mut server = Server::start(([127, 0, 0, 1], 0).into(), |listener, stop, answered| {
        tokio::spawn(serve(listener, stop, answered))
    })?;
    let uri: Uri = format!("http://{}", server.addr).parse()?;
    clock.say(format!("server listening on {uri}"));

    // The whole client: a connector, a layer with the target, a buffer.
    let layer = ReconnectLayer::new(uri)
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::constant(Duration::from_millis(300)));
    let http1 = layer.layer(Http1Connector::new());
    let http2 = layer.wait_for_ready(true).layer(Http2Connector::new());

    let watches = [("http1", http1.watch()), ("http2", http2.watch())];
    let printers: Vec<_> = watches
        .iter()
        .map(|(name, watch)| {
            tokio::spawn(print_changes(
                format!("{name} watch"),
                watch.clone(),
                clock,
                false,
            ))
        })
        .collect();
    let clients = [
        tokio::spawn(send_until(
            "http1",
            ServiceBuilder::new().buffer(64).service(http1),
            end,
            clock,
        )),
        tokio::spawn(send_until(
            "http2",
            ServiceBuilder::new().buffer(64).service(http2),
            end,
            clock,
        )),
    ];

    server
        .outage(clock, Duration::from_secs(2), Duration::from_secs(4))
        .await?;

    let mut tallies = Vec::new();
    for client in clients {
        tallies.push(client.await?);
    }
    // The clients are dropped: each watch shows `closed`, and its printer ends.
    for printer in printers {
        printer.await?;
    }
    for ((name, watch), tally) in watches.iter().zip(tallies) {
        println!(
            "{name}: {}; {} (the last when the client was dropped)",
            tally.counts("ok"),
            connects(&watch.state()),
        );
    }
    println!("server: {} requests answered", server.answered());
    Ok(())
}

/// Sends `GET /<name>/<n>` every 250 ms until `end`, printing each result.
async fn send_until<S>(name: &str, mut client: S, end: Instant, clock: Clock) -> Tally
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    let mut tally = Tally::default();
    let mut ticks = Ticks::until(end, Duration::from_millis(250));
    while let Some(n) = ticks.next().await {
        let path = format!("/{name}/{n}");
        // A wait-for-ready request waits out the outage; bound it anyway.
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

/// Answers `hello from <path>` over HTTP/1 or HTTP/2 (prior knowledge) until
/// `stop`, then closes the listener and every connection.
async fn serve(listener: TcpListener, mut stop: oneshot::Receiver<()>, answered: Arc<AtomicUsize>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let answered = answered.clone();
                let hello = service_fn(move |req: Request<Incoming>| {
                    answered.fetch_add(1, Ordering::Relaxed);
                    let body = Body::from(format!("hello from {}", req.uri().path()));
                    async move { Ok::<_, Infallible>(Response::new(body)) }
                });
                conns.spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(stream), hello).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    conns.shutdown().await;
}
