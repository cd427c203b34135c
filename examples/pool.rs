//! A pool of four reconnecting connections to one server, under load, while
//! the server goes away and comes back, and while its connections are
//! replaced as they age; then a pool per replica of a service, under load,
//! while one replica goes away and comes back.
//!
//! The example starts a line server on 127.0.0.1 (it answers a line with
//! `echo: <line>` and records what it was sent) and a client:
//! `ReconnectLayer::new(addr).pool(4)`, in the default fail-fast mode, with
//! `max_connection_age(1 s)`. Eight callers send a request every 10 ms
//! each, through clones of the pool. After 2 s the server stops; 1.5 s
//! later it restarts on the same port; 2.5 s after that the example ends.
//! You will see, stamped with the time since the start:
//!
//! - the pool's one watch (`Connected` while any connection is) going
//!   `disconnected` when the server stops and `connected` again soon after
//!   it is back;
//! - at the end of each phase, every connection's own state: the four
//!   redial one after the other after the restart, each in its own slot of
//!   half the first retry delay, not all at once; and, while the server is
//!   up, connections replaced at their age with no request failing;
//! - how many requests each phase sent, and how they ended: while the
//!   server is away they fail fast with `Unavailable` (no connection is
//!   up), and so do those sent in the moment after it is back, before the
//!   first connection is; before the outage none fails, replacements
//!   included. (In wait-for-ready mode none would fail: they would wait.)
//!
//! Then the second act: two replicas, on 127.0.0.1 and 127.0.0.2 (Linux
//! routes all of 127/8 to loopback), named by a registry
//! (`redial::discover::channel`), each with a pool of two connections
//! (`.pool(2).discover(…)`) under tower's p2c balancer. The second replica
//! stops for 1.5 s and comes back: its share moves to the first while it is
//! away, no request fails, and it takes its share again once back. Each
//! phase prints what each replica answered.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example pool
//! ```
//!
//! Add `RUST_LOG=redial=debug` to see the crate's own log next to it.

#[allow(dead_code)] // the servers' records are not read here
#[path = "common/line.rs"]
mod line;
#[allow(dead_code)] // not every helper is used here
#[path = "common/report.rs"]
mod report;

use std::time::Duration;

use line::{Dial, LineServer};
use redial::{discover, error::Unavailable, Backoff, ConnectionState, ReconnectLayer};
use report::{chain, connects, print_changes, Clock};
use tokio::time::Instant;
use tower::{balance::p2c::Balance, buffer::Buffer, BoxError, Layer, Service, ServiceExt};

/// The phases of the story, in order, and how long each lasts.
const PHASES: [(&str, Duration); 3] = [
    ("before", Duration::from_secs(2)),
    ("outage", Duration::from_millis(1500)),
    ("after", Duration::from_millis(2500)),
];
const CALLERS: usize = 8;

/// The second act's phases.
const REPLICA_PHASES: [(&str, Duration); 3] = [
    ("both up", Duration::from_millis(1500)),
    ("one away", Duration::from_millis(1500)),
    ("both back", Duration::from_millis(1500)),
];

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let clock = report::start();
    let mut server = LineServer::start(([127, 0, 0, 1], 0).into())?;
    clock.say(format!("server listening on {}", server.addr()));

    let pool = ReconnectLayer::new(server.addr())
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(1),
        ))
        .max_connection_age(Duration::from_secs(1))
        .pool(4)
        .layer(Dial::default());
    let printer = tokio::spawn(print_changes("pool", pool.watch(), clock, true));
    pool.watch().connected().await?;
    clock.say("client: a pool of 4 connections, fail fast, replaced every second or so");

    for (phase, duration) in PHASES {
        match phase {
            "outage" => {
                server.stop().await;
                clock.say("--- server stopped ---");
            }
            "after" => {
                server.restart()?;
                clock.say(format!("--- server restarted on {} ---", server.addr()));
            }
            _ => {}
        }
        let (ok, failed_fast, other) = load(&pool, phase, duration, clock).await;
        clock.say(format!(
            "{phase}: {ok} answered, {failed_fast} failed fast, {other} other errors"
        ));
        for (n, connection) in (1..).zip(pool.connections()) {
            clock.say(format!(
                "{phase}: connection {n} {}",
                describe(&connection.state())
            ));
        }
        clock.say(format!("{phase}: pool {}", describe(&pool.watch().state())));
    }

    // Closing ends every connection's task; the pool's watch shows `Closed`
    // and, once the last handle is gone, its printer ends.
    pool.close();
    pool.watch().disconnected().await;
    drop(pool);
    printer.await?;
    drop(server);

    replicas(clock).await
}

