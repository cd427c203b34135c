//! `redial::grpc::{Endpoint, Channel}` under tonic-health's generated
//! client, against tonic's own health service on 127.0.0.1: connecting, a
//! restart, deadlines, closing, a graceful shutdown (GOAWAY) with calls open.
//! Real sockets need the real clock: every wait is on an event (the watch,
//! a call's answer); the guards only keep a broken build from hanging.
#![cfg(feature = "grpc")]
mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use http::Request;
use redial::{
    error::{Closed, ConfigError, ConnectFailed, Unavailable},
    grpc::{Channel, Endpoint},
    Backoff, Phase,
};
use support::{
    errors::find,
    net::{alive_tasks, guard, refusing_port, settle},
    relay::Relay,
    server::{listen, Running},
};
use tokio::{sync::watch, time::Instant};
use tonic::{body::Body, transport::server::TcpIncoming, Code, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tower::{service_fn, ServiceExt};

const RETRY: Duration = Duration::from_millis(50);

/// A `Channel` can be shared and stored as tonic's can.
#[test]
fn channel_is_clone_send_sync_static() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Channel>();
    shareable::<Endpoint>();
}

// ===== connect =====

/// Like tonic's `connect`, connecting to a port where nothing listens fails
/// with the first attempt's error, and leaves no task running.
#[tokio::test]
async fn connect_to_a_dead_port_fails_and_leaves_nothing_running() {
    support::trace_init();
    let (_socket, addr) = refusing_port();
    let before = alive_tasks();
    let err = guard(endpoint(addr).connect()).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(find::<ConnectFailed>(&err).is_some(), "{err:?}");
    settle("alive tasks", Duration::from_secs(2), alive_tasks, |n| {
        *n == before
    })
    .await;
}

/// `connect` refuses invalid settings with an error, not a panic.
#[tokio::test]
async fn connect_refuses_invalid_settings() {
    let (_socket, addr) = refusing_port();
    let err = endpoint(addr).max_attempts(0).connect().await.unwrap_err();
    assert!(!err.is_connect(), "{err:?}");
    assert!(find::<ConfigError>(&err).is_some(), "{err:?}");
}

/// `connect` resolves to a connected channel, and a generated client works
/// over it.
#[tokio::test]
async fn connect_resolves_once_connected() {
    support::trace_init();
    let server = Server::start();
    let channel = guard(endpoint(server.addr).connect()).await.unwrap();
    assert!(channel.watch().is_connected());
    let status = guard(check(&channel)).await.unwrap();
    assert_eq!(status, ServingStatus::Serving);
}

/// `user_agent` prefixes the `user-agent` every request carries, as in
/// tonic, where redial names itself.
#[tokio::test]
async fn user_agent_comes_first() {
    support::trace_init();
    let server = Server::start();
    let channel = endpoint(server.addr).connect_lazy();
    guard(check(&channel)).await.unwrap();
    let agent = server.user_agent();
    assert!(agent.starts_with("redial/"), "{agent}");

    let channel = endpoint(server.addr)
        .user_agent("Greeter")
        .unwrap()
        .connect_lazy();
    guard(check(&channel)).await.unwrap();
    let agent = server.user_agent();
    assert!(agent.starts_with("Greeter redial/"), "{agent}");
    assert!(endpoint(server.addr).user_agent("\n").is_err());
}

// ===== through a restart =====

