#![cfg(feature = "http")]
//! Keep-alive over real sockets on 127.0.0.1. A relay
//! (`support::relay`) between the client and a hyper HTTP/2 server freezes
//! an established connection (forwards nothing either way, closes nothing),
//! as a hung proxy or a dropped route would: pings notice it within
//! interval + timeout and the client reconnects on a fresh socket; without
//! them it goes unnoticed. A hand-written HTTP/2 server that polices pings
//! as gRPC servers do (`support::police`) answers frequent ones with
//! `GOAWAY ENHANCE_YOUR_CALM "too_many_pings"`, and the next connection
//! pings half as often. On Linux, the kernel's own table shows that
//! `tcp_keepalive` reaches the socket.
//!
//! The detection times are measured on the real clock; the bounds allow
//! [`MARGIN`] for scheduling, and every other wait is on an event.
mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use redial::{
    http::{ConnectionClosed, Http2Connector, SharedHttp2},
    Backoff, ReconnectLayer,
};
use support::{
    errors::find,
    logs::Captured,
    net::guard,
    police::PingPolice,
    relay::Relay,
    server::{listen, serve_connection, Proto, Running},
};
use tokio::{
    sync::watch,
    time::{timeout, Instant},
};
use tower::{BoxError, Layer, ServiceExt};

type Body = Full<Bytes>;

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack on a loaded machine: the only allowance for time.
const MARGIN: Duration = Duration::from_millis(300);
const RETRY: Duration = Duration::from_millis(50);

// ===== a frozen connection =====

/// An idle connection frozen on the way: pings notice it within interval +
/// timeout, the watch says keep-alive timed out, and the client reconnects
/// on a fresh socket and serves the next request.
#[tokio::test]
async fn keep_alive_notices_a_frozen_idle_connection() {
    support::trace_init();
    let server = Server::start();
    let relay = Relay::start(server.addr).await;
    let client = client(
        relay.uri(),
        Http2Connector::new().keep_alive(INTERVAL, TIMEOUT),
    );
    let watch = client.watch();
    assert_eq!(guard(get(&client, "/one")).await.unwrap(), "hello /one");

    relay.freeze();
    let frozen_at = Instant::now();
    let state = guard(watch.disconnected()).await;
    let detected = frozen_at.elapsed();
    eprintln!("frozen idle connection noticed after {detected:?}");
    assert_detected_in_time(detected);
    let err = state.last_error().expect("the loss has a cause");
    let closed = find::<ConnectionClosed>(err).expect("closed by keep-alive");
    assert!(closed.is_keep_alive_timeout(), "{}", chain(err));
    assert!(
        chain(err).contains("keep-alive timed out"),
        "{}",
        chain(err)
    );

    guard(watch.connected()).await.unwrap();
    assert_eq!(relay.accepted(), 2, "reconnected on a fresh socket");
    assert_eq!(guard(get(&client, "/two")).await.unwrap(), "hello /two");
    assert_eq!(server.paths(), ["/one", "/two"]);
}

/// A connection frozen while a request waits for its response: the request
/// fails with hyper's timeout once a ping goes unanswered, it is not sent
/// again, and the next request goes through a new connection.
#[tokio::test]
async fn keep_alive_fails_the_request_in_flight_on_a_frozen_connection() {
    support::trace_init();
    let server = Server::start();
    let relay = Relay::start(server.addr).await;
    let client = client(
        relay.uri(),
        Http2Connector::new().keep_alive(INTERVAL, TIMEOUT),
    );
    let watch = client.watch();
    guard(watch.connected()).await.unwrap();

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { get(&client, "/slow").await }
    });
    guard(server.until_requests(1)).await;
    relay.freeze();
    let frozen_at = Instant::now();
    let err = guard(in_flight).await.unwrap().unwrap_err();
    let detected = frozen_at.elapsed();
    eprintln!("request in flight failed after {detected:?}");
    assert_detected_in_time(detected);
    let hyper = find::<hyper::Error>(&*err).expect("hyper's error");
    assert!(hyper.is_timeout(), "{}", chain(&*err));

    guard(watch.connected()).await.unwrap();
    assert_eq!(guard(get(&client, "/after")).await.unwrap(), "hello /after");
    assert_eq!(relay.accepted(), 2);
    assert_eq!(server.paths(), ["/slow", "/after"], "never resent");
}

