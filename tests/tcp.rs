//! Real sockets on 127.0.0.1: a line server that stops and comes back on the
//! same port, and a client connection whose `poll_ready` fails once the peer
//! has closed it, as hyper's `SendRequest` does.
//!
//! Real sockets need the real clock, so every wait here is on an event (the
//! watch, a dial, a reply); the timeouts only keep a broken build from
//! hanging.
#[path = "../examples/common/line.rs"]
mod line;
mod support;

use std::{
    future::poll_fn,
    io,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use line::{Dial, LineConn, LineServer};
use redial::{
    error::{Resend, Unavailable},
    Backoff, ConnectionWatch, Phase, Reconnect, ReconnectLayer,
};
use support::{
    errors::find,
    net::{guard, refusing_port},
};
use tokio::{sync::watch, task::JoinHandle};
use tower::{buffer::Buffer, BoxError, Layer, Service, ServiceExt};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_millis(50);

/// After the server goes away, requests fail fast with `Unavailable` instead
/// of hanging, and the same client recovers by itself when the server comes
/// back on the same port, without resending anything.
#[tokio::test]
async fn client_recovers_after_server_restart_on_same_port() {
    support::trace_init();
    let mut server = start_server();
    let dialer = Dialer::default();
    let mut svc = layer(server.addr()).layer(dialer.clone());
    let watch = svc.watch();

    assert_eq!(guard(call(&mut svc, "one")).await.unwrap(), "echo: one");
    guard(watch.connected()).await.unwrap();

    server.stop().await;
    // The client hears of the loss from its next request. That request may
    // already be on its way over the dying socket and then fails with the
    // socket's own error (it is not resent); every later one fails fast.
    for i in 0..5 {
        let err = guard(call(&mut svc, "down")).await.unwrap_err();
        if find::<Unavailable>(&*err).is_none() {
            assert!(i == 0, "request {i} failed with {err:?}, not Unavailable");
            assert!(find::<io::Error>(&*err).is_some(), "{err:?}");
        }
    }
    let state = guard(watch.disconnected()).await;
    assert_eq!(state.phase(), Phase::Disconnected);
    assert!(state.last_error().is_some());

    server.restart().unwrap();
    guard(until_connected(&mut svc, &watch)).await;
    assert_eq!(guard(call(&mut svc, "two")).await.unwrap(), "echo: two");

    let state = watch.state();
    assert_eq!(state.connects(), 2);
    assert_eq!(state.disconnects(), 1);
    assert_eq!(server.seen(), ["one", "two"]);
}

/// With `wait_for_ready(true)` under a `Buffer`, requests made while the
/// server is down wait through the failed attempts and all succeed once it
/// is back.
#[tokio::test]
async fn wait_for_ready_requests_wait_out_the_restart() {
    support::trace_init();
    let mut server = start_server();
    let dialer = Dialer::default();
    let svc = layer(server.addr())
        .wait_for_ready(true)
        .layer(dialer.clone());
    let watch = svc.watch();
    let client = Buffer::new(svc, 32);

    assert_eq!(
        guard(call(&mut client.clone(), "before")).await.unwrap(),
        "echo: before"
    );

    server.stop().await;
    // The first request after the stop tells the client: either it finds the
    // connection closed and waits like the others, or it was already sent
    // over the dying socket and fails with the socket's error.
    let mut first = spawn_call(&client, "first");
    let first_lost = tokio::select! {
        result = &mut first => {
            let err = result.unwrap().unwrap_err();
            assert!(find::<io::Error>(&*err).is_some(), "{err:?}");
            true
        }
        _ = guard(watch.disconnected()) => false,
    };

    let dials = dialer.attempts();
    let waiting: Vec<_> = (0..5)
        .map(|i| spawn_call(&client, &format!("during {i}")))
        .collect();
    // Two more refused attempts, and the requests still wait.
    guard(dialer.until_attempts(dials + 2)).await;
    assert!(waiting.iter().all(|r| !r.is_finished()));
    assert_eq!(watch.phase(), Phase::Disconnected);

    server.restart().unwrap();
    let mut answered = vec!["before".to_owned()];
    for (i, request) in waiting.into_iter().enumerate() {
        let reply = guard(request).await.unwrap().unwrap();
        assert_eq!(reply, format!("echo: during {i}"));
        answered.push(format!("during {i}"));
    }
    if !first_lost {
        assert_eq!(guard(first).await.unwrap().unwrap(), "echo: first");
        answered.push("first".to_owned());
    }

    let state = watch.state();
    assert_eq!(state.connects(), 2);
    assert_eq!(state.disconnects(), 1);
    let mut seen = server.seen();
    seen.sort();
    answered.sort();
    assert_eq!(seen, answered);
}

/// With nothing listening, 20 concurrent callers through a `Buffer` all fail
/// fast with `Unavailable` carrying the refusal, after one dial, not one each.
#[tokio::test]
async fn connect_refused_fails_fast_without_dialling_per_request() {
    const N: usize = 20;
    support::trace_init();
    let (_socket, addr) = refusing_port();
    let dialer = Dialer::default();
    // The next attempt is a minute off, so the schedule allows exactly one
    // dial while the callers run, and finishing within the hang guard shows
    // that none of them waited for a second.
    let svc = ReconnectLayer::new(addr)
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::constant(Duration::from_secs(60)))
        .layer(dialer.clone());
    let watch = svc.watch();
    let client = Buffer::new(svc, N);

    let callers: Vec<_> = (0..N)
        .map(|i| spawn_call(&client, &format!("request {i}")))
        .collect();
    for caller in callers {
        let err = guard(caller).await.unwrap().unwrap_err();
        let unavailable = find::<Unavailable>(&*err).expect("fails fast with Unavailable");
        assert_eq!(unavailable.attempt(), 1);
        assert!(unavailable.retry_at().is_some());
        let cause = find::<io::Error>(&*err).expect("the refusal is the cause");
        assert_eq!(cause.kind(), io::ErrorKind::ConnectionRefused);
    }

    assert_eq!(dialer.attempts(), 1);
    let state = watch.state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert_eq!(state.attempt(), 1);
    assert_eq!(state.connects(), 0);
}

