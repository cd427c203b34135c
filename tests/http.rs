//! `redial::http` against real hyper servers on 127.0.0.1 that stop (closing
//! every connection) and come back on the same port: a reconnecting client
//! over HTTP/1 and HTTP/2, and the connections' readiness, which must wake a
//! task parked on it when an idle connection goes away.
//!
//! Real sockets need the real clock, so every wait here is on an event (the
//! watch, a request the server saw, a connection it closed); the timeouts
//! only keep a broken build from hanging.
mod support;

use std::{
    collections::HashSet,
    convert::Infallible,
    future::poll_fn,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::Poll,
    time::Duration,
};

use http::{header::HOST, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use redial::{
    error::{ConnectFailed, Unavailable},
    http::{ConnectionClosed, Http1Connector, Http2Connector, SchemeMismatch},
    Backoff, ConnectionWatch, Phase, ReconnectLayer,
};
use support::{
    errors::find,
    net::{guard, refusing_port},
    server::{listen, serve_connection, Open, Proto, Running},
};
use tokio::{
    net::TcpStream,
    sync::{oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_millis(50);

// ===== a reconnecting client through a restart =====

/// HTTP/1, failing fast during the outage: requests recover by themselves
/// after a restart on the same port, and none hangs or reaches the server
/// twice.
#[tokio::test]
async fn http1_fail_fast_client_recovers_after_server_restart() {
    recovers_after_restart(Proto::Http1, Mode::FailFast).await;
}

/// HTTP/1, waiting for readiness during the outage: the same, and requests
/// made while the server is down wait and then succeed.
#[tokio::test]
async fn http1_wait_for_ready_client_recovers_after_server_restart() {
    recovers_after_restart(Proto::Http1, Mode::WaitForReady).await;
}

/// HTTP/2, failing fast during the outage: as for HTTP/1.
#[tokio::test]
async fn http2_fail_fast_client_recovers_after_server_restart() {
    recovers_after_restart(Proto::Http2, Mode::FailFast).await;
}

/// HTTP/2, waiting for readiness during the outage: as for HTTP/1.
#[tokio::test]
async fn http2_wait_for_ready_client_recovers_after_server_restart() {
    recovers_after_restart(Proto::Http2, Mode::WaitForReady).await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    FailFast,
    WaitForReady,
}

/// A client sends numbered requests one after the other through the shared
/// handle (`Reconnect::spawn`); the server is stopped mid-run and restarted on the
/// same port once the watch shows the loss. The watch goes Connected → not
/// connected → Connected, requests succeed again without a new client, and
/// the server saw each request at most once.
async fn recovers_after_restart(proto: Proto, mode: Mode) {
    support::trace_init();
    let mut server = Server::start(proto);
    let layer = layer(&server).wait_for_ready(mode == Mode::WaitForReady);
    let (client, watch) = match proto {
        Proto::Http1 => {
            let svc = layer.layer(Http1Connector::new());
            let watch = svc.watch();
            (svc.spawn(8), watch)
        }
        Proto::Http2 => {
            let svc = layer.layer(Http2Connector::new());
            let watch = svc.watch();
            (svc.spawn(8), watch)
        }
    };
    let phases = record_phases(&watch);
    let runner = Runner::start(client);

    guard(server.until_requests(3)).await;
    assert!(watch.is_connected());

    // Mid-run: the runner keeps sending while the server goes away.
    server.stop().await;
    let state = guard(watch.disconnected()).await;
    assert_ne!(state.phase(), Phase::Connected);
    let seen_while_down = server.requests();

    server.restart();
    guard(watch.connected()).await.unwrap();
    guard(server.until_requests(seen_while_down + 3)).await;

    let state = watch.state();
    assert_eq!(state.connects(), 2, "{state:?}");
    assert_eq!(state.disconnects(), 1, "{state:?}");
    assert_eq!(phases.stop(&watch).await, [false, true, false, true]);
    let outcomes = runner.stop().await;

    // Every request reached the server at most once; every success reached
    // it, and no fail-fast error did.
    let seen = server.seen_paths();
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a request was resent: {seen:?}");
    let mut failed = 0;
    for (path, result) in &outcomes {
        match result {
            Ok(body) => {
                assert_eq!(body, &format!("hello {path}"));
                assert!(unique.contains(path), "{path} answered but not seen");
            }
            Err(err) if find::<Unavailable>(&**err).is_some() => {
                assert_eq!(mode, Mode::FailFast, "{path}: {err:?}");
                assert!(!unique.contains(path), "{path} failed fast but was sent");
            }
            // The request in flight when the server went away fails with
            // hyper's error and is not resent.
            Err(err) => {
                assert!(find::<hyper::Error>(&**err).is_some(), "{path}: {err:?}");
                failed += 1;
            }
        }
    }
    assert!(failed <= 1, "{failed} requests lost with the connection");
    let answered = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    assert!(answered >= 5, "{answered} answered: {outcomes:?}");
}

/// Sends `/req/0`, `/req/1`, … one at a time until stopped, each under the
/// hang guard.
struct Runner {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(String, Result<String, BoxError>)>>,
}

type Client = redial::http::SharedHttp1<Body>;

impl Runner {
    fn start(mut client: Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0.. {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let path = format!("/req/{i}");
                let result = guard(get(&mut client, &path)).await;
                // While it fails fast, this client paces its retries as an
                // application would, rather than spinning.
                if result
                    .as_ref()
                    .is_err_and(|err| find::<Unavailable>(&**err).is_some())
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                outcomes.push((path, result));
            }
            outcomes
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<(String, Result<String, BoxError>)> {
        self.stop.store(true, Ordering::SeqCst);
        guard(self.task).await.unwrap()
    }
}

/// Records whether the watch shows Connected, each time that changes.
struct Phases {
    task: JoinHandle<Vec<bool>>,
    done: oneshot::Sender<()>,
}

fn record_phases(watch: &ConnectionWatch) -> Phases {
    let mut rx = watch.subscribe();
    let (done, mut finished) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut seen = vec![rx.borrow().is_connected()];
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = &mut finished => break,
            }
            let connected = rx.borrow_and_update().is_connected();
            if seen.last() != Some(&connected) {
                seen.push(connected);
            }
        }
        seen
    });
    Phases { task, done }
}

