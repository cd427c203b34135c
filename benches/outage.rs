//! Outage cost: what a client does to a peer that is down.
//!
//! The peer is a closed port on 127.0.0.1 (a socket bound but not
//! listening), so every dial is refused at once. 100 callers each call the
//! standard gRPC health check (tonic-health's generated `HealthClient`) every
//! 10 ms for the whole window, through three clients that share one
//! connection between them, and a floor:
//!
//! - `floor: fails at once`: no client, a channel that fails every call at
//!   once: what the callers themselves cost;
//! - `tower Buffer<Reconnect>`: `tower::buffer::Buffer` over
//!   `tower::reconnect::Reconnect` over redial's `Http2Connector`;
//! - `tonic Channel (lazy)`: `Endpoint::connect_with_connector_lazy`;
//! - `redial (defaults)`: `Reconnect::spawn(1024)` over `Http2Connector`,
//!   default settings.
//!
//! Each dials through the same counting wrapper around hyper-util's
//! `HttpConnector`, so "attempts" are TCP dials, counted the same way for
//! all three. CPU time is the process's (user + system, from `/proc/self/stat`), from
//! building the client to the last caller's return; each client runs on a
//! fresh current-thread runtime, so no two runs overlap.
//!
//! The first table runs on a paused tokio clock, 60 s of virtual time: the
//! counts are exact (every caller makes its 6,000 calls) and the run is
//! short. A paused clock jumps ahead whenever the runtime has nothing to
//! run, which would skew a client that waits on a dial; on loopback a
//! refused dial is over at once, and the `requests` column shows it: the
//! tower and tonic rows make every request they are offered. The same table
//! runs redial with 1, 10 and 1,000 callers too: its attempt count must not
//! move. The second table runs the floor and the three clients on the real
//! clock, for the CPU time a real process burns in a real minute.
//!
//! Run with `cargo bench --bench outage --features http` (about five
//! minutes); `-- --secs 20` shortens the real-clock window, `-- --secs
//! 0` skips it.

use std::{
    future::{ready, Ready},
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use redial::{http::Http2Connector, Backoff, ConnectionWatch, Reconnect, Shared};
use tokio::{
    net::TcpSocket,
    runtime::{Builder, Runtime},
    task::JoinSet,
    time::{interval_at, Instant, MissedTickBehavior},
};
use tonic::{
    body::Body,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::{buffer::Buffer, BoxError, Service};

/// How often each caller sends a request.
const PERIOD: Duration = Duration::from_millis(10);
/// The queue of every shared client: tonic's default.
const BOUND: usize = 1024;
/// The real-clock window unless `--secs` says otherwise.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The callers of the side-by-side table.
const CALLERS: usize = 100;
/// The other callers redial runs with on the paused clock.
const SWEEP: [usize; 3] = [1, 10, 1000];

/// The future of tower's reconnect over redial's HTTP/2 connector.
type TowerFuture = <tower::reconnect::Reconnect<Http2Connector<Body, Counting>, Uri> as Service<
    Request<Body>,
>>::Future;
type RedialChannel = Shared<
    Request<Body>,
    <Reconnect<Http2Connector<Body, Counting>, Uri> as Service<Request<Body>>>::Future,
>;

fn main() {
    let window = window_from_args();
    // Held to the end: the port stays taken, so every dial is refused.
    let (closed, addr) = closed_port().expect("bind a closed port on 127.0.0.1");
    let uri: Uri = format!("http://{addr}").parse().expect("uri");

    println!(
        "outage: {addr} refuses every dial; each caller makes one health check every {PERIOD:?}"
    );
    println!();
    println!(
        "paused clock, {} s of virtual time, current-thread runtime",
        DEFAULT_WINDOW.as_secs()
    );
    let paused: Vec<Row> = Kind::ALL
        .iter()
        .map(|&kind| (kind, CALLERS))
        .chain(SWEEP.iter().map(|&callers| (Kind::Redial, callers)))
        .map(|(kind, callers)| run(kind, &uri, callers, DEFAULT_WINDOW, true))
        .collect();
    print_rows(&paused, DEFAULT_WINDOW);

    if !window.is_zero() {
        println!();
        println!(
            "real clock, {} s per client, current-thread runtime",
            window.as_secs()
        );
        let real: Vec<Row> = Kind::ALL
            .iter()
            .map(|&kind| run(kind, &uri, CALLERS, window, false))
            .collect();
        print_rows(&real, window);
    }

    println!();
    let (nominal, most) = schedule(DEFAULT_WINDOW);
    println!(
        "redial's default schedule makes {nominal} attempts in {} s, the first included \
         (at most {most} with every delay at its shortest, -20 % jitter)",
        DEFAULT_WINDOW.as_secs()
    );
    if !window.is_zero() && window != DEFAULT_WINDOW {
        let (nominal, most) = schedule(window);
        println!("and {nominal} (at most {most}) in {} s", window.as_secs());
    }
    drop(closed);
}

// ===== the experiment =====

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// No client: a channel that fails every call at once, never dialling.
    /// What the callers themselves cost (timers, tasks, the generated
    /// client's encoding), for the others to be read against.
    Floor,
    Tower,
    Tonic,
    Redial,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Floor, Kind::Tower, Kind::Tonic, Kind::Redial];

    fn name(self) -> &'static str {
        match self {
            Kind::Floor => "floor: fails at once",
            Kind::Tower => "tower Buffer<Reconnect>",
            Kind::Tonic => "tonic Channel (lazy)",
            Kind::Redial => "redial (defaults)",
        }
    }
}

