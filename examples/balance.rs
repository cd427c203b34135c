//! Many endpoints: a `tower::balance::p2c::Balance` over three reconnecting
//! connections, one of whose servers goes away and comes back.
//!
//! The example starts three line servers on 127.0.0.1 (each answers a line
//! with `echo: <line>` and records what it was sent) and one client: a
//! `Balance` over a `tower::discover::ServiceList` of three
//! `redial::Reconnect`s, one per server, each measured by
//! `tower::load::PendingRequests` and the whole under a
//! `tower::buffer::Buffer` so that requests run concurrently. The client sends
//! a request every 10 ms. After 2.5 s server 2 stops; 3 s later it restarts on
//! the same port; 2.5 s after that the example ends. You will see, stamped
//! with the time since the start:
//!
//! - each endpoint's phase changes from its `ConnectionWatch`: server 2's
//!   endpoint going `disconnected` (its immediate reconnect is refused), and
//!   `connected` again within a retry delay of the restart;
//! - at the end of each phase, every endpoint's state: the attempts
//!   server 2's endpoint made during the outage, one every 250 ms;
//! - how many requests each server answered before, during and after the
//!   outage, by the servers' own records: none for server 2 during it, and
//!   no failed request.
//!
//! # Why `wait_for_ready(true)`
//!
//! The balancer places a request only on an endpoint whose `poll_ready` said
//! `Ready`, and keeps the others aside until they are. In the default
//! fail-fast mode a `Disconnected` `Reconnect` is `Ready` (so that `call` can
//! fail at once with `Unavailable`): the balancer would take the dead endpoint
//! for a healthy one and hand it its share of requests, each of which fails.
//! With `wait_for_ready(true)` its `poll_ready` stays `Pending` until it is
//! connected again, so the balancer skips it, not fails it, and the others
//! take the traffic.
//!
//! Two more things to know with a balancer:
//!
//! - `Reconnect` is lazy: it retries when it is polled, and the balancer
//!   polls its endpoints while it has requests to place. Under traffic a
//!   dead endpoint comes back by itself within a retry delay of its server's
//!   return; an idle client does not dial.
//! - An error from `poll_ready` makes the balancer drop the endpoint for
//!   good, and `Reconnect` returns one only once closed, which after
//!   `max_attempts` it would be. With a fixed `ServiceList`, leave
//!   `max_attempts` unset so that an endpoint can always come back.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example balance
//! ```
//!
//! Add `RUST_LOG=redial=debug` to see the crate's own log next to it.

#[path = "common/line.rs"]
mod line;
#[allow(dead_code)] // the balancer's requests are counted by the servers
#[path = "common/report.rs"]
mod report;

use std::time::Duration;

use line::{Dial, LineServer};
use redial::{Backoff, ConnectionState, ConnectionWatch, Phase, ReconnectLayer};
use report::{chain, connects, every, Clock};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::ServiceList,
    load::{CompleteOnResponse, PendingRequests},
    BoxError, Service, ServiceBuilder, ServiceExt,
};

