//! A reconnecting gRPC channel for tonic's generated clients: [`Endpoint`]
//! and [`Channel`], named and used as `tonic::transport::{Endpoint, Channel}`.
//!
//! Switching from tonic is a change of import. The channel is redial's
//! shared HTTP/2 handle ([`SharedHttp2`](crate::http::SharedHttp2) over an
//! [`Http2Connector`](crate::http::Http2Connector)), so it connects at once,
//! reconnects in the background on redial's schedule (connect timeout,
//! jittered backoff, no dial per call while the server is away), fails fast
//! or waits for ready, and shows its state through
//! [`watch()`](Channel::watch).
//!
//! This module is behind the `grpc` feature, which turns on `http`. It
//! needs Rust 1.88, as tonic does. `cargo run --example grpc_client
//! --all-features` shows a server restart handled.
//!
//! # Example
//!
//! ```
//! # use tonic::transport::server::TcpIncoming;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let (_reporter, health) = tonic_health::server::health_reporter();
//! # tokio::spawn(
//! #     tonic::transport::Server::builder().serve_with_incoming(health, TcpIncoming::from(listener)),
//! # );
//! use std::time::Duration;
//! // was: use tonic::transport::Endpoint;
//! use redial::grpc::Endpoint;
//! use tonic_health::pb::{
//!     health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
//! };
//!
//! let channel = Endpoint::from_shared(format!("http://{addr}"))?
//!     .connect_timeout(Duration::from_secs(5))
//!     .timeout(Duration::from_secs(10))
//!     .connect()
//!     .await?;
//! let watch = channel.watch(); // what tonic's Channel cannot tell you
//! let mut client = HealthClient::new(channel);
//! let reply = client.check(HealthCheckRequest::default()).await?;
//! assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
//! assert!(watch.is_connected());
//! # Ok(())
//! # }
//! ```
//!
//! # What differs from tonic
//!
//! - **Status codes.** A call that never reached the server answers
//!   `Unavailable` with redial's message ("connection unavailable, next
//!   attempt in 1.2s"), redial's typed error as its source; a call whose
//!   deadline passes answers `DeadlineExceeded` (tonic's `Channel`:
//!   `Cancelled`), naming the last connect error if it was waiting for a
//!   connection; so does one that waited out the
//!   [`wait_timeout`](Endpoint::wait_timeout), never sent. A call cut by a
//!   lost connection answers as over tonic's `Channel`. See [`Channel`].
//! - **Between calls.** tonic's channel connects at the first call
//!   (`connect_lazy`) and redials on the next call after a loss, once per
//!   call while the server is away; redial's connects at once, notices an
//!   idle connection closing, and redials on its backoff schedule.
//! - **Settings.** [`connect_timeout`](Endpoint::connect_timeout) defaults
//!   to 30 s (tonic: none). [`keep_alive_while_idle`](Endpoint::keep_alive_while_idle)
//!   is accepted and changes nothing: pings, once an interval is set, run
//!   idle or not. redial adds [`backoff`](Endpoint::backoff),
//!   [`wait_for_ready`](Endpoint::wait_for_ready),
//!   [`wait_timeout`](Endpoint::wait_timeout) and
//!   [`max_attempts`](Endpoint::max_attempts).
//! - **TLS** takes a `rustls::ClientConfig` (feature `tls`):
//!   `Endpoint::tls_config(config)` on an `https://` endpoint, which
//!   otherwise fails to connect with "https target needs tls configured on
//!   the connector". ALPN `h2` and the server name come from the endpoint.
//! - **Not here yet.** Unix sockets, `origin`, `connect_with_connector`, rate and concurrency
//!   limits, HTTP/2 window settings, and `Channel::balance_list`. For a
//!   custom connector or hyper setting, build the
//!   [`Http2Connector`](crate::http::Http2Connector) yourself and spawn it
//!   under a [`ReconnectLayer`](crate::ReconnectLayer), as the
//!   [`http` module docs](crate::http) show; a generated client takes that
//!   handle too.
//!
//! # Costs
//!
//! Per call, the shared handle's queue and the `http` connection's boxed
//! response future; a deadline adds a timer, no allocation.

mod channel;
mod deadline;
mod endpoint;
mod error;

pub use self::{
    channel::{Channel, ResponseFuture},
    endpoint::Endpoint,
    error::Error,
};
