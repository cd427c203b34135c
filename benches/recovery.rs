//! Recovery latency: how soon a client gets an answer once its server is
//! back.
//!
//! Each run binds a socket on 127.0.0.1 without listening, so dials are
//! refused; builds a client and waits until its first attempt has failed;
//! lets the outage last [`OUTAGE`]; then listens on the same socket, serves
//! tonic-health's standard health service there with tonic's server, and
//! times from the moment `listen` returned to the first successful
//! `Health/Check` (tonic-health's generated `HealthClient`). The clients:
//!
//! - `redial, default backoff`: `Reconnect::spawn` over `Http2Connector`
//!   with the defaults; its next scheduled attempt (2 s ± 20 % after the
//!   first) decides, so the table also gives the time from the server's
//!   return to that attempt (`retry_at` on the watch) and the difference;
//! - `redial, default backoff, idle`: the same, but no request is made
//!   during the outage: one call after `watch.connected()`, so the retry
//!   timer alone (not a request) starts the attempt;
//! - `redial + reset_backoff()`: the same client, with `reset_backoff()`
//!   called as soon as the server listens, busy and idle;
//! - `tonic Channel (lazy)`: `Endpoint::connect_lazy`, which dials again on
//!   every request.
//!
//! Except in the idle rows, one caller sends health checks back to back
//! through the outage and until one succeeds, so a client that dials per
//! request (tonic) is measured at its best and the latency has no polling
//! interval in it. Against redial, whose calls fail fast without dialling,
//! that caller spins and keeps both runtime threads busy; the idle rows
//! show redial without it. Each row is [`RUNS`] runs after one discarded warm-up
//! run, on a two-worker runtime on the real clock.
//!
//! Run with `cargo bench --bench recovery --features http` (about a
//! minute); `-- --runs N` changes the number of runs.

use std::{io, time::Duration};

use http::{Request, Uri};
use redial::{http::Http2Connector, ConnectionWatch, Phase, Reconnect, Shared};
use tokio::{
    net::TcpSocket,
    sync::oneshot,
    task::JoinHandle,
    time::{sleep, timeout, Instant},
};
use tonic::{
    body::Body,
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::Service;

/// How long the server stays away after the client's first failed attempt.
const OUTAGE: Duration = Duration::from_millis(100);
/// Runs per row unless `--runs` says otherwise.
const RUNS: usize = 10;
/// Only a hang guard: no run should come near it.
const HANG: Duration = Duration::from_secs(30);

type RedialChannel =
    Shared<Request<Body>, <Reconnect<Http2Connector<Body>, Uri> as Service<Request<Body>>>::Future>;

fn main() {
    let runs = runs_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "recovery: 127.0.0.1, server away {OUTAGE:?} after the first failed attempt; \
         {runs} runs per row after one warm-up; times from listen() to the first answer"
    );
    // On a runtime thread, not on `block_on`'s, as a server's code would
    // be: the server task and `reset_backoff`'s wake-up then start from a
    // runtime thread. From `block_on`'s, the busy reset row was about
    // 0.15 ms slower on a quiet machine.
    let rows = rt.block_on(rt.spawn(async move {
        let mut rows = Vec::new();
        for variant in Variant::ALL {
            once(variant).await.expect("warm-up run");
            let mut samples = Vec::with_capacity(runs);
            for _ in 0..runs {
                samples.push(once(variant).await.expect("run"));
            }
            rows.push((variant, samples));
        }
        rows
    }));
    let rows: Vec<(Variant, Vec<Sample>)> = rows.expect("the runs panicked");
    print_rows(&rows);
}

// ===== one run =====

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    RedialDefault,
    RedialIdle,
    RedialReset,
    RedialResetIdle,
    Tonic,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::RedialDefault,
        Variant::RedialIdle,
        Variant::RedialReset,
        Variant::RedialResetIdle,
        Variant::Tonic,
    ];

    /// Whether the caller waits on the watch instead of calling through
    /// the outage.
    fn idle(self) -> bool {
        matches!(self, Variant::RedialIdle | Variant::RedialResetIdle)
    }

    fn name(self) -> &'static str {
        match self {
            Variant::RedialDefault => "redial, default backoff",
            Variant::RedialIdle => "redial, default backoff, idle",
            Variant::RedialReset => "redial + reset_backoff()",
            Variant::RedialResetIdle => "redial + reset_backoff(), idle",
            Variant::Tonic => "tonic Channel (lazy)",
        }
    }
}