impl Phases {
    async fn stop(self, watch: &ConnectionWatch) -> Vec<bool> {
        // The recorder has seen the latest value once it matches the watch.
        let _ = self.done.send(());
        let mut seen = guard(self.task).await.unwrap();
        if seen.last() != Some(&watch.is_connected()) {
            seen.push(watch.is_connected());
        }
        seen
    }
}

// ===== idle connections going away =====

/// An idle HTTP/1 connection whose server stops: a task that only polls
/// `poll_ready` (and got `Ready(Ok)`) is woken and gets `ConnectionClosed`,
/// without any further request.
#[tokio::test]
async fn http1_server_stop_wakes_a_task_parked_on_readiness() {
    support::trace_init();
    let server = Server::start(Proto::Http1);
    let conn = guard(Http1Connector::<Body>::new().oneshot(server.uri()))
        .await
        .unwrap();
    server_stop_wakes_parked(server, conn).await;
}

/// An HTTP/1 server that closes the connection after one response: the
/// client's parked readiness wakes with `ConnectionClosed`, no request
/// needed.
#[tokio::test]
async fn http1_server_closing_after_a_response_wakes_a_task_parked_on_readiness() {
    support::trace_init();
    let server = Server::start_with(Proto::Http1, false);
    let mut conn = guard(Http1Connector::<Body>::new().oneshot(server.uri()))
        .await
        .unwrap();
    assert_eq!(guard(get(&mut conn, "/one")).await.unwrap(), "hello /one");

    let parked = Parked::start(conn);
    let (err, polls) = guard(parked.task).await.unwrap();
    assert!(err.is::<ConnectionClosed>(), "{err:?}");
    assert!(polls <= 3, "polled {polls} times: a polling loop?");
    guard(server.until_open(0)).await;
    assert_eq!(server.requests(), 1);
}

/// An idle HTTP/2 connection whose server stops: the parked readiness wakes
/// with `ConnectionClosed` (hyper's own HTTP/2 `poll_ready` would not wake
/// anyone).
#[tokio::test]
async fn http2_server_stop_wakes_a_task_parked_on_readiness() {
    support::trace_init();
    let server = Server::start(Proto::Http2);
    let conn = guard(Http2Connector::<Body>::new().oneshot(server.uri()))
        .await
        .unwrap();
    server_stop_wakes_parked(server, conn).await;
}