/// One client under one outage.
struct Row {
    kind: Kind,
    paused: bool,
    callers: usize,
    requests: u64,
    succeeded: u64,
    attempts: u64,
    /// redial's own count of its attempts, from the watch.
    watched: Option<u32>,
    cpu: Duration,
    wall: Duration,
}

/// Builds `kind` on a fresh runtime, runs `callers` for `window`, and counts.
fn run(kind: Kind, uri: &Uri, callers: usize, window: Duration, paused: bool) -> Row {
    let rt = runtime(paused);
    let dials = Arc::new(AtomicU64::new(0));
    let connector = Counting::new(dials.clone());
    // Outside a runtime, tokio's clock is the real one, paused or not inside.
    let wall = Instant::now();
    let cpu = cpu_time();
    let (requests, succeeded, watched) = rt.block_on(async {
        let (client, watch) = Client::build(kind, uri.clone(), connector);
        let (requests, succeeded) = callers_for(&client, callers, window).await;
        let watched = watch.map(|w| w.state().attempt());
        (requests, succeeded, watched)
    });
    let cpu = cpu_time() - cpu;
    let wall = wall.elapsed();
    drop(rt);
    Row {
        kind,
        paused,
        callers,
        requests,
        succeeded,
        attempts: dials.load(Ordering::SeqCst),
        watched,
        cpu,
        wall,
    }
}

/// `callers` tasks, each sending a health check every [`PERIOD`] until the
/// window closes; the requests made and how many succeeded.
async fn callers_for(client: &Client, callers: usize, window: Duration) -> (u64, u64) {
    let start = Instant::now();
    let until = start + window;
    let mut tasks = JoinSet::new();
    for _ in 0..callers {
        let mut client = client.clone();
        tasks.spawn(async move {
            // Every caller on the same grid: `window / PERIOD` ticks each.
            let mut tick = interval_at(start, PERIOD);
            // A caller whose call ran late skips the ticks it missed rather
            // than bursting to catch up.
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let (mut requests, mut succeeded) = (0, 0);
            while tick.tick().await < until {
                requests += 1;
                succeeded += u64::from(client.check().await);
            }
            (requests, succeeded)
        });
    }
    let (mut requests, mut succeeded) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (r, s) = done.expect("a caller panicked");
        requests += r;
        succeeded += s;
    }
    (requests, succeeded)
}

fn runtime(paused: bool) -> Runtime {
    let mut builder = Builder::new_current_thread();
    builder.enable_all();
    if paused {
        builder.start_paused(true);
    }
    builder.build().expect("tokio runtime")
}

/// A socket bound to 127.0.0.1 that never listens: every dial to it is
/// refused at once, and no other socket can take the port while it is held.
fn closed_port() -> io::Result<(TcpSocket, SocketAddr)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

// ===== the three clients =====

/// A health client over one of the three channels.
#[derive(Clone)]
enum Client {
    Floor(HealthClient<FailAtOnce>),
    Tower(HealthClient<TowerChannel>),
    Tonic(HealthClient<Channel>),
    Redial(HealthClient<RedialChannel>),
}

impl Client {
    /// The client of `kind` for `uri`, dialling through `connector`, and
    /// redial's watch.
    fn build(kind: Kind, uri: Uri, connector: Counting) -> (Self, Option<ConnectionWatch>) {
        match kind {
            Kind::Floor => (Client::Floor(HealthClient::new(FailAtOnce)), None),
            Kind::Tower => {
                let make = Http2Connector::with_connector(connector);
                let reconnect = tower::reconnect::Reconnect::new(make, uri);
                let buffer = TowerChannel(Buffer::new(reconnect, BOUND));
                (Client::Tower(HealthClient::new(buffer)), None)
            }
            Kind::Tonic => {
                let channel = Endpoint::from(uri).connect_with_connector_lazy(connector);
                (Client::Tonic(HealthClient::new(channel)), None)
            }
            Kind::Redial => {
                let make = Http2Connector::with_connector(connector);
                let shared = Reconnect::new(make, uri).spawn(BOUND);
                let watch = shared.watch();
                (Client::Redial(HealthClient::new(shared)), Some(watch))
            }
        }
    }

