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

use std::{
    convert::Infallible,
    error::Error,
    net::SocketAddr,
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
    Backoff, ConnectionWatch, ReconnectLayer,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::oneshot,
    task::{JoinHandle, JoinSet},
    time::{interval, sleep_until, timeout, Instant, MissedTickBehavior},
};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::EnvFilter;

type Body = Full<Bytes>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let clock = Clock(Instant::now());
    let end = clock.0 + Duration::from_secs(6);

    let mut server = Server::start(([127, 0, 0, 1], 0).into())?;
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
        .map(|(name, watch)| tokio::spawn(print_changes(name, watch.clone(), clock)))
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

    sleep_until(clock.0 + Duration::from_secs(2)).await;
    server.stop().await;
    clock.say("--- server stopped ---");
    sleep_until(clock.0 + Duration::from_secs(4)).await;
    server.restart()?;
    clock.say(format!("--- server restarted on {} ---", server.addr));

    let mut tallies = Vec::new();
    for client in clients {
        tallies.push(client.await?);
    }
    // The clients are dropped: each watch shows `closed`, and its printer ends.
    for printer in printers {
        printer.await?;
    }
    for ((name, watch), tally) in watches.iter().zip(tallies) {
        let state = watch.state();
        println!(
            "{name}: {} ok, {} failed fast, {} other errors; {} connects, {} disconnects (the last when the client was dropped)",
            tally.ok,
            tally.failed_fast,
            tally.other,
            state.connects(),
            state.disconnects(),
        );
    }
    println!(
        "server: {} requests answered",
        server.answered.load(Ordering::Relaxed)
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed_fast: usize,
    other: usize,
}

/// Sends `GET /<name>/<n>` every 250 ms until `end`, printing each result.
async fn send_until<S>(name: &str, mut client: S, end: Instant, clock: Clock) -> Tally
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    let mut tally = Tally::default();
    let mut ticks = interval(Duration::from_millis(250));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for n in 1.. {
        ticks.tick().await;
        if Instant::now() >= end {
            break;
        }
        let path = format!("/{name}/{n}");
        let sent = Instant::now();
        // A wait-for-ready request waits out the outage; bound it anyway.
        let result = timeout(Duration::from_secs(5), get(&mut client, &path)).await;
        let took = sent.elapsed();
        match result {
            Ok(Ok(body)) => {
                tally.ok += 1;
                clock.say(format!("{name} GET {path}: {body:?} ({took:.0?})"));
            }
            Ok(Err(err)) if err.is::<Unavailable>() => {
                tally.failed_fast += 1;
                clock.say(format!("{name} GET {path}: failed fast: {}", chain(&*err)));
            }
            Ok(Err(err)) => {
                tally.other += 1;
                clock.say(format!("{name} GET {path}: error: {}", chain(&*err)));
            }
            Err(_) => {
                tally.other += 1;
                clock.say(format!("{name} GET {path}: no answer in 5 s"));
            }
        }
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

/// Prints every change the watch reports, until the client is dropped.
async fn print_changes(name: &str, watch: ConnectionWatch, clock: Clock) {
    let mut states = watch.subscribe();
    loop {
        let state = states.borrow_and_update().clone();
        let mut line = format!(
            "{name} watch: {} (attempt {})",
            state.phase(),
            state.attempt()
        );
        if let Some(err) = state.last_error() {
            line += &format!(", last error: {}", chain(err));
        }
        clock.say(line);
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// An error and its causes, as `outer: inner: root`.
fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text += &format!(": {cause}");
        next = cause.source();
    }
    text
}

/// Prints lines stamped with the time since the example started.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn say(self, line: impl std::fmt::Display) {
        println!("[{:>5.2}s] {line}", self.0.elapsed().as_secs_f64());
    }
}

// ===== the server =====

/// Answers `hello from <path>` over HTTP/1 or HTTP/2 (prior knowledge). It
/// can stop, closing the listener and every connection, and start again on
/// the same address.
struct Server {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Server {
    fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let mut server = Self {
            addr,
            answered: Arc::default(),
            running: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// Listens on the same address again; SO_REUSEADDR lets the port be
    /// bound at once although the closed connections sit in TIME_WAIT.
    fn restart(&mut self) -> std::io::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(64)?;
        self.addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, stopped, self.answered.clone()));
        self.running = Some((stop, task));
        Ok(())
    }

    /// Stops accepting and closes every connection.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            drop(stop);
            let _ = task.await;
        }
    }
}

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
