//! Keeps a client connection alive for any tower `MakeService`.
//!
//! [`Reconnect`] connects through a `MakeService` (a `Service<Target>` whose
//! response is the connection, itself a `Service<Request>`), bounds each
//! attempt with a connect timeout, retries with jittered backoff when the
//! peer is away, and either fails fast or waits while it is (your choice).
//! [`ConnectionWatch`], built on [`tokio::sync::watch`], lets anyone see
//! whether the service is connected, why not, and when the next attempt is,
//! and `await` the connection.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! use std::{convert::Infallible, time::Duration};
//! use redial::{Backoff, ReconnectLayer};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! // Any MakeService: here a "connection" that doubles numbers.
//! let make = service_fn(|_addr: &'static str| async {
//!     Ok::<_, Infallible>(service_fn(|n: u64| async move { Ok::<_, Infallible>(n * 2) }))
//! });
//!
//! let layer = ReconnectLayer::new("127.0.0.1:4000")
//!     .connect_timeout(Duration::from_secs(5))
//!     .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)));
//! let mut svc = ServiceBuilder::new().layer(layer).service(make);
//! let watch = svc.watch();
//!
//! let answer = svc.ready().await?.call(21).await?;
//! assert_eq!(answer, 42);
//! assert!(watch.is_connected());
//! # Ok(())
//! # }
//! ```
//!
//! # The states
//!
//! A service starts [`Idle`](Phase::Idle) and makes its first attempt
//! ([`Connecting`](Phase::Connecting)) when a request asks for readiness. A
//! failed attempt or a lost connection makes it
//! [`Disconnected`](Phase::Disconnected), with the cause and the time of the
//! next attempt; that phase is sticky, reported while further attempts run,
//! until the service is [`Connected`](Phase::Connected) again. Dropping the
//! service, or giving up after [`max_attempts`](ReconnectLayer::max_attempts),
//! makes it [`Closed`](Phase::Closed) for good. With an
//! [`idle_timeout`](ReconnectLayer::idle_timeout), a connection with no
//! request in flight for that long is closed on purpose and the service goes
//! back to `Idle` (an idle close, not a disconnect); the next request
//! connects as the first one did. See [`Reconnect`] for what `poll_ready`
//! and `call` do in each.
//!
//! # Timing
//!
//! - The connect timeout (default 30 s) bounds the whole attempt, handshake
//!   included.
//! - A retry delay counts from the start of the failed attempt, as in gRPC:
//!   an attempt that overran its delay is followed at once by the next.
//! - The schedule ([`Backoff`], default 2 s ×1.6 up to 120 s, ±20 % jitter)
//!   starts afresh only when a connection proves itself by staying up for at
//!   least the first retry delay; the first reconnect after losing such a
//!   connection is immediate. A connection that dies sooner counts as a
//!   failed attempt, so a peer that accepts and closes is dialled on the
//!   growing schedule, never in a loop.
//! - While waiting, the only wake-up is the retry timer.
//! - [`wait_timeout`](ReconnectLayer::wait_timeout) (off by default) bounds
//!   how long a request waits for a connection, and
//!   [`idle_timeout`](ReconnectLayer::idle_timeout) (off by default) how
//!   long a connection stays open with nothing in flight.
//!
//! # Readiness in brief
//!
//! `poll_ready` is `Pending` while the first attempt runs; `Ready(Ok)`
//! while `Disconnected` in the default fail-fast mode, and `call` then
//! returns [`Unavailable`](error::Unavailable) at once without dialling;
//! `Pending` instead with [`wait_for_ready(true)`](ReconnectLayer::wait_for_ready),
//! until the connection is back or a
//! [`wait_timeout`](ReconnectLayer::wait_timeout) runs out (then `call`
//! fails with `Unavailable`, as in fail-fast mode);
//! `Err` only once `Closed`, and then for good. The error a `call` returns
//! describes the state at that moment, never an earlier attempt.
//! [`Reconnect`] has the full table.
//!
//! # Requests sent again
//!
//! Reconnecting is not retrying: a request goes to a connection once,
//! except when the connection hands it back because it cannot have been
//! processed ([`error::Resend`]): unwritten (the connection was found
//! closed first, or the server refused it unprocessed), whatever the
//! method, or idempotent and unanswered on a reused connection that closed
//! before any byte of the response. The shared handle ([`Shared`]) then
//! sends it once more, on the next connection, following the mode: it
//! waits for the connection in wait-for-ready mode and fails fast with
//! [`Unavailable`](error::Unavailable) otherwise. A plain [`Reconnect`]
//! cannot (the caller holds its response future), so the caller gets the
//! `Resend`, with the request in it, as does a caller of `Shared` whose
//! request is handed back a second time. [`ConnectionState::resent`] counts
//! requests sent again. The `http` connections follow these rules exactly; see
//! `http::ResponseFuture` (feature `http`).
//!
//! # Choices worth knowing
//!
//! gRPC's connectivity states, Perl's `Message::Passing::Role::ConnectionManager`
//! and `tower::reconnect` leave these open; redial decides them so:
//!
//! - After a *proven* connection is lost, the watch shows `Disconnected` (the
//!   loss, counted in [`disconnects`](ConnectionState::disconnects)) and then
//!   `Connecting` for the immediate reconnect, during which requests wait, as
//!   they wait for the first connection: a server closing an idle connection
//!   costs no request an error. If that attempt fails, `Disconnected` sticks.
//!   With an [`idle_timeout`](ReconnectLayer::idle_timeout), a healthy
//!   connection the server closes while nothing is in flight (its own idle
//!   timeout) is still a loss, but the service goes back to `Idle` instead:
//!   nothing dials until a request asks, and that request waits for one
//!   connect, never more.
//! - A wait that ran out ([`wait_timeout`](ReconnectLayer::wait_timeout))
//!   fails with [`Unavailable`](error::Unavailable), the error a request
//!   gets in fail-fast mode, with [`waited()`](error::Unavailable::waited)
//!   set and the last connect error as its source: the request was never
//!   sent, so it is safe to send again.
//! - `poll_ready` answers an error only once the service is closed; a
//!   lazy `Reconnect` can only close by giving up, so that error is
//!   [`GaveUp`](error::GaveUp).
//! - A [`Backoff`] of your own that runs out of delays gives up, as
//!   `max_attempts` does.
//! - The `Service` impl asks of the target only `Clone`, as
//!   `tower::reconnect` does. Logs name a connection by
//!   [`ReconnectLayer::name`] (or [`name_from_target`](ReconnectLayer::name_from_target)),
//!   never by printing the target, and wherever redial does print a target
//!   (a `Debug`) its userinfo (`user:token@`) shows as `***`.
//!
//! # Sharing one connection
//!
//! `Reconnect` has one owner and is driven by its `poll_ready`.
//! [`Reconnect::spawn`] moves it into a background task and returns a
//! clone-able [`Shared`] handle: the task connects at once, notices an idle
//! connection closing, reconnects in the background, and serves every
//! clone through a bounded queue; `watch()`, `reset_backoff()`,
//! `mark_disconnected()` and `close()` are on the handle. Inside a
//! `ServiceBuilder`, [`ReconnectLayer::shared`] builds one. See [`Shared`]
//! for when
//! [`tower::buffer::Buffer`](https://docs.rs/tower/0.5/tower/buffer/struct.Buffer.html)
//! over a `Reconnect` is enough.
//!
//! # Many connections to one target
//!
//! One [`Shared`] handle is one connection: over HTTP/1 one request at a
//! time. [`ReconnectLayer::pool`] builds a [`Pool`] of `n` of them to the
//! same target, each reconnecting on its own, behind one clone-able
//! `Service` that sends each request to the least loaded connection that
//! is up, and one [`ConnectionWatch`] over all of them (gRPC's rule:
//! `Connected` while any connection is). After a loss the connections
//! redial apart, not all at once. See [`Pool`].
//!
//! # With `tower::balance`
//!
//! Under `tower::balance::p2c::Balance`, give each endpoint its own
//! `Reconnect` with [`wait_for_ready(true)`](ReconnectLayer::wait_for_ready),
//! so that a dead endpoint is skipped (its `poll_ready` pends) rather than
//! failing requests, and takes traffic again once it reconnects. Endpoints
//! that come and go (a service registry, DNS) come from the sources in
//! [`discover`], which tell the balancer which to add and which to drop;
//! [`PoolLayer::discover`] gives each a [`Pool`] of its own, waiting for
//! ready, with one watch over every endpoint
//! ([`discover::Pools`]).
//!
//! # Features
//!
//! - `http`: the `redial::http` module, hyper
//!   HTTP/1 and HTTP/2 connectors. Off by default, as every feature is.
//! - `tls`: TLS for those connectors (`.tls(config)`, with rustls and its
//!   `ring` provider); implies `http`. See the `http` module's
//!   TLS section.
//! - `grpc`: the `redial::grpc` module, `Endpoint` and `Channel` to use in
//!   place of tonic's (turns on `http`).
//! - `dns`: `redial::discover::dns`, endpoints from a host name resolved
//!   again and again (tokio's resolver: turns on tokio's `net`).
//!
//! # Minimum supported Rust version
//!
//! 1.85, as declared in `Cargo.toml`: tokio's, and the highest any
//! dependency declares, with or without the `http` and `tls` features. The
//! `grpc` feature needs 1.88, as tonic declares. The test suite and examples
//! need 1.88 (tonic, proptest).

#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
mod classify;
mod config;
pub mod discover;
pub mod error;
pub mod future;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod layer;
pub mod pool;
mod redact;
mod resend;
mod service;
pub mod shared;
mod state;
mod watch;

pub use backoff::Backoff;
pub use layer::ReconnectLayer;
pub use pool::{Pool, PoolLayer};
pub use service::Reconnect;
pub use shared::{Shared, SharedLayer};
pub use watch::{ConnectionState, ConnectionWatch, Phase};