/// After one request on `conn`, parks a task on its readiness, stops the
/// server, and checks that the close wakes the task once, at once, with
/// `ConnectionClosed`.
async fn server_stop_wakes_parked<S>(mut server: Server, mut conn: S)
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError> + Send + 'static,
{
    assert_eq!(guard(get(&mut conn, "/one")).await.unwrap(), "hello /one");

    let parked = Parked::start(conn);
    let idle_polls = parked.idle().await;
    assert!(idle_polls <= 2, "polled {idle_polls} times while idle");
    let stopped_at = Instant::now();
    server.stop().await;

    let (err, polls) = guard(parked.task).await.unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(1));
    assert!(err.is::<ConnectionClosed>(), "{err:?}");
    assert_eq!(polls, idle_polls + 1, "one wake-up for the close");
    assert_eq!(server.requests(), 1);
}

/// A `Reconnect` polled only for readiness, as an eager handle polls it,
/// notices its idle connection closing: the watch shows the loss without
/// any request, and it reconnects when the server is back.
#[tokio::test]
async fn reconnect_polled_for_readiness_notices_an_idle_close() {
    support::trace_init();
    let mut server = Server::start(Proto::Http1);
    let mut svc = layer(&server).layer(Http1Connector::<Body>::new());
    let watch = svc.watch();
    assert_eq!(guard(get(&mut svc, "/one")).await.unwrap(), "hello /one");

    let polls = Arc::new(watch::Sender::new(0_usize));
    let counted = polls.clone();
    let driver_watch = watch.clone();
    let driver = tokio::spawn(async move {
        // Until the loss, then until connected again: readiness only.
        for want_connected in [false, true] {
            poll_fn(|cx| {
                counted.send_modify(|n| *n += 1);
                let _ = Service::<Request<Body>>::poll_ready(&mut svc, cx);
                if driver_watch.is_connected() == want_connected {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
        svc
    });
    let idle_polls = idle_window(&polls).await;
    assert!(idle_polls <= 2, "polled {idle_polls} times while idle");

    server.stop().await;
    let state = guard(watch.disconnected()).await;
    assert_ne!(state.phase(), Phase::Connected);
    assert_eq!(watch.state().disconnects(), 1);

    server.restart();
    let mut svc = guard(driver).await.unwrap();
    assert!(watch.is_connected());
    assert_eq!(guard(get(&mut svc, "/two")).await.unwrap(), "hello /two");
    assert_eq!(server.seen_paths(), ["/one", "/two"]);
}

/// Waits for the first poll, then watches an idle stretch: a parked task
/// must not be polled again without an event. Returns the polls so far.
async fn idle_window(polls: &watch::Sender<usize>) -> usize {
    let mut rx = polls.subscribe();
    guard(rx.wait_for(|&n| n >= 1)).await.unwrap();
    // Absence of wake-ups has no event to wait for: give it time to show.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let settled = *rx.borrow();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*rx.borrow(), settled, "woken while idle: a polling loop?");
    settled
}

/// Polls only the readiness of a connection, as an eager handle does, and
/// ends with the error that closes it and the number of polls.
struct Parked {
    polls: Arc<watch::Sender<usize>>,
    task: JoinHandle<(BoxError, usize)>,
}

impl Parked {
    fn start<S>(mut conn: S) -> Self
    where
        S: Service<Request<Body>, Error = BoxError> + Send + 'static,
    {
        let polls = Arc::new(watch::Sender::new(0));
        let counted = polls.clone();
        let task = tokio::spawn(async move {
            let err = poll_fn(|cx| {
                counted.send_modify(|n| *n += 1);
                match conn.poll_ready(cx) {
                    Poll::Ready(Err(err)) => Poll::Ready(err),
                    // Ready, and nothing to send: stay parked.
                    Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
                }
            })
            .await;
            (err, *counted.borrow())
        });
        Self { polls, task }
    }

    /// The polls of an idle stretch; see [`idle_window`].
    async fn idle(&self) -> usize {
        idle_window(&self.polls).await
    }
}

// ===== the idle timeout =====

/// HTTP/1: a shared client closes its connection once it has been idle for
/// the idle timeout; the server sees it close, the watch shows `Idle` with
/// no disconnect, and the next request connects again.
#[tokio::test]
async fn http1_idle_timeout_closes_the_connection_and_the_next_request_reconnects() {
    support::trace_init();
    let server = Server::start(Proto::Http1);
    let svc = idle_layer(&server).layer(Http1Connector::new());
    let watch = svc.watch();
    idle_closes(server, svc.spawn(8), watch).await;
}

/// HTTP/2: the same.
#[tokio::test]
async fn http2_idle_timeout_closes_the_connection_and_the_next_request_reconnects() {
    support::trace_init();
    let server = Server::start(Proto::Http2);
    let svc = idle_layer(&server).layer(Http2Connector::new());
    let watch = svc.watch();
    idle_closes(server, svc.spawn(8), watch).await;
}

const IDLE: Duration = Duration::from_millis(100);

fn idle_layer(server: &Server) -> ReconnectLayer<Uri> {
    layer(server).idle_timeout(IDLE)
}

/// Two requests, each followed by the idle close: the server accepts one
/// connection per request and sees each closed by the client.
async fn idle_closes<S>(server: Server, mut client: S, watch: ConnectionWatch)
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    for (n, path) in [(1, "/one"), (2, "/two")] {
        assert_eq!(
            guard(get(&mut client, path)).await.unwrap(),
            format!("hello {path}")
        );
        let answered = Instant::now();
        // The client closes it: the server's side of the socket ends.
        guard(server.until_open(0)).await;
        assert!(
            answered.elapsed() >= IDLE,
            "closed after {:?}",
            answered.elapsed()
        );
        let state = watch.state();
        assert_eq!(state.phase(), Phase::Idle, "{state:?}");
        assert_eq!(state.idle_closes(), n, "{state:?}");
        assert_eq!(state.disconnects(), 0, "{state:?}");
        assert_eq!(state.connects(), n, "{state:?}");
        assert_eq!(server.accepts(), n as usize, "one connection per request");
    }
    assert_eq!(server.seen_paths(), ["/one", "/two"]);
}

// ===== dropping, targets and request URIs =====

/// Dropping a connection closes its socket: the server sees it go, so no
/// driving task is left behind.
#[tokio::test]
async fn dropping_a_connection_closes_it() {
    support::trace_init();
    let server = Server::start(Proto::Http1);
    let conn = Http1Connector::<Body>::new().oneshot(server.uri());
    drop_closes(&server, guard(conn).await.unwrap()).await;

    let server = Server::start(Proto::Http2);
    let conn = Http2Connector::<Body>::new().oneshot(server.uri());
    drop_closes(&server, guard(conn).await.unwrap()).await;
}

async fn drop_closes<S>(server: &Server, mut conn: S)
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    assert_eq!(guard(get(&mut conn, "/one")).await.unwrap(), "hello /one");
    guard(server.until_open(1)).await;
    drop(conn);
    guard(server.until_open(0)).await;
}

/// The shared handle notices its idle connection closing with no request at
/// all: the watch shows the loss, and it reconnects by itself when the
/// server is back.
#[tokio::test]
async fn shared_handle_notices_an_idle_close_without_a_request() {
    support::trace_init();
    for proto in [Proto::Http1, Proto::Http2] {
        let mut server = Server::start(proto);
        let layer = layer(&server);
        let client: Client = match proto {
            Proto::Http1 => layer.layer(Http1Connector::new()).spawn(8),
            Proto::Http2 => layer.layer(Http2Connector::new()).spawn(8),
        };
        let watch = client.watch();
        guard(watch.connected()).await.unwrap();
        guard(server.until_open(1)).await;

        server.stop().await;
        let state = guard(watch.disconnected()).await;
        assert_ne!(state.phase(), Phase::Closed);
        assert_eq!(watch.state().disconnects(), 1);

        server.restart();
        guard(watch.connected()).await.unwrap();
        assert_eq!(watch.state().connects(), 2);
        assert_eq!(server.requests(), 0, "no request was needed");
    }
}

/// The task that drives an http connection logs in the span of the attempt
/// that made it: its close is logged under the connection's name.
#[tokio::test]
async fn connection_task_events_carry_the_connection_name() {
    let (captured, _guard) = support::logs::Captured::start();
    for proto in [Proto::Http1, Proto::Http2] {
        let mut server = Server::start(proto);
        let layer = layer(&server).name("orders-api");
        let client: Client = match proto {
            Proto::Http1 => layer.layer(Http1Connector::new()).spawn(8),
            Proto::Http2 => layer.layer(Http2Connector::new()).spawn(8),
        };
        let watch = client.watch();
        guard(watch.connected()).await.unwrap();
        server.stop().await;
        guard(watch.disconnected()).await;
        client.close();
    }
    let logs = captured.text();
    let closes: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("http connection"))
        .collect();
    assert!(closes.len() >= 2, "both connections' ends logged:\n{logs}");
    for line in closes {
        assert!(
            line.contains(r#"redial{name="orders-api"}"#),
            "no name on: {line}"
        );
    }
}

/// Closing the shared handle: the server sees the socket closed, later
/// calls fail with `Closed`, and no task of the client is left.
#[tokio::test]
async fn closing_the_shared_handle_closes_the_socket_and_ends_its_tasks() {
    support::trace_init();
    for proto in [Proto::Http1, Proto::Http2] {
        let server = Server::start(proto);
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let layer = layer(&server);
        let mut client: Client = match proto {
            Proto::Http1 => layer.layer(Http1Connector::new()).spawn(8),
            Proto::Http2 => layer.layer(Http2Connector::new()).spawn(8),
        };
        let watch = client.watch();
        assert_eq!(guard(get(&mut client, "/one")).await.unwrap(), "hello /one");
        guard(server.until_open(1)).await;

        client.close();
        assert_eq!(guard(watch.disconnected()).await.phase(), Phase::Closed);
        guard(server.until_open(0)).await;
        let err = guard(get(&mut client, "/two")).await.unwrap_err();
        assert!(err.is::<redial::error::Closed>(), "{err:?}");
        // The worker and the connection's driver end; only the server's
        // own tasks, counted in `before`, remain.
        guard(async {
            while tasks() > before {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(server.seen_paths(), ["/one"]);
    }
}

/// A target the connector cannot dial (no scheme, no host, not `http`)
/// fails the attempt at once with `SchemeMismatch`, whose message names the
/// rule, not a panic, and `Reconnect` reports it as `ConnectFailed`.
#[tokio::test]
async fn bad_targets_fail_to_connect_with_a_clear_error() {
    support::trace_init();
    for (target, rule) in [
        (
            "127.0.0.1:3000",
            "target without a scheme: a connector without tls dials http targets only",
        ),
        (
            "/no/host",
            "target without a scheme: a connector without tls dials http targets only",
        ),
        (
            "https://127.0.0.1:3000/",
            "https target needs tls configured on the connector",
        ),
        (
            "ftp://127.0.0.1:3000/",
            "ftp target: a connector without tls dials http targets only",
        ),
    ] {
        let uri: Uri = target.parse().unwrap();
        let err = Http1Connector::<Body>::new()
            .oneshot(uri.clone())
            .await
            .unwrap_err();
        assert!(err.is::<SchemeMismatch>(), "{target}: {err:?}");
        assert_eq!(err.to_string(), rule);
        let err = Http2Connector::<Body>::new()
            .oneshot(uri.clone())
            .await
            .unwrap_err();
        assert!(err.is::<SchemeMismatch>(), "{target}: {err:?}");
        assert_eq!(err.to_string(), rule);

        let mut svc = ReconnectLayer::new(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .backoff(Backoff::constant(RETRY))
            .layer(Http1Connector::<Body>::new());
        let watch = svc.watch();
        let err = guard(get(&mut svc, "/")).await.unwrap_err();
        assert!(find::<Unavailable>(&*err).is_some(), "{err:?}");
        assert!(find::<ConnectFailed>(&*err).is_some(), "{err:?}");
        assert_eq!(watch.phase(), Phase::Disconnected);
    }
}

/// A refused dial is a connect error carrying the `io::Error`.
#[tokio::test]
async fn refused_dial_carries_the_io_error() {
    let (_socket, addr) = refusing_port();
    let uri: Uri = format!("http://{addr}").parse().unwrap();
    for err in [
        Http1Connector::<Body>::new()
            .oneshot(uri.clone())
            .await
            .unwrap_err(),
        Http2Connector::<Body>::new()
            .oneshot(uri)
            .await
            .unwrap_err(),
    ] {
        let io = find::<io::Error>(&*err).expect("the refusal is the cause");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    }
}

/// HTTP/1 sends origin-form with a `Host` header, from a path-only or an
/// absolute request URI; HTTP/2 sends the target's scheme and authority for
/// a path-only one.
#[tokio::test]
async fn request_uris_reach_the_server_in_the_right_form() {
    support::trace_init();
    let server = Server::start(Proto::Http1);
    let authority = server.addr.to_string();
    let mut conn = guard(Http1Connector::<Body>::new().oneshot(server.uri()))
        .await
        .unwrap();
    guard(get(&mut conn, "/a?x=1")).await.unwrap();
    guard(get(&mut conn, &format!("http://{authority}/b")))
        .await
        .unwrap();
    assert_eq!(
        server.seen(),
        [
            ("/a?x=1".to_owned(), Some(authority.clone())),
            ("/b".to_owned(), Some(authority.clone())),
        ]
    );

    let server = Server::start(Proto::Http2);
    let authority = server.addr.to_string();
    let mut conn = guard(Http2Connector::<Body>::new().oneshot(server.uri()))
        .await
        .unwrap();
    guard(get(&mut conn, "/a?x=1")).await.unwrap();
    let (uri, _) = server.seen().pop().unwrap();
    assert_eq!(uri, format!("http://{authority}/a?x=1"));
}

// ===== client helpers =====

fn layer(server: &Server) -> ReconnectLayer<Uri> {
    ReconnectLayer::new(server.uri())
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::constant(RETRY))
}

/// A GET: readiness, the call, the whole body.
async fn get<S>(svc: &mut S, uri: &str) -> Result<String, BoxError>
where
    S: Service<Request<Body>, Response = Response<Incoming>>,
    S::Error: Into<BoxError>,
{
    let req = Request::get(uri).body(Body::default())?;
    let res = svc
        .ready()
        .await
        .map_err(Into::into)?
        .call(req)
        .await
        .map_err(Into::into)?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

// ===== Server: hello world over HTTP/1 or HTTP/2 =====

/// Answers `hello <path>` and records each request (its URI and `Host`
/// header). It can stop (closing the listener and every connection) and
/// start again on the same address.
struct Server {
    proto: Proto,
    keep_alive: bool,
    addr: SocketAddr,
    log: Arc<Log>,
    running: Option<Running>,
}

#[derive(Default)]
struct Log {
    seen: Mutex<Vec<(String, Option<String>)>>,
    accepts: std::sync::atomic::AtomicUsize,
    requests: watch::Sender<usize>,
    open: watch::Sender<usize>,
}

impl Server {
    fn start(proto: Proto) -> Self {
        Self::start_with(proto, true)
    }

    /// With `keep_alive` false, an HTTP/1 server closes each connection
    /// after its first response.
    fn start_with(proto: Proto, keep_alive: bool) -> Self {
        let mut server = Self {
            proto,
            keep_alive,
            addr: ([127, 0, 0, 1], 0).into(),
            log: Arc::default(),
            running: None,
        };
        server.restart();
        server
    }

    fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Listens on the same address again. SO_REUSEADDR lets the port be
    /// bound at once although the closed connections sit in TIME_WAIT.
    fn restart(&mut self) {
        let listener = listen(self.addr, 64);
        self.addr = listener.local_addr().unwrap();
        let (proto, keep_alive, log) = (self.proto, self.keep_alive, self.log.clone());
        self.running = Some(Running::accept(listener, move |stream, _| {
            Some(connection(stream, proto, keep_alive, log.clone()))
        }));
    }

    /// Stops accepting and closes every connection; returns once they are
    /// all closed.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            guard(running.stop()).await;
        }
    }

    /// Every request, over all runs: its URI and `Host` header.
    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.log.seen.lock().unwrap().clone()
    }

    fn seen_paths(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|(uri, _)| uri.parse::<Uri>().unwrap().path().to_owned())
            .collect()
    }

    fn requests(&self) -> usize {
        *self.log.requests.borrow()
    }

    /// Connections accepted, over all runs.
    fn accepts(&self) -> usize {
        self.log.accepts.load(Ordering::SeqCst)
    }

    async fn until_requests(&self, n: usize) {
        let mut rx = self.log.requests.subscribe();
        rx.wait_for(|&seen| seen >= n).await.unwrap();
    }

    /// Until exactly `n` connections are open.
    async fn until_open(&self, n: usize) {
        let mut rx = self.log.open.subscribe();
        rx.wait_for(|&open| open == n).await.unwrap();
    }
}

async fn connection(stream: TcpStream, proto: Proto, keep_alive: bool, log: Arc<Log>) {
    log.accepts.fetch_add(1, Ordering::SeqCst);
    let _open = Open::new(&log.open);
    let io = TokioIo::new(stream);
    let hello = service_fn(move |req: Request<Incoming>| {
        let host = req
            .headers()
            .get(HOST)
            .map(|h| h.to_str().unwrap().to_owned());
        log.seen.lock().unwrap().push((req.uri().to_string(), host));
        log.requests.send_modify(|n| *n += 1);
        let body = Body::from(format!("hello {}", req.uri().path()));
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    serve_connection(io, proto, keep_alive, hello).await;
}