// ===== client helpers =====

/// A line the connection could not write, because the peer had closed it
/// first, comes back with `Resend`, the line inside, for the shared handle
/// to send on the next connection (tests/resend_rules.rs checks that it does).
#[tokio::test]
async fn an_unwritten_line_is_handed_back() {
    let mut server = start_server();
    let stream = guard(tokio::net::TcpStream::connect(server.addr()))
        .await
        .unwrap();
    let mut conn = LineConn::new(stream);
    server.stop().await;
    guard(poll_fn(|cx| match conn.poll_ready(cx) {
        Poll::Ready(Err(_)) => Poll::Ready(()),
        _ => Poll::Pending,
    }))
    .await;
    let err = guard(conn.call("unsent".into())).await.unwrap_err();
    let resend = err.downcast::<Resend<String>>().expect("handed back");
    assert!(resend.is_unwritten());
    assert_eq!(resend.into_request(), "unsent");
    assert!(server.seen().is_empty());
}

fn layer(addr: SocketAddr) -> ReconnectLayer<SocketAddr> {
    ReconnectLayer::new(addr)
        .connect_timeout(CONNECT_TIMEOUT)
        .backoff(Backoff::constant(RETRY))
}

/// One request: readiness, then the call.
async fn call<S>(svc: &mut S, line: &str) -> Result<String, BoxError>
where
    S: Service<String, Response = String, Error = BoxError>,
{
    svc.ready().await?.call(line.to_owned()).await
}

type Shared = Buffer<String, <Reconnect<Dialer, SocketAddr> as Service<String>>::Future>;

fn spawn_call(client: &Shared, line: &str) -> JoinHandle<Result<String, BoxError>> {
    let (mut client, line) = (client.clone(), line.to_owned());
    tokio::spawn(async move { client.ready().await?.call(line).await })
}

/// Polls the lazy client, as a waiting request would, until the watch shows
/// it connected. Each `poll_ready` leaves our waker on whatever the client
/// waits for (the retry timer or the running attempt), so this wakes on
/// events, never on a timer of its own.
async fn until_connected(svc: &mut Reconnect<Dialer, SocketAddr>, watch: &ConnectionWatch) {
    poll_fn(|cx| {
        let _ = Service::<String>::poll_ready(svc, cx);
        if watch.is_connected() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// A [`LineServer`] on a free port of 127.0.0.1.
fn start_server() -> LineServer {
    LineServer::start(([127, 0, 0, 1], 0).into()).unwrap()
}

// ===== Dialer: the make service =====

/// The line protocol's [`Dial`], counting the attempts on a watch so a test
/// can await them.
#[derive(Clone, Default)]
struct Dialer {
    dial: Dial,
    attempts: Arc<watch::Sender<usize>>,
}

impl Dialer {
    fn attempts(&self) -> usize {
        *self.attempts.borrow()
    }

    async fn until_attempts(&self, n: usize) {
        let mut attempts = self.attempts.subscribe();
        attempts.wait_for(|&a| a >= n).await.unwrap();
    }
}

impl Service<SocketAddr> for Dialer {
    type Response = LineConn;
    type Error = io::Error;
    type Future = <Dial as Service<SocketAddr>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.dial.poll_ready(cx)
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        self.attempts.send_modify(|a| *a += 1);
        self.dial.call(addr)
    }
}
