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

#[path = "common/health.rs"]
mod health;
#[path = "common/report.rs"]
mod report;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use health::{describe, find, serve};
use http::Uri;
use redial::{error::Unavailable, http::Http2Connector, Backoff, ReconnectLayer};
use report::{connects, print_changes, timed, Outcome, Tally, Ticks};
use server::Server;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::{BoxError, Layer};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let clock = report::start();
    let end = clock.0 + Duration::from_secs(6);

    let mut server = Server::start(([127, 0, 0, 1], 0).into(), serve)?;
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

    let printer = tokio::spawn(print_changes("watch", watch.clone(), clock, false));
    let outage = tokio::spawn(async move {
        server
            .outage(clock, Duration::from_secs(2), Duration::from_secs(4))
            .await?;
        Ok::<_, std::io::Error>(server)
    });

    // A health check every 250 ms, each through a clone of the one client.
    let mut tally = Tally::default();
    let mut ticks = Ticks::until(end, Duration::from_millis(250));
    while let Some(n) = ticks.next().await {
        let mut client = client.clone();
        let request = HealthCheckRequest {
            service: String::new(),
        };
        // Failing fast, a call never waits out the outage; bound it anyway.
        let (result, took) = timed(client.check(request)).await;
        let (outcome, line) = match result {
            Some(Ok(response)) => {
                let status = response.into_inner().status();
                (
                    Outcome::Ok,
                    format!("{} ({took:.0?})", status.as_str_name()),
                )
            }
            Some(Err(status)) if find::<Unavailable>(&status).is_some() => (
                Outcome::FailedFast,
                format!("failed fast ({took:.0?}): {}", describe(&status)),
            ),
            Some(Err(status)) => (Outcome::Other, format!("error: {}", describe(&status))),
            None => (Outcome::Other, "no answer in 5 s".into()),
        };
        tally.record(clock, outcome, format!("check {n}: {line}"));
    }

    let mut server = outage.await??;
    // Closing the handle drops the connection: the watch shows `closed`, and
    // the printer ends.
    shared.close();
    printer.await?;
    println!(
        "summary: {}; {} (the last at close); the server answered {}",
        tally.counts("checks ok"),
        connects(&watch.state()),
        server.answered(),
    );
    server.stop().await;
    Ok(())
}