/// What one run measured.
struct Sample {
    /// From `listen` returning to the first successful answer.
    latency: Duration,
    /// From `listen` returning to redial's next scheduled attempt, as the
    /// watch gave it then.
    scheduled: Option<Duration>,
    /// From `listen` returning to the watch showing `Connected` (redial).
    connected: Option<Duration>,
    /// Calls the caller made, the successful one included.
    calls: u64,
}

async fn once(variant: Variant) -> io::Result<Sample> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    let addr = socket.local_addr()?;
    let uri: Uri = format!("http://{addr}").parse().expect("uri");

    // A client whose first attempt has failed.
    let (client, shared) = match variant {
        Variant::Tonic => {
            let mut client = Client::Tonic(HealthClient::new(Endpoint::from(uri).connect_lazy()));
            assert!(
                !client.check().await,
                "a call succeeded with the server away"
            );
            (client, None)
        }
        _ => {
            let shared = Reconnect::new(Http2Connector::new(), uri).spawn(1024);
            let mut states = shared.watch().subscribe();
            guard(states.wait_for(|s| s.phase() == Phase::Disconnected))
                .await
                .expect("the watch closed");
            (
                Client::Redial(HealthClient::new(shared.clone())),
                Some(shared),
            )
        }
    };
    let watch = shared.as_ref().map(Shared::watch);

    let caller = match &watch {
        Some(watch) if variant.idle() => tokio::spawn(idle_caller(client, watch.clone())),
        _ => tokio::spawn(busy_caller(client)),
    };
    // Waiting before the server is back, so it sees the change at once.
    let connected = watch.clone().map(|watch| {
        tokio::spawn(async move {
            watch.connected().await.expect("closed");
            Instant::now()
        })
    });
    sleep(OUTAGE).await;

    let listener = socket.listen(1024)?;
    let back = Instant::now();
    let scheduled = watch
        .as_ref()
        .and_then(|w| w.state().retry_at())
        .map(|at| at.saturating_duration_since(back));
    if let (Variant::RedialReset | Variant::RedialResetIdle, Some(shared)) = (variant, &shared) {
        shared.reset_backoff();
    }
    let server = serve(listener);

    let (answered, calls) = guard(caller).await.expect("the caller panicked");
    let latency = answered - back;
    let connected = match connected {
        Some(task) => Some(guard(task).await.expect("panicked") - back),
        None => None,
    };
    server.stop().await;
    Ok(Sample {
        latency,
        scheduled,
        connected,
        calls,
    })
}

/// Calls back to back until a call succeeds; when it was answered, and
/// how many calls it took.
async fn busy_caller(mut client: Client) -> (Instant, u64) {
    let mut calls = 0;
    loop {
        calls += 1;
        if client.check().await {
            return (Instant::now(), calls);
        }
    }
}

/// Waits for the watch to show the connection, then calls.
async fn idle_caller(mut client: Client, watch: ConnectionWatch) -> (Instant, u64) {
    let mut calls = 0;
    loop {
        watch.connected().await.expect("closed");
        calls += 1;
        if client.check().await {
            return (Instant::now(), calls);
        }
    }
}

/// A health client over tonic's channel or redial's handle.
enum Client {
    Tonic(HealthClient<Channel>),
    Redial(HealthClient<RedialChannel>),
}

impl Client {
    /// One health check; whether it succeeded.
    async fn check(&mut self) -> bool {
        let request = HealthCheckRequest::default();
        match self {
            Client::Tonic(c) => c.check(request).await.is_ok(),
            Client::Redial(c) => c.check(request).await.is_ok(),
        }
    }
}

// ===== the server =====

