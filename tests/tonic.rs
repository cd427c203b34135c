//! A tonic generated client over redial's shared HTTP/2 handle, against
//! tonic's own health service on 127.0.0.1, served by tonic's server, which
//! stops (closing every connection) and comes back on the same port.
//!
//! The client is `tonic_health`'s generated `HealthClient`, built once over
//! a `Shared` handle of `Reconnect<Http2Connector<tonic::body::Body>, Uri>`;
//! no new client is built after a restart. tonic-health ships its generated
//! code, so there is no protoc and no build.rs.
//!
//! Real sockets need the real clock, so every wait here is on an event (the
//! watch, a call's answer); the timeouts only keep a broken build from
//! hanging.
mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Uri};
use redial::{error::Unavailable, http::Http2Connector, Backoff, Phase, ReconnectLayer};
use support::{
    errors::find,
    net::guard,
    server::{listen, Running},
};
use tokio::{
    task::JoinHandle,
    time::{timeout, Instant},
};
use tonic::{body::Body, transport::server::TcpIncoming, Code, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tower::{Layer, ServiceBuilder};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_millis(50);

/// The shared HTTP/2 handle a generated client runs over.
type Channel = redial::http::SharedHttp2<Body>;

// ===== through a restart =====

/// Failing fast: the generated client works, the watch shows the server
/// going away without any call, calls during the outage fail at once with
/// `Unavailable` in the status's source chain, and the same client works
/// again after a restart on the same port.
#[tokio::test]
async fn generated_client_recovers_after_server_restart() {
    support::trace_init();
    let mut server = Server::start();
    let shared = layer(&server).layer(Http2Connector::new()).spawn(8);
    let watch = shared.watch();
    let client = HealthClient::new(shared);

    for _ in 0..3 {
        let status = guard(check(&mut client.clone())).await.unwrap();
        assert_eq!(status, ServingStatus::Serving);
    }
    assert_eq!(server.requests(), 3);

    // No call from here on until the outage: the eager handle notices the
    // idle connection closing by itself.
    server.stop().await;
    let state = guard(watch.disconnected()).await;
    assert_ne!(state.phase(), Phase::Closed);
    assert_eq!(watch.state().disconnects(), 1);

    for _ in 0..3 {
        let started = Instant::now();
        let status = guard(check(&mut client.clone())).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "failing fast took {:?}",
            started.elapsed()
        );
        // tonic knows nothing of redial's errors: it wraps the transport
        // error in a `Status` with code `Unknown`, keeping it as the source.
        assert_eq!(status.code(), Code::Unknown, "{status:?}");
        assert!(find::<Unavailable>(&status).is_some(), "{status:?}");
    }
    assert_eq!(server.requests(), 3, "a failed call reached no server");

    server.restart();
    guard(watch.connected()).await.unwrap();
    let status = guard(check(&mut client.clone())).await.unwrap();
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(server.requests(), 4);

    let state = watch.state();
    assert_eq!(state.connects(), 2, "{state:?}");
    assert_eq!(state.disconnects(), 1, "{state:?}");
}