/// The phases of the story, in order, and how long each lasts.
const PHASES: [(&str, Duration); 3] = [
    ("before", Duration::from_millis(2500)),
    ("outage", Duration::from_secs(3)),
    ("after", Duration::from_millis(2500)),
];

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let clock = report::start();

    let mut servers = Vec::new();
    for n in 1..=3 {
        let server = LineServer::start(([127, 0, 0, 1], 0).into())?;
        clock.say(format!("server {n} listening on {}", server.addr()));
        servers.push(server);
    }

    // One reconnecting endpoint per server, keeping each one's watch.
    let mut endpoints = Vec::new();
    let mut watches = Vec::new();
    let mut printers = Vec::new();
    for (n, server) in (1..).zip(&servers) {
        let endpoint = ServiceBuilder::new()
            .layer(
                ReconnectLayer::new(server.addr())
                    .connect_timeout(Duration::from_secs(1))
                    .backoff(Backoff::constant(Duration::from_millis(250)))
                    .wait_for_ready(true),
            )
            .service(Dial::default());
        watches.push(endpoint.watch());
        printers.push(tokio::spawn(print_changes(n, endpoint.watch(), clock)));
        endpoints.push(PendingRequests::new(
            endpoint,
            CompleteOnResponse::default(),
        ));
    }
    let balance = Balance::new(ServiceList::new(endpoints));
    let client = Buffer::new(balance, 64);
    clock.say("client: p2c balancer over 3 endpoints, wait-for-ready, retry every 250 ms");

    let mut failed = 0;
    for (phase, duration) in PHASES {
        match phase {
            "outage" => {
                servers[1].stop().await;
                clock.say("--- server 2 stopped ---");
            }
            "after" => {
                servers[1].restart()?;
                clock.say(format!(
                    "--- server 2 restarted on {} ---",
                    servers[1].addr()
                ));
            }
            _ => {}
        }
        clock.say(format!("{phase}: sending a request every 10 ms"));
        let (sent, errors) = send_for(&client, phase, duration).await;
        for err in &errors {
            clock.say(format!("{phase}: a request failed: {}", chain(&**err)));
        }
        failed += errors.len();
        let counts = counts(&servers, phase);
        clock.say(format!(
            "{phase}: {sent} sent, {} failed; answered by server 1: {}, server 2: {}, server 3: {}",
            errors.len(),
            counts[0],
            counts[1],
            counts[2],
        ));
        for (n, watch) in (1..).zip(&watches) {
            clock.say(format!(
                "{phase}: endpoint {n} {}",
                describe(&watch.state())
            ));
        }
    }

    // Dropping the client closes the endpoints; the watches show `closed`
    // and the printers end.
    drop(client);
    for printer in printers {
        printer.await?;
    }

    println!();
    println!("requests answered, by the servers' own records:");
    println!("            before  outage   after");
    for (n, server) in (1..).zip(&servers) {
        let [before, outage, after] = PHASES.map(|(phase, _)| seen(server, phase));
        println!("  server {n}  {before:>6}  {outage:>6}  {after:>6}");
    }
    println!("failed requests: {failed}");
    Ok(())
}

/// Sends a request every 10 ms for `duration`, each in a task of its own so
/// that a slow one holds up no other; waits for every answer, and returns
/// how many were sent and the errors.
async fn send_for<S>(client: &S, phase: &str, duration: Duration) -> (usize, Vec<BoxError>)
where
    S: Service<String, Response = String, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let deadline = Instant::now() + duration;
    let mut ticks = every(Duration::from_millis(10));
    let mut requests: Vec<JoinHandle<Result<String, BoxError>>> = Vec::new();
    while Instant::now() < deadline {
        ticks.tick().await;
        let line = format!("{phase} {}", requests.len());
        requests.push(tokio::spawn(client.clone().oneshot(line)));
    }
    let sent = requests.len();
    let mut errors = Vec::new();
    for request in requests {
        if let Err(err) = request.await.expect("request task panicked") {
            errors.push(err);
        }
    }
    (sent, errors)
}

/// Prints every phase change of endpoint `n`, until it is closed.
async fn print_changes(n: usize, watch: ConnectionWatch, clock: Clock) {
    let mut states: watch::Receiver<ConnectionState> = watch.subscribe();
    loop {
        let state = states.borrow_and_update().clone();
        clock.say(format!("watch: endpoint {n} {}", describe(&state)));
        if state.phase() == Phase::Closed || states.changed().await.is_err() {
            return;
        }
    }
}

/// A state in a line: phase, attempt, last error, next attempt, counters.
fn describe(state: &ConnectionState) -> String {
    let mut line = format!("{} (attempt {}", state.phase(), state.attempt());
    if let Some(err) = state.last_error() {
        line += &format!(", last error: {}", chain(err));
    }
    if let Some(at) = state.retry_at() {
        let retry_in = at.saturating_duration_since(Instant::now());
        line += &format!(", next attempt in {retry_in:.0?}");
    }
    line += &format!("; {})", connects(state));
    line
}

/// How many of the requests of `phase` each server answered.
fn counts(servers: &[LineServer], phase: &str) -> Vec<usize> {
    servers.iter().map(|server| seen(server, phase)).collect()
}

/// How many of the requests of `phase` the server answered, by its record.
fn seen(server: &LineServer, phase: &str) -> usize {
    let prefix = format!("{phase} ");
    server
        .seen()
        .iter()
        .filter(|line| line.starts_with(&prefix))
        .count()
}