    /// One health check; whether it succeeded.
    async fn check(&mut self) -> bool {
        let request = HealthCheckRequest::default();
        match self {
            Client::Floor(c) => c.check(request).await.is_ok(),
            Client::Tower(c) => c.check(request).await.is_ok(),
            Client::Tonic(c) => c.check(request).await.is_ok(),
            Client::Redial(c) => c.check(request).await.is_ok(),
        }
    }
}

/// `Buffer<Reconnect>` under a name: with `Buffer`'s generic `Service` impl,
/// rustc cannot prove the spawned callers `Send` (a higher-ranked
/// `From<BoxError>` bound); spelled out here, it can. Adds nothing at run
/// time.
#[derive(Clone)]
struct TowerChannel(Buffer<Request<Body>, TowerFuture>);

impl Service<Request<Body>> for TowerChannel {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = tower::buffer::future::ResponseFuture<TowerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.0.call(request)
    }
}

/// A channel whose every call fails at once.
#[derive(Clone, Copy)]
struct FailAtOnce;

impl Service<Request<Body>> for FailAtOnce {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()))
    }
}

/// hyper-util's `HttpConnector`, set up as tonic's `Endpoint` sets up its
/// own (`TCP_NODELAY`, any scheme), counting every dial.
#[derive(Clone)]
struct Counting {
    inner: HttpConnector,
    dials: Arc<AtomicU64>,
}

impl Counting {
    fn new(dials: Arc<AtomicU64>) -> Self {
        let mut inner = HttpConnector::new();
        inner.enforce_http(false);
        inner.set_nodelay(true);
        Self { inner, dials }
    }
}

impl Service<Uri> for Counting {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = <HttpConnector as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.dials.fetch_add(1, Ordering::Relaxed);
        self.inner.call(uri)
    }
}

// ===== measuring and printing =====

/// The process's CPU time so far, user and system, every thread.
fn cpu_time() -> Duration {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks
    // (100 per second on Linux): no `unsafe` needed, 10 ms resolution.
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_comm = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// How many attempts the default schedule makes in `window` after the
/// first, nominally and at most (every delay at its shortest, -20 %).
fn schedule(window: Duration) -> (usize, usize) {
    let count = |scale: f64| {
        let nominal = Backoff::default().jitter(0.0);
        let mut at = Duration::ZERO;
        let mut attempts = 1;
        for delay in nominal.iter() {
            at += delay.mul_f64(scale);
            if at > window {
                break;
            }
            attempts += 1;
        }
        attempts
    };
    (count(1.0), count(0.8))
}

fn print_rows(rows: &[Row], window: Duration) {
    println!(
        "| {:<24} | {:<6} | {:>7} | {:>9} | {:>8} | {:>10} | {:>9} | {:>12} | {:>8} |",
        "client",
        "clock",
        "callers",
        "requests",
        "attempts",
        "attempts/s",
        "CPU time",
        "CPU/request",
        "wall",
    );
    println!(
        "|{:-<26}|{:-<8}|{:-<9}|{:-<11}|{:-<10}|{:-<12}|{:-<11}|{:-<14}|{:-<10}|",
        "", "", "", "", "", "", "", "", ""
    );
    for row in rows {
        let per_request = row.cpu.as_secs_f64() / row.requests.max(1) as f64;
        println!(
            "| {:<24} | {:<6} | {:>7} | {:>9} | {:>8} | {:>10.1} | {:>7.3} s | {:>9.2} µs | {:>6.1} s |",
            row.kind.name(),
            if row.paused { "paused" } else { "real" },
            row.callers,
            row.requests,
            row.attempts,
            row.attempts as f64 / window.as_secs_f64(),
            row.cpu.as_secs_f64(),
            per_request * 1e6,
            row.wall.as_secs_f64(),
        );
        let offered = row.callers as u64 * (window.as_millis() / PERIOD.as_millis()) as u64;
        if row.requests < offered {
            println!(
                "  note: {} of the {offered} requests offered were made: calls ran late",
                row.requests
            );
        }
        if row.succeeded > 0 {
            println!(
                "  warning: {} requests succeeded against a closed port",
                row.succeeded
            );
        }
        if let Some(watched) = row.watched {
            if u64::from(watched) != row.attempts {
                println!(
                    "  note: the watch counted {watched} attempts, the connector {}",
                    row.attempts
                );
            }
        }
    }
}

/// `--secs N` sets the real-clock window; cargo's own `--bench` is ignored.
fn window_from_args() -> Duration {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map(|s| Duration::from_secs(s.parse().expect("--secs takes a whole number")))
        .unwrap_or(DEFAULT_WINDOW)
}