/// tonic's server with tonic-health's service (reporting `Serving`) on
/// `listener`, until stopped.
///
/// With `TCP_NODELAY`, as tonic's `Server::serve` sets by default: a
/// `TcpIncoming` made from a listener leaves it off, and then Nagle's
/// algorithm against the client's delayed ACK added 40 ms to many first
/// answers on a fresh connection, depending on how the writes fell: the
/// table would have measured the server's socket option, not the client.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn serve(listener: tokio::net::TcpListener) -> Running {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Server::builder()
            .serve_with_incoming_shutdown(
                health,
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("the health server failed");
    });
    Running { stop, task }
}

impl Running {
    /// Stops accepting and closes every connection.
    async fn stop(self) {
        drop(self.stop);
        guard(self.task).await.expect("the health server panicked");
    }
}

// ===== printing =====

fn print_rows(rows: &[(Variant, Vec<Sample>)]) {
    println!(
        "| {:<30} | {:>4} | {:>11} | {:>11} | {:>11} | {:>12} | {:>13} | {:>15} | {:>9} |",
        "client", "runs", "median", "min", "max", "scheduled", "over ms", "connected ms", "calls",
    );
    println!(
        "|{:-<32}|{:-<6}|{:-<13}|{:-<13}|{:-<13}|{:-<14}|{:-<15}|{:-<17}|{:-<11}|",
        "", "", "", "", "", "", "", "", ""
    );
    for (variant, samples) in rows {
        let latencies: Vec<f64> = samples.iter().map(|s| ms(s.latency)).collect();
        let (median, min, max) = summary(&latencies);
        let scheduled: Vec<f64> = samples.iter().filter_map(|s| s.scheduled.map(ms)).collect();
        let over: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.scheduled.map(|at| ms(s.latency) - ms(at)))
            .collect();
        // Connected: counted from the scheduled attempt where it decides.
        let connected: Vec<f64> = samples
            .iter()
            .filter_map(|s| {
                let connected = ms(s.connected?);
                Some(match (variant, s.scheduled) {
                    (Variant::RedialDefault | Variant::RedialIdle, Some(at)) => connected - ms(at),
                    _ => connected,
                })
            })
            .collect();
        // The scheduled attempt decides only where nothing moves it forward.
        let (scheduled, over) = match variant {
            Variant::RedialDefault | Variant::RedialIdle => {
                let (over_median, _, over_max) = summary(&over);
                (
                    format!("{:.3} ms", summary(&scheduled).0),
                    format!("{over_median:.3}/{over_max:.3}"),
                )
            }
            Variant::RedialReset | Variant::RedialResetIdle => {
                (format!("({:.0} ms)", summary(&scheduled).0), "-".into())
            }
            Variant::Tonic => ("-".into(), "-".into()),
        };
        let connected = match summary(&connected) {
            (median, _, max) if median.is_finite() => match variant {
                Variant::RedialDefault | Variant::RedialIdle => format!("+{median:.3}/+{max:.3}"),
                _ => format!("{median:.3}/{max:.3}"),
            },
            _ => "-".into(),
        };
        let calls: Vec<f64> = samples.iter().map(|s| s.calls as f64).collect();
        println!(
            "| {:<30} | {:>4} | {:>8.3} ms | {:>8.3} ms | {:>8.3} ms | {:>12} | {:>13} | {:>15} | {:>9} |",
            variant.name(),
            samples.len(),
            median,
            min,
            max,
            scheduled,
            over,
            connected,
            summary(&calls).0,
        );
    }
    println!(
        "all times from listen() returning; scheduled: to redial's next attempt as the watch \
         gave it then (for the reset row, the one reset_backoff() replaced); over: latency minus \
         scheduled, per run, median/max; connected: to the watch showing Connected, median/max, \
         counted from the scheduled attempt where it has a +; calls: the caller's calls until one \
         succeeded (median)"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, minimum and maximum.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// Fails the run instead of hanging.
async fn guard<F: std::future::Future>(fut: F) -> F::Output {
    timeout(HANG, fut).await.expect("timed out: a client hung")
}

/// `--runs N` sets the runs per row; cargo's own `--bench` is ignored.
fn runs_from_args() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse().expect("--runs takes a whole number"))
        .unwrap_or(RUNS)
}
