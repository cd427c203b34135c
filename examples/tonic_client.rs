//! A tonic generated client over redial, for a gRPC server that goes away
//! and comes back.
//!
//! The example starts tonic's own health service (`tonic_health`) on
//! 127.0.0.1, and builds one generated `HealthClient` over a shared,
//! reconnecting HTTP/2 handle:
//!
//! ```text
//! let shared = ReconnectLayer::new(uri).layer(Http2Connector::new()).spawn(64);
//! let client = HealthClient::new(shared);
//! ```
//!
//! The handle connects at once, notices the server going away with no call
//! in flight, and reconnects in the background; the same client (cloned per
//! call) works again after the restart, with no new client built. While the
//! server is away, calls fail fast: tonic reports redial's `Unavailable` as
//! a `Status` with code `Unknown`, whose source is the `Unavailable`. (With
//! `.wait_for_ready(true)` on the layer they would wait instead.)
//!
//! A task sends a health check every 250 ms and prints each result; another
//! prints every change of the `ConnectionWatch`. The server runs for 2 s, is
//! stopped (closing every connection) for 2 s, then restarts on the same
//! port for 2 s more.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example tonic_client --all-features
//! ```
//!
//! Add `RUST_LOG=redial=debug` to see the crate's own log next to it.

use std::{
    error::Error,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Uri};
use redial::{error::Unavailable, http::Http2Connector, Backoff, ConnectionWatch, ReconnectLayer};
use tokio::{
    net::TcpSocket,
    sync::oneshot,
    task::JoinHandle,
    time::{interval, sleep_until, timeout, Instant, MissedTickBehavior},
};
use tonic::{body::Body, transport::server::TcpIncoming, Status};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::{BoxError, Layer, ServiceBuilder};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let clock = Clock(Instant::now());
    let end = clock.0 + Duration::from_secs(6);

    let mut server = Server::start(([127, 0, 0, 1], 0).into())?;
    let uri: Uri = format!("http://{}", server.addr).parse()?;
    clock.say(format!("health server listening on {uri}"));

    // The whole client: a connector, a layer with the target, a shared
    // handle, and the generated client over it, built once.
    let shared = ReconnectLayer::new(uri)
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::constant(Duration::from_millis(300)))
        .layer(Http2Connector::new())
        .spawn(64);
    let watch = shared.watch();
    let client = HealthClient::new(shared.clone());

    let printer = tokio::spawn(print_changes(watch.clone(), clock));
    let outage = tokio::spawn(async move {
        sleep_until(clock.0 + Duration::from_secs(2)).await;
        server.stop().await;
        clock.say("--- server stopped ---");
        sleep_until(clock.0 + Duration::from_secs(4)).await;
        server.restart()?;
        clock.say(format!("--- server restarted on {} ---", server.addr));
        Ok::<_, std::io::Error>(server)
    });

    // A health check every 250 ms, each through a clone of the one client.
    let mut tally = Tally::default();
    let mut ticks = interval(Duration::from_millis(250));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for n in 1.. {
        ticks.tick().await;
        if Instant::now() >= end {
            break;
        }
        let mut client = client.clone();
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let sent = Instant::now();
        // Failing fast, a call never waits out the outage; bound it anyway.
        let result = timeout(Duration::from_secs(5), client.check(request)).await;
        let took = sent.elapsed();
        match result {
            Ok(Ok(response)) => {
                tally.ok += 1;
                let status = response.into_inner().status();
                clock.say(format!("check {n}: {} ({took:.0?})", status.as_str_name()));
            }
            Ok(Err(status)) if find::<Unavailable>(&status).is_some() => {
                tally.failed_fast += 1;
                clock.say(format!(
                    "check {n}: failed fast ({took:.0?}): {}",
                    describe(&status)
                ));
            }
            Ok(Err(status)) => {
                tally.other += 1;
                clock.say(format!("check {n}: error: {}", describe(&status)));
            }
            Err(_) => {
                tally.other += 1;
                clock.say(format!("check {n}: no answer in 5 s"));
            }
        }
    }

    let mut server = outage.await??;
    // Closing the handle drops the connection: the watch shows `closed`, and
    // the printer ends.
    shared.close();
    printer.await?;
    let state = watch.state();
    println!(
        "summary: {} checks ok, {} failed fast, {} other errors; {} connects, {} disconnects (the last at close); the server answered {}",
        tally.ok,
        tally.failed_fast,
        tally.other,
        state.connects(),
        state.disconnects(),
        server.answered.load(Ordering::Relaxed),
    );
    server.stop().await;
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed_fast: usize,
    other: usize,
}

/// Prints every change the watch reports, until the handle is closed.
async fn print_changes(watch: ConnectionWatch, clock: Clock) {
    let mut states = watch.subscribe();
    loop {
        let state = states.borrow_and_update().clone();
        let mut line = format!("watch: {} (attempt {})", state.phase(), state.attempt());
        if let Some(err) = state.last_error() {
            line += &format!(", last error: {}", chain(err));
        }
        clock.say(line);
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// A status's code, then its source chain: tonic keeps the transport error
/// there.
fn describe(status: &Status) -> String {
    match status.source() {
        Some(source) => format!("{:?}: {}", status.code(), chain(source)),
        None => format!("{:?}: {}", status.code(), status.message()),
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

/// The first error of type `E` in the chain.
fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
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

/// tonic's server with `tonic_health`'s service, which reports `SERVING`.
/// It can stop (closing the listener and, gracefully, every connection) and
/// start again on the same address.
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

        let (_reporter, health) = tonic_health::server::health_reporter();
        let answered = self.answered.clone();
        let service = ServiceBuilder::new()
            .map_request(move |req: Request<Body>| {
                answered.fetch_add(1, Ordering::Relaxed);
                req
            })
            .service(health);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serving = tonic::transport::Server::builder().serve_with_incoming_shutdown(
                service,
                TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            );
            if let Err(err) = serving.await {
                eprintln!("server failed: {err}");
            }
        });
        self.running = Some((stop, task));
        Ok(())
    }

    /// Stops accepting and closes every connection; returns once they are
    /// all closed.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            drop(stop);
            let _ = task.await;
        }
    }
}