/// A lazy channel: calls work, fail fast with `Unavailable` (redial's error
/// as the source) while the server is away, and work again once it is back.
#[tokio::test]
async fn lazy_channel_recovers_after_server_restart() {
    support::trace_init();
    let mut server = Server::start();
    let channel = endpoint(server.addr).connect_lazy();
    let watch = channel.watch();
    assert_eq!(
        guard(check(&channel)).await.unwrap(),
        ServingStatus::Serving
    );

    server.stop().await;
    guard(watch.disconnected()).await;
    for _ in 0..3 {
        let started = Instant::now();
        let status = guard(check(&channel)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("unavailable"), "{status:?}");
        assert!(find::<Unavailable>(&status).is_some(), "{status:?}");
    }
    assert_eq!(server.requests(), 1, "a failed call reached no server");

    server.restart();
    guard(watch.connected()).await.unwrap();
    assert_eq!(
        guard(check(&channel)).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(watch.state().connects(), 2);
}

/// After `close`, calls fail with `Unavailable`, `Closed` as the source.
#[tokio::test]
async fn closed_channel_answers_unavailable() {
    support::trace_init();
    let server = Server::start();
    let channel = guard(endpoint(server.addr).connect()).await.unwrap();
    channel.close();
    let status = guard(check(&channel)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(find::<Closed>(&status).is_some(), "{status:?}");
    assert_eq!(channel.watch().disconnected().await.phase(), Phase::Closed);
}

// ===== deadlines =====

/// Waiting for ready with the server away, a call ends at its deadline,
/// the endpoint's or the request's `grpc-timeout`, whichever is shorter,
/// with `DeadlineExceeded` naming the last connect error. On a paused
/// clock, so "at" is exact.
#[tokio::test(start_paused = true)]
async fn wait_for_ready_calls_end_at_their_deadline() {
    support::trace_init();
    const TIMEOUT: Duration = Duration::from_millis(200);
    const SHORTER: Duration = Duration::from_millis(80);
    let (_socket, addr) = refusing_port();
    let channel = endpoint(addr)
        .wait_for_ready(true)
        .timeout(TIMEOUT)
        .connect_lazy();
    let mut states = channel.watch().subscribe();
    guard(states.wait_for(|s| s.last_error().is_some()))
        .await
        .unwrap();

    let started = Instant::now();
    let status = guard(check(&channel)).await.unwrap_err();
    assert_eq!(started.elapsed(), TIMEOUT);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("200ms"), "{status:?}");
    assert!(status.message().contains("failed to connect"), "{status:?}");
    assert!(find::<ConnectFailed>(&status).is_some(), "{status:?}");

    let started = Instant::now();
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.set_timeout(SHORTER);
    let status = guard(HealthClient::new(channel.clone()).check(request))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), SHORTER);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // The shorter deadline was the one that ran out.
    assert!(status.message().contains("80ms"), "{status:?}");
}

/// Waiting for ready with the server away, the endpoint's `wait_timeout`
/// ends a call with `DeadlineExceeded`, naming the last connect error,
/// redial's `Unavailable` (never sent) as the source. On a paused clock,
/// so the wait is exact.
#[tokio::test(start_paused = true)]
async fn wait_timeout_ends_a_waiting_call_with_deadline_exceeded() {
    support::trace_init();
    const WAIT: Duration = Duration::from_millis(100);
    let (_socket, addr) = refusing_port();
    let channel = endpoint(addr)
        .wait_for_ready(true)
        .wait_timeout(WAIT)
        .connect_lazy();
    let mut states = channel.watch().subscribe();
    guard(states.wait_for(|s| s.last_error().is_some()))
        .await
        .unwrap();

    let started = Instant::now();
    let status = guard(check(&channel)).await.unwrap_err();
    assert_eq!(started.elapsed(), WAIT);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("wait timeout of 100ms"),
        "{status:?}"
    );
    assert!(status.message().contains("failed to connect"), "{status:?}");
    let unavailable = find::<Unavailable>(&status).expect("redial's error");
    assert_eq!(unavailable.waited(), Some(WAIT));
    assert!(find::<ConnectFailed>(&status).is_some(), "{status:?}");
}

/// A zero `wait_timeout` is refused by `connect`, as other bad settings are.
#[tokio::test]
async fn connect_refuses_a_zero_wait_timeout() {
    let (_socket, addr) = refusing_port();
    let err = endpoint(addr)
        .wait_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        find::<ConfigError>(&err),
        Some(&ConfigError::WaitTimeoutNotPositive)
    );
}

// ===== graceful shutdown =====

/// A server that shuts down gracefully (GOAWAY) while calls are open: the
/// open calls complete, no caller sees an error, and the channel connects
/// to the server's successor.
#[tokio::test]
async fn graceful_shutdown_lets_open_calls_finish() {
    support::trace_init();
    let mut server = Server::start();
    let channel = endpoint(server.addr).connect_lazy();
    let watch = channel.watch();
    guard(watch.connected()).await.unwrap();

    server.hold();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move { check(&channel).await })
        })
        .collect();
    settle(
        "requests",
        Duration::from_secs(5),
        || server.requests(),
        |n| *n == 3,
    )
    .await;

    let stopping = server.stop_in_background();
    // The listener is closed once the server has begun shutting down.
    settle(
        "listener closed",
        Duration::from_secs(5),
        // A bounded, blocking probe: on loopback a refusal is immediate.
        || std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(50)).is_ok(),
        |open| !open,
    )
    .await;
    server.release();
    for call in calls {
        assert_eq!(guard(call).await.unwrap().unwrap(), ServingStatus::Serving);
    }
    guard(stopping).await.unwrap();
    guard(watch.disconnected()).await;

    server.restart();
    guard(watch.connected()).await.unwrap();
    assert_eq!(
        guard(check(&channel)).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(watch.state().connects(), 2);
}

