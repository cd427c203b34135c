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
#[allow(dead_code)] // the demo's requests do not time out
#[path = "common/report.rs"]
mod report;

use std::time::Duration;

use line::{Dial, LineServer};
use redial::{error::Unavailable, Backoff, ReconnectLayer};
use report::{chain, connects, print_changes, Clock, Outcome, Tally, Ticks};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let clock = report::start();
    // A moment of the story, in seconds since the start.
    let at = |secs| clock.0 + Duration::from_secs(secs);

    let mut server = LineServer::start(([127, 0, 0, 1], 0).into())?;
    clock.say(format!("server listening on {}", server.addr()));

    // The make service: one TCP connection per call, counted.
    let make = Dial::default();
    let mut client = ServiceBuilder::new()
        .layer(
            ReconnectLayer::new(server.addr())
                .connect_timeout(Duration::from_secs(1))
                .backoff(Backoff::exponential(
                    Duration::from_millis(200),
                    Duration::from_secs(2),
                )),
        )
        .service(make.clone());
    let watch = client.watch();
    // The next attempt's time shows the backoff growing.
    let printer = tokio::spawn(print_changes("watch", watch.clone(), clock, true));

    let mut tally = Tally::default();
    send_until(&mut client, at(3), clock, &mut tally).await;
    server.stop().await;
    clock.say("--- server stopped ---");
    send_until(&mut client, at(8), clock, &mut tally).await;
    server.restart()?;
    clock.say(format!("--- server restarted on {} ---", server.addr()));
    send_until(&mut client, at(11), clock, &mut tally).await;

    let state = watch.state();
    drop(client); // the watch shows `closed`, and the printer ends
    printer.await?;
    println!(
        "summary: {}, {} connect attempts, {}",
        tally.counts("requests ok"),
        make.dials(),
        connects(&state),
    );
    Ok(())
}

/// Sends a request every 250 ms until `deadline`, printing each result.
async fn send_until<S>(client: &mut S, deadline: Instant, clock: Clock, tally: &mut Tally)
where
    S: Service<String, Response = String, Error = BoxError>,
{
    let mut ticks = Ticks::until(deadline, Duration::from_millis(250));
    while ticks.next().await.is_some() {
        let line = format!("ping {}", tally.ok + tally.failed_fast + tally.other + 1);
        let result = match client.ready().await {
            Ok(client) => client.call(line.clone()).await,
            Err(err) => Err(err),
        };
        let (outcome, what) = match result {
            Ok(reply) => (Outcome::Ok, format!("ok, {reply:?}")),
            Err(err) => match err.downcast_ref::<Unavailable>() {
                Some(unavailable) => (
                    Outcome::FailedFast,
                    format!(
                        "failed fast (Unavailable, attempt {}): {}",
                        unavailable.attempt(),
                        chain(&*err)
                    ),
                ),
                None => (Outcome::Other, format!("other error: {}", chain(&*err))),
            },
        };
        tally.record(clock, outcome, format!("{line}: {what}"));
    }
}