/// The second act: a pool per replica, one replica away and back.
async fn replicas(clock: Clock) -> Result<(), BoxError> {
    let mut servers = two_replicas()?;
    let addrs: Vec<_> = servers.iter().map(LineServer::addr).collect();
    clock.say(format!(
        "replicas listening on {} and {}",
        addrs[0], addrs[1]
    ));
    let (_registry, endpoints) = discover::channel(addrs);
    let pools = ReconnectLayer::new(())
        .connect_timeout(Duration::from_secs(1))
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(1),
        ))
        .pool(2)
        .discover(endpoints, Dial::default());
    let watch = pools.watch();
    let listing = pools.endpoints();
    let printer = tokio::spawn(print_changes("service", watch.clone(), clock, true));
    // The balancer is not `Clone`: a buffer in front shares it.
    let client = Buffer::new(Balance::new(pools), 1024);
    clock.say("client: a pool of 2 connections per replica, under tower's p2c balancer");

    for (phase, duration) in REPLICA_PHASES {
        match phase {
            "one away" => {
                servers[1].stop().await;
                clock.say("--- the second replica stopped ---");
            }
            "both back" => {
                servers[1].restart()?;
                clock.say("--- the second replica restarted ---");
            }
            _ => {}
        }
        let seen: Vec<_> = servers.iter().map(|s| s.seen().len()).collect();
        let (ok, failed_fast, other) = load(&client, phase, duration, clock).await;
        let answered: Vec<_> = (0..2).map(|i| servers[i].seen().len() - seen[i]).collect();
        clock.say(format!(
            "{phase}: {ok} answered ({} by the first replica, {} by the second), \
             {failed_fast} failed fast, {other} other errors",
            answered[0], answered[1]
        ));
        for (addr, replica) in listing.list() {
            clock.say(format!(
                "{phase}: replica {addr} {}",
                describe(&replica.state())
            ));
        }
    }

    // Dropping the balancer drops every replica's pool: the one watch
    // shows `Closed` and its printer ends.
    drop(client);
    watch
        .subscribe()
        .wait_for(|state| state.is_closed())
        .await?;
    printer.await?;
    Ok(())
}

/// Two line servers on one port, on 127.0.0.1 and 127.0.0.2.
fn two_replicas() -> Result<Vec<LineServer>, BoxError> {
    let mut last = None;
    for _ in 0..10 {
        let first = LineServer::start(([127, 0, 0, 1], 0).into())?;
        let port = first.addr().port();
        match LineServer::start(([127, 0, 0, 2], port).into()) {
            Ok(second) => return Ok(vec![first, second]),
            Err(err) => last = Some(err), // that port is taken there: another
        }
    }
    Err(last.expect("tried").into())
}

/// `CALLERS` callers, each sending a request every 10 ms for `duration`
/// and waiting for its answer; how the requests ended: answered, failed
/// fast, other errors (each printed).
async fn load<S>(pool: &S, phase: &str, duration: Duration, clock: Clock) -> (usize, usize, usize)
where
    S: Service<String, Response = String, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let end = Instant::now() + duration;
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (pool, phase) = (pool.clone(), phase.to_owned());
        callers.push(tokio::spawn(async move {
            let mut ticks = report::every(Duration::from_millis(10));
            let mut ended = (0, 0, Vec::new());
            for n in 0.. {
                ticks.tick().await;
                if Instant::now() >= end {
                    break;
                }
                match pool.clone().oneshot(format!("{phase} {caller}.{n}")).await {
                    Ok(_) => ended.0 += 1,
                    Err(err) if err.is::<Unavailable>() => ended.1 += 1,
                    Err(err) => ended.2.push(chain(&*err)),
                }
            }
            ended
        }));
    }
    let (mut ok, mut failed_fast, mut other) = (0, 0, 0);
    for caller in callers {
        let (answered, refused, errors) = caller.await.expect("caller panicked");
        ok += answered;
        failed_fast += refused;
        other += errors.len();
        for error in errors {
            clock.say(format!("{phase}: a request failed: {error}"));
        }
    }
    (ok, failed_fast, other)
}

/// A state in a line: phase, attempt, counters.
fn describe(state: &ConnectionState) -> String {
    format!(
        "{} (attempt {}; {}, {} replaced at their age)",
        state.phase(),
        state.attempt(),
        connects(state),
        state.replaced()
    )
}