/// Without keep-alive the same frozen connection still looks open well
/// after pings would have noticed it: the pings are what detect it.
#[tokio::test]
async fn without_keep_alive_a_frozen_connection_goes_unnoticed() {
    support::trace_init();
    let server = Server::start();
    let relay = Relay::start(server.addr).await;
    let client = client(relay.uri(), Http2Connector::new());
    let watch = client.watch();
    assert_eq!(guard(get(&client, "/one")).await.unwrap(), "hello /one");

    relay.freeze();
    // Past the longest keep-alive would take to notice it, with its margin.
    let unnoticed = INTERVAL + TIMEOUT + MARGIN;
    assert!(timeout(unnoticed, watch.disconnected()).await.is_err());
    assert!(watch.is_connected(), "{:?}", watch.state());
    assert_eq!(relay.accepted(), 1);
}

fn client(uri: Uri, connector: Http2Connector<Body>) -> SharedHttp2<Body> {
    ReconnectLayer::new(uri)
        .backoff(Backoff::constant(RETRY))
        .layer(connector)
        .spawn(8)
}

/// A ping is due at most one interval after the freeze and times out one
/// timeout later; it cannot time out sooner than the timeout.
fn assert_detected_in_time(detected: Duration) {
    assert!(detected >= TIMEOUT, "noticed after {detected:?}");
    assert!(
        detected <= INTERVAL + TIMEOUT + MARGIN,
        "noticed after {detected:?}"
    );
}

// ===== TCP keep-alive =====

/// `tcp_keepalive` reaches the socket: the kernel arms its keep-alive timer
/// on the client's socket, for the idle time given (in /proc/net/tcp, timer
/// kind 2, in clock ticks of 1/100 s), and a connector without it leaves
/// no timer. `tcp_user_timeout` is set beside it and the connection still
/// works; the kernel does not show that option in /proc/net/tcp, so its
/// value is not checked here (hyper-util sets it with `setsockopt`).
///
/// A relay cannot show TCP keep-alive detecting a frozen connection: the
/// relay's own kernel answers the probes, which is why it sees only the
/// next hop.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_keepalive_arms_the_kernels_timer_on_the_socket() {
    use redial::http::Http1Connector;

    support::trace_init();
    let idle = Duration::from_secs(60);
    let user_timeout = Duration::from_secs(30);
    let ticks = 5_000..=6_000; // 50 s to 60 s

    let server = Server::start_with(Proto::Http1);
    let connector = Http1Connector::new()
        .tcp_keepalive(idle)
        .tcp_user_timeout(user_timeout);
    let client = ReconnectLayer::new(server.uri()).layer(connector).spawn(8);
    let (kind, left) = socket_timer(&server, client).await;
    assert_eq!(kind, 2, "keep-alive timer");
    assert!(ticks.contains(&left), "{left} ticks left");

    let server = Server::start();
    let connector = Http2Connector::new()
        .tcp_keepalive(idle)
        .tcp_user_timeout(user_timeout);
    let client = ReconnectLayer::new(server.uri()).layer(connector).spawn(8);
    let (kind, left) = socket_timer(&server, client).await;
    assert_eq!(kind, 2, "keep-alive timer");
    assert!(ticks.contains(&left), "{left} ticks left");

    let server = Server::start_with(Proto::Http1);
    let client = ReconnectLayer::new(server.uri())
        .layer(Http1Connector::new())
        .spawn(8);
    let (kind, _) = socket_timer(&server, client).await;
    assert_eq!(kind, 0, "no timer without tcp_keepalive");
}

/// After one request through `client`, the kernel's timer on its socket.
#[cfg(target_os = "linux")]
async fn socket_timer(server: &Server, client: SharedHttp2<Body>) -> (u8, u64) {
    assert_eq!(guard(get(&client, "/one")).await.unwrap(), "hello /one");
    let (local, remote) = (server.peers()[0], server.addr);
    // A retransmit or loss-probe timer outranks it until the last data is
    // acknowledged.
    support::net::settle(
        "the socket's timer",
        Duration::from_secs(2),
        || tcp_timer(local, remote),
        |timer| timer.is_some_and(|(kind, _)| kind != 1),
    )
    .await;
    tcp_timer(local, remote).unwrap()
}

/// The kernel's timer on the socket from `local` to `remote`, from
/// /proc/net/tcp: its kind (0 none, 1 retransmit, 2 keep-alive) and the
/// clock ticks left.
#[cfg(target_os = "linux")]
fn tcp_timer(local: SocketAddr, remote: SocketAddr) -> Option<(u8, u64)> {
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if port(fields[1])? != local.port() || port(fields[2])? != remote.port() {
            return None;
        }
        let (kind, ticks) = fields[5].split_once(':')?;
        Some((
            u8::from_str_radix(kind, 16).ok()?,
            u64::from_str_radix(ticks, 16).ok()?,
        ))
    })
}

// ===== too_many_pings =====

