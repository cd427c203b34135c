//! A reconnecting client for a line server that goes away and comes back.
//!
//! The demo starts a small TCP server on 127.0.0.1 that answers each line
//! with `echo: <line>`, and a client built with `redial::ReconnectLayer`
//! (connect timeout 1 s, backoff 200 ms ×1.6 up to 2 s with jitter). The
//! client sends a request every 250 ms, while a second task prints every
//! change of the `ConnectionWatch`. The server runs for 3 s, is stopped for
//! 5 s, then restarts on the same port for 3 s more. You will see:
//!
//! - requests failing fast with `Unavailable` while the server is down,
//!   without waiting and without a dial per request;
//! - the attempts spreading out on the backoff schedule;
//! - the same client recovering by itself once the server is back.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Add `RUST_LOG=redial=debug` to see the crate's own log next to it.

#[allow(dead_code)] // the demo does not read the lines the server saw
#[path = "common/line.rs"]
mod line;

use std::{
    error::Error,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use line::{LineConn, LineServer};
use redial::{error::Unavailable, Backoff, ConnectionState, ReconnectLayer};
use tokio::{
    net::TcpStream,
    sync::watch,
    time::{interval, Instant, MissedTickBehavior},
};
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let start = Instant::now();
    let clock = Clock(start);

    let mut server = LineServer::start(([127, 0, 0, 1], 0).into())?;
    clock.say(format!("server listening on {}", server.addr()));

    // The make service: one TCP connection per call, counted.
    let attempts = Arc::new(AtomicUsize::new(0));
    let make = service_fn({
        let attempts = attempts.clone();
        move |addr: SocketAddr| {
            attempts.fetch_add(1, Ordering::Relaxed);
            async move { TcpStream::connect(addr).await.map(LineConn::new) }
        }
    });
    let mut client = ServiceBuilder::new()
        .layer(
            ReconnectLayer::new(server.addr())
                .connect_timeout(Duration::from_secs(1))
                .backoff(Backoff::exponential(
                    Duration::from_millis(200),
                    Duration::from_secs(2),
                )),
        )
        .service(make);
    let watch = client.watch();
    let printer = tokio::spawn(print_changes(watch.subscribe(), clock));

    let mut tally = Tally::default();
    send_until(
        &mut client,
        start + Duration::from_secs(3),
        clock,
        &mut tally,
    )
    .await;
    server.stop().await;
    clock.say("--- server stopped ---");
    send_until(
        &mut client,
        start + Duration::from_secs(8),
        clock,
        &mut tally,
    )
    .await;
    server.restart()?;
    clock.say(format!("--- server restarted on {} ---", server.addr()));
    send_until(
        &mut client,
        start + Duration::from_secs(11),
        clock,
        &mut tally,
    )
    .await;

    let state = watch.state();
    drop(client); // the watch shows `closed`, and the printer ends
    printer.await?;
    println!(
        "summary: {} requests ok, {} failed fast, {} other errors, {} connect attempts, {} connects, {} disconnects",
        tally.ok,
        tally.failed_fast,
        tally.other,
        attempts.load(Ordering::Relaxed),
        state.connects(),
        state.disconnects(),
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed_fast: usize,
    other: usize,
}

/// Sends a request every 250 ms until `deadline`, printing each result.
async fn send_until<S>(client: &mut S, deadline: Instant, clock: Clock, tally: &mut Tally)
where
    S: Service<String, Response = String, Error = BoxError>,
{
    let mut ticks = interval(Duration::from_millis(250));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if Instant::now() >= deadline {
            return;
        }
        let line = format!("ping {}", tally.ok + tally.failed_fast + tally.other + 1);
        let result = match client.ready().await {
            Ok(client) => client.call(line.clone()).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(reply) => {
                tally.ok += 1;
                clock.say(format!("{line}: ok, {reply:?}"));
            }
            Err(err) => match err.downcast_ref::<Unavailable>() {
                Some(unavailable) => {
                    tally.failed_fast += 1;
                    let attempt = unavailable.attempt();
                    let why = chain(&*err);
                    clock.say(format!(
                        "{line}: failed fast (Unavailable, attempt {attempt}): {why}"
                    ));
                }
                None => {
                    tally.other += 1;
                    clock.say(format!("{line}: other error: {}", chain(&*err)));
                }
            },
        }
    }
}

/// Prints every change the watch reports, until the client is dropped.
async fn print_changes(mut states: watch::Receiver<ConnectionState>, clock: Clock) {
    loop {
        let state = states.borrow_and_update().clone();
        let mut line = format!("watch: {} (attempt {})", state.phase(), state.attempt());
        if let Some(at) = state.retry_at() {
            let retry_in = at.saturating_duration_since(Instant::now());
            line += &format!(", next attempt in {retry_in:.0?}");
        }
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

/// Prints lines stamped with the time since the demo started.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn say(self, line: impl std::fmt::Display) {
        println!("[{:>5.2}s] {line}", self.0.elapsed().as_secs_f64());
    }
}