// ===== a lost connection =====

/// A call cut by a lost connection (the keep-alive ping finds a frozen
/// relay) answers with the code tonic's own `Channel` gives in the same
/// case, set up with the same `Endpoint` settings.
#[tokio::test]
async fn a_cut_call_answers_as_over_tonics_channel() {
    support::trace_init();
    const INTERVAL: Duration = Duration::from_millis(50);
    const TIMEOUT: Duration = Duration::from_millis(100);
    let server = Server::start();
    server.hold();
    let (ours, theirs) = (
        Relay::start(server.addr).await,
        Relay::start(server.addr).await,
    );
    let channel = Endpoint::from(ours.uri())
        .http2_keep_alive_interval(INTERVAL)
        .keep_alive_timeout(TIMEOUT)
        .connect_lazy();
    let tonic_channel = tonic::transport::Endpoint::from(theirs.uri())
        .http2_keep_alive_interval(INTERVAL)
        .keep_alive_timeout(TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy();
    let redial_call = tokio::spawn(async move { check(&channel).await });
    let tonic_call = tokio::spawn(async move {
        let mut client = HealthClient::new(tonic_channel);
        client.check(HealthCheckRequest::default()).await
    });
    settle(
        "requests",
        Duration::from_secs(5),
        || server.requests(),
        |n| *n == 2,
    )
    .await;

    ours.freeze();
    theirs.freeze();
    let redial_status = guard(redial_call).await.unwrap().unwrap_err();
    let tonic_status = guard(tonic_call).await.unwrap().unwrap_err();
    assert_eq!(
        redial_status.code(),
        tonic_status.code(),
        "{redial_status:?} {tonic_status:?}"
    );
    assert_eq!(redial_status.code(), Code::Unavailable, "{redial_status:?}");
}

// ===== helpers =====

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .backoff(Backoff::constant(RETRY))
}

/// The overall health the server reports, over a new generated client.
async fn check(channel: &Channel) -> Result<ServingStatus, Status> {
    let mut client = HealthClient::new(channel.clone());
    let response = client.check(HealthCheckRequest::default()).await?;
    Ok(response.into_inner().status())
}

/// tonic's server with tonic-health's service, counting requests, able to
/// hold them until released, and to stop (gracefully) and start again on
/// the same address.
struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    user_agent: Arc<Mutex<String>>,
    open: watch::Sender<bool>,
    running: Option<Running>,
}

impl Server {
    fn start() -> Self {
        let mut server = Self {
            addr: ([127, 0, 0, 1], 0).into(),
            requests: Arc::default(),
            user_agent: Arc::default(),
            open: watch::Sender::new(true),
            running: None,
        };
        server.restart();
        server
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The `user-agent` of the last request.
    fn user_agent(&self) -> String {
        self.user_agent.lock().unwrap().clone()
    }

    /// Requests from now on wait for [`release`](Self::release).
    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }

    fn restart(&mut self) {
        let listener = listen(self.addr, 64);
        self.addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (requests, user_agent) = (self.requests.clone(), self.user_agent.clone());
        let open = self.open.clone();
        let service = service_fn(move |req: Request<Body>| {
            requests.fetch_add(1, Ordering::SeqCst);
            let agent = req.headers().get(http::header::USER_AGENT);
            *user_agent.lock().unwrap() = agent
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let health = health.clone();
            let mut open = open.subscribe();
            async move {
                let _ = open.wait_for(|open| *open).await;
                health.oneshot(req).await
            }
        });
        self.running = Some(Running::spawn(|stopped| async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        }));
    }

    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            guard(running.stop()).await;
        }
    }

    /// Starts a graceful shutdown; the task ends once every call is done.
    fn stop_in_background(&mut self) -> tokio::task::JoinHandle<()> {
        let running = self.running.take().expect("the server runs");
        tokio::spawn(running.stop())
    }
}