/// A server that allows a ping only every 350 ms sends GOAWAY
/// ENHANCE_YOUR_CALM "too_many_pings" to a client pinging every 200 ms:
/// the loss says so, the next connection pings every 400 ms (which the
/// server accepts), and one warning says the interval doubled.
#[tokio::test]
async fn too_many_pings_doubles_the_interval_of_the_next_connection() {
    let (captured, _guard) = Captured::start();
    let police = PingPolice::start(Duration::from_millis(350), b"too_many_pings");
    let connector = Http2Connector::new().keep_alive(INTERVAL, Duration::from_secs(5));
    let shares_the_interval = connector.clone();
    let client = client(police.uri(), connector);
    let watch = client.watch();

    guard(watch.connected()).await.unwrap();
    let state = guard(watch.disconnected()).await;
    let err = state.last_error().expect("the loss has a cause");
    let closed = find::<ConnectionClosed>(err).expect("closed by the server");
    assert!(closed.is_too_many_pings(), "{}", chain(err));
    assert_eq!(
        shares_the_interval.keep_alive_interval(),
        Some(INTERVAL * 2)
    );

    // The second connection's pings are answered: no more GOAWAY.
    guard(police.until_answered(1, 2)).await;
    assert_eq!(police.connections(), 2);
    assert!(watch.is_connected());
    assert_eq!(watch.state().disconnects(), 1);
    assert_eq!(
        shares_the_interval.keep_alive_interval(),
        Some(INTERVAL * 2)
    );
    let logs = captured.text();
    let warnings: Vec<_> = logs
        .lines()
        .filter(|line| line.contains("keep-alive interval doubled"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("WARN"), "{logs}");
    assert!(warnings[0].contains("interval=400ms"), "{logs}");
}

/// GOAWAY ENHANCE_YOUR_CALM for other abuse (h2 sends `too_many_resets`
/// to a client that resets streams too fast) is not about pings: the
/// interval stays, and no warning blames the pings.
#[tokio::test]
async fn enhance_your_calm_about_something_else_leaves_the_interval() {
    let (captured, _guard) = Captured::start();
    let police = PingPolice::start(Duration::from_millis(350), b"too_many_resets");
    let connector = Http2Connector::new().keep_alive(INTERVAL, Duration::from_secs(5));
    let shares_the_interval = connector.clone();
    let client = client(police.uri(), connector);
    let watch = client.watch();

    guard(watch.connected()).await.unwrap();
    let state = guard(watch.disconnected()).await;
    let err = state.last_error().expect("the loss has a cause");
    let closed = find::<ConnectionClosed>(err).expect("closed by the server");
    assert!(!closed.is_too_many_pings(), "{}", chain(err));
    assert!(chain(err).contains("too_many_resets"), "{}", chain(err));
    assert_eq!(shares_the_interval.keep_alive_interval(), Some(INTERVAL));
    let logs = captured.text();
    assert!(!logs.contains("keep-alive interval doubled"), "{logs}");
}

// ===== the server =====

/// Answers `hello <path>` over HTTP/2 (or `proto`), except `/slow`, which
/// it never answers, and records each request's path and each client's
/// address.
struct Server {
    addr: SocketAddr,
    paths: watch::Sender<Vec<String>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _running: Running,
}

impl Server {
    fn start() -> Self {
        Self::start_with(Proto::Http2)
    }

    fn start_with(proto: Proto) -> Self {
        let listener = listen(([127, 0, 0, 1], 0).into(), 16);
        let addr = listener.local_addr().unwrap();
        let paths = watch::Sender::new(Vec::new());
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (seen, clients) = (paths.clone(), peers.clone());
        let running = Running::accept(listener, move |tcp, peer| {
            clients.lock().unwrap().push(peer);
            let seen = seen.clone();
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let path = req.uri().path().to_owned();
                seen.send_modify(|paths| paths.push(path.clone()));
                async move {
                    if path == "/slow" {
                        std::future::pending::<()>().await;
                    }
                    let body = Body::from(format!("hello {path}"));
                    Ok::<_, Infallible>(Response::new(body))
                }
            });
            Some(serve_connection(TokioIo::new(tcp), proto, true, svc))
        });
        Self {
            addr,
            paths,
            peers,
            _running: running,
        }
    }

    fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// The client's address of each connection, in order.
    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.paths.borrow().clone()
    }

    async fn until_requests(&self, n: usize) {
        let mut rx = self.paths.subscribe();
        let _ = rx.wait_for(|paths| paths.len() >= n).await;
    }
}

/// A GET through the shared handle: the whole body.
async fn get(client: &SharedHttp2<Body>, path: &str) -> Result<String, BoxError> {
    let req = Request::get(path).body(Body::default())?;
    let res = client.clone().oneshot(req).await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// An error and its sources, as a person reads them.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(err) = next {
        text.push_str(": ");
        text.push_str(&err.to_string());
        next = err.source();
    }
    text
}