/// Waiting for readiness: calls made while the server is away wait, through
/// failed reconnect attempts, and are answered once it is back.
#[tokio::test]
async fn wait_for_ready_calls_wait_out_the_restart() {
    support::trace_init();
    let mut server = Server::start();
    let shared = layer(&server)
        .wait_for_ready(true)
        .layer(Http2Connector::new())
        .spawn(8);
    let watch = shared.watch();
    let client = HealthClient::new(shared);
    let status = guard(check(&mut client.clone())).await.unwrap();
    assert_eq!(status, ServingStatus::Serving);

    server.stop().await;
    guard(watch.disconnected()).await;

    let calls: Vec<JoinHandle<_>> = (0..3)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let answer = check(&mut client).await;
                (answer, Instant::now())
            })
        })
        .collect();
    // Two more failed attempts while the calls are queued: they are waiting,
    // not failing. The watch wakes its subscribers on phase changes only, and
    // the phase stays Disconnected through failed attempts, so the attempt
    // counter is read rather than awaited.
    let attempt = watch.state().attempt();
    guard(async {
        while watch.state().attempt() < attempt + 2 {
            tokio::time::sleep(RETRY / 5).await;
        }
    })
    .await;
    assert!(
        calls.iter().all(|call| !call.is_finished()),
        "a call ended during the outage"
    );
    assert_eq!(server.requests(), 1);

    let restarted_at = Instant::now();
    server.restart();
    for call in calls {
        let (answer, at) = guard(call).await.unwrap();
        assert_eq!(answer.unwrap(), ServingStatus::Serving);
        assert!(at >= restarted_at);
    }
    assert_eq!(server.requests(), 4);
    let state = watch.state();
    assert_eq!(state.connects(), 2, "{state:?}");
    assert_eq!(state.disconnects(), 1, "{state:?}");
}

/// With a long backoff, the next attempt after the outage is far away;
/// `reset_backoff()` on the handle makes it at once, and the same client
/// works again.
#[tokio::test]
async fn reset_backoff_reconnects_at_once() {
    support::trace_init();
    const LONG: Duration = Duration::from_secs(30);
    let mut server = Server::start();
    let shared = ReconnectLayer::new(server.uri())
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::constant(LONG))
        .layer(Http2Connector::new())
        .spawn(8);
    let watch = shared.watch();
    let client = HealthClient::new(shared.clone());
    let status = guard(check(&mut client.clone())).await.unwrap();
    assert_eq!(status, ServingStatus::Serving);

    server.stop().await;
    let mut states = watch.subscribe();
    let state = guard(states.wait_for(|s| s.phase() == Phase::Disconnected))
        .await
        .unwrap()
        .clone();
    let retry_in = state.retry_at().unwrap() - Instant::now();
    assert!(retry_in > Duration::from_secs(10), "retry in {retry_in:?}");

    server.restart();
    let reset_at = Instant::now();
    shared.reset_backoff();
    timeout(Duration::from_secs(1), watch.connected())
        .await
        .expect("not connected within a second of reset_backoff")
        .unwrap();
    assert!(reset_at.elapsed() < Duration::from_secs(1));

    let status = guard(check(&mut client.clone())).await.unwrap();
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(watch.state().connects(), 2);
}

// ===== client helpers =====

fn layer(server: &Server) -> ReconnectLayer<Uri> {
    ReconnectLayer::new(server.uri())
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::constant(RETRY))
}

/// The overall health the server reports (service name `""`).
async fn check(client: &mut HealthClient<Channel>) -> Result<ServingStatus, Status> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = client.check(request).await?;
    Ok(response.into_inner().status())
}

// ===== Server: tonic's health service =====

/// tonic's server with `tonic_health`'s service (reporting `Serving`),
/// counting the requests it is sent. It can stop (closing the listener and,
/// gracefully, every connection) and start again on the same address.
struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    running: Option<Running>,
}

impl Server {
    fn start() -> Self {
        let mut server = Self {
            addr: ([127, 0, 0, 1], 0).into(),
            requests: Arc::default(),
            running: None,
        };
        server.restart();
        server
    }

    fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Listens on the same address again. SO_REUSEADDR lets the port be
    /// bound at once although the closed connections sit in TIME_WAIT.
    fn restart(&mut self) {
        let listener = listen(self.addr, 64);
        self.addr = listener.local_addr().unwrap();

        let (_reporter, health) = tonic_health::server::health_reporter();
        let requests = self.requests.clone();
        let service = ServiceBuilder::new()
            .map_request(move |req: Request<Body>| {
                requests.fetch_add(1, Ordering::SeqCst);
                req
            })
            .service(health);
        self.running = Some(Running::spawn(|stopped| async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        }));
    }

    /// Stops accepting and closes every connection; returns once they are
    /// all closed.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            guard(running.stop()).await;
        }
    }
}
