//! What the two gRPC examples share: tonic's health server, which counts the
//! calls it answers, and how a failed call is shown.
//!
//! `examples/tonic_client.rs` and `examples/grpc_client.rs` include it with
//! `#[path = "common/health.rs"] mod health;`.

use std::{
    error::Error,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use http::Request;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{body::Body, transport::server::TcpIncoming, Status};
use tower::ServiceBuilder;

use crate::report::chain;

/// A status's code, then its source chain, where redial's error (or
/// tonic's transport error) is.
pub(crate) fn describe(status: &Status) -> String {
    match status.source() {
        Some(source) => format!("{:?}: {}", status.code(), chain(source)),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// The first error of type `E` in the chain.
pub(crate) fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

// ===== the server =====

/// Spawns tonic's server with `tonic_health`'s service, which reports
/// `SERVING`, until `stopped`; it then closes the listener and, gracefully,
/// every connection.
pub(crate) fn serve(
    listener: TcpListener,
    stopped: oneshot::Receiver<()>,
    answered: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = ServiceBuilder::new()
        .map_request(move |req: Request<Body>| {
            answered.fetch_add(1, Ordering::Relaxed);
            req
        })
        .service(health);
    tokio::spawn(async move {
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
    })
}
