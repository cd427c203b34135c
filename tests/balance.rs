//! Many endpoints: `tower::balance::p2c::Balance` over three `Reconnect`s in
//! wait-for-ready mode, each dialling its own line server on 127.0.0.1. An
//! endpoint whose server is down stays `Pending`, so the balancer skips it and
//! requests succeed on the others; once the server is back, the endpoint
//! takes traffic again.
//!
//! Real sockets need the real clock, so every wait here is on an event (a
//! reply, the watch); the timeouts only keep a broken build from hanging.
//!
//! A lazy `Reconnect` learns of a loss, and makes its attempts, only when it
//! is polled, and the balancer polls its endpoints only while it has a
//! request to place. So where a test waits for an endpoint's watch to change,
//! it keeps requests flowing meanwhile, as a real client's traffic would.
#[path = "../examples/common/line.rs"]
mod line;
mod support;

use std::{future::Future, io, net::SocketAddr, pin::pin, time::Duration};

use line::{Dial, LineServer};
use redial::{error::Unavailable, Backoff, ConnectionWatch, Phase, Reconnect, ReconnectLayer};
use support::{
    errors::find,
    net::{guard, refusing_port},
};
use tokio::task::JoinHandle;
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::ServiceList,
    load::{CompleteOnResponse, PendingRequests},
    BoxError, Layer, Service, ServiceExt,
};

/// Requests per batch. With three endpoints ready, each is picked with
/// probability about 1/3 per request, so one is left out of a batch of 60
/// with probability about (2/3)^60, 3e-11.
const N: usize = 60;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(100);

/// Traffic leaves an endpoint whose server stops, with no request failing
/// once the client knows, and returns to it after the server restarts on the
/// same port.
#[tokio::test]
async fn traffic_moves_off_a_dead_endpoint_and_back() {
    support::trace_init();
    let mut servers = [start_server(), start_server(), start_server()];
    let (client, watches) = balancer(servers.iter().map(LineServer::addr));
    let mut answered = Vec::new();

    // All three up: each takes a share.
    answered.extend(guard(batch(&client, "before")).await);
    let before = counts(&servers);
    assert!(before.iter().all(|&n| n > 0), "before: {before:?}");
    assert_eq!(before.iter().sum::<usize>(), N);

    servers[1].stop().await;
    // The client learns of the loss from the first request the balancer
    // places on endpoint 2 after it. That request may already be on its way
    // over the dying socket and then fails with the socket's own error (a
    // request is never resent); from then on the endpoint is skipped.
    let notice = guard(traffic_until(&client, "notice", watches[1].disconnected())).await;
    assert!(notice.failed.len() <= 1, "{:?}", notice.failed);
    for err in &notice.failed {
        assert!(find::<Unavailable>(&**err).is_none(), "{err:?}");
        assert!(find::<io::Error>(&**err).is_some(), "{err:?}");
    }
    let notice_answered = notice.answered.len();
    answered.extend(notice.answered);

    // Endpoint 2 down: every request succeeds on the other two.
    let mark = counts(&servers);
    answered.extend(guard(batch(&client, "during")).await);
    let during = since(&servers, mark);
    assert_eq!(during[1], 0, "during: {during:?}");
    assert!(during[0] > 0 && during[2] > 0, "during: {during:?}");
    assert_eq!(during.iter().sum::<usize>(), N);
    assert_ne!(watches[1].phase(), Phase::Connected);

    // Back on the same port: the endpoint reconnects while traffic flows,
    // and none of that traffic fails.
    servers[1].restart().unwrap();
    let wait = guard(traffic_until(&client, "return", watches[1].connected())).await;
    assert!(wait.failed.is_empty(), "{:?}", wait.failed);
    answered.extend(wait.answered.iter().cloned());

    let mark = counts(&servers);
    answered.extend(guard(batch(&client, "after")).await);
    let after = since(&servers, mark);
    assert!(after[1] > 0, "after: {after:?}");
    assert_eq!(after.iter().sum::<usize>(), N);
    eprintln!(
        "per endpoint: before {before:?}, during {during:?}, after {after:?}; \
         noticing the loss: {} answered, {} failed; reconnecting: {} answered",
        notice_answered,
        notice.failed.len(),
        wait.answered.len(),
    );

    // Each answered request was seen by exactly one server, exactly once.
    assert_eq!(all_seen(&servers), sorted(answered));
    let state = watches[1].state();
    assert_eq!((state.connects(), state.disconnects()), (2, 1));
    for watch in [&watches[0], &watches[2]] {
        let state = watch.state();
        assert_eq!((state.connects(), state.disconnects()), (1, 0));
    }
}

/// With one endpoint's server never up, every request is served by the other
/// two, while the dead endpoint keeps failing its attempts out of sight.
#[tokio::test]
async fn an_endpoint_down_from_the_start_fails_no_request() {
    support::trace_init();
    let servers = [start_server(), start_server()];
    let (_socket, down) = refusing_port();
    let (client, watches) = balancer([servers[0].addr(), down, servers[1].addr()]);

    // Until its first attempt has failed, the dead endpoint is Connecting.
    let refused = async {
        let mut states = watches[1].subscribe();
        let _ = states.wait_for(|s| s.phase() == Phase::Disconnected).await;
    };
    let start = guard(traffic_until(&client, "start", refused)).await;
    assert!(start.failed.is_empty(), "{:?}", start.failed);
    let mut answered = start.answered;

    let mark = counts(&servers);
    answered.extend(guard(batch(&client, "request")).await);
    let served = since(&servers, mark);
    assert!(served.iter().all(|&n| n > 0), "served: {served:?}");
    assert_eq!(served.iter().sum::<usize>(), N);
    eprintln!("per endpoint: {served:?} (endpoint 2 down)");
    assert_eq!(all_seen(&servers), sorted(answered));

    let state = watches[1].state();
    assert_eq!(state.phase(), Phase::Disconnected);
    assert_eq!(state.connects(), 0);
    assert!(state.attempt() >= 1);
    let cause = state.last_error().and_then(|e| find::<io::Error>(e));
    assert_eq!(
        cause.map(io::Error::kind),
        Some(io::ErrorKind::ConnectionRefused),
        "{state:?}"
    );
    assert!(watches[0].is_connected() && watches[2].is_connected());
}

// ===== the client =====

/// An endpoint: a reconnecting connection whose load is its requests in
/// flight.
type Endpoint = PendingRequests<Reconnect<Dial, SocketAddr>>;
type Client =
    Buffer<String, <Balance<ServiceList<Vec<Endpoint>>, String> as Service<String>>::Future>;

/// A balancer over one wait-for-ready `Reconnect` per address, under a
/// `Buffer` so that requests can run concurrently, and the endpoints'
/// watches, in the same order.
fn balancer(addrs: impl IntoIterator<Item = SocketAddr>) -> (Client, Vec<ConnectionWatch>) {
    let (endpoints, watches): (Vec<_>, Vec<_>) = addrs
        .into_iter()
        .map(|addr| {
            let svc = ReconnectLayer::new(addr)
                .connect_timeout(CONNECT_TIMEOUT)
                .backoff(Backoff::constant(RETRY))
                .wait_for_ready(true)
                .layer(Dial::default());
            let watch = svc.watch();
            let endpoint = PendingRequests::new(svc, CompleteOnResponse::default());
            (endpoint, watch)
        })
        .unzip();
    let balance = Balance::new(ServiceList::new(endpoints));
    (Buffer::new(balance, N), watches)
}

/// Sends `N` requests at once and checks that each gets its own answer;
/// returns the lines sent.
async fn batch(client: &Client, tag: &str) -> Vec<String> {
    let lines: Vec<_> = (0..N).map(|i| format!("{tag} {i}")).collect();
    let replies: Vec<_> = lines.iter().map(|line| spawn_call(client, line)).collect();
    for (line, reply) in lines.iter().zip(replies) {
        match reply.await.unwrap() {
            Ok(reply) => assert_eq!(reply, format!("echo: {line}")),
            Err(err) => panic!("{line} failed: {err:?}"),
        }
    }
    lines
}

/// What [`traffic_until`] sent.
#[derive(Default)]
struct Traffic {
    answered: Vec<String>,
    failed: Vec<BoxError>,
}

/// Sends requests one after another until `event` happens, and returns how
/// each fared. Each request runs in a task of its own and is awaited to the
/// end, so none is lost when the event interrupts the wait for it.
async fn traffic_until(client: &Client, tag: &str, event: impl Future) -> Traffic {
    let mut event = pin!(event);
    let mut traffic = Traffic::default();
    for i in 0.. {
        let line = format!("{tag} {i}");
        let mut reply = spawn_call(client, &line);
        let (result, done) = tokio::select! {
            biased;
            result = &mut reply => (result, false),
            _ = &mut event => (reply.await, true),
        };
        match result.unwrap() {
            Ok(reply) => {
                assert_eq!(reply, format!("echo: {line}"));
                traffic.answered.push(line);
            }
            Err(err) => traffic.failed.push(err),
        }
        if done {
            break;
        }
    }
    traffic
}

fn spawn_call(client: &Client, line: &str) -> JoinHandle<Result<String, BoxError>> {
    let (mut client, line) = (client.clone(), line.to_owned());
    tokio::spawn(async move { client.ready().await?.call(line).await })
}

// ===== the servers =====

/// A [`LineServer`] on a free port of 127.0.0.1.
fn start_server() -> LineServer {
    LineServer::start(([127, 0, 0, 1], 0).into()).unwrap()
}

/// How many requests each server has seen so far, by its own record.
fn counts<const K: usize>(servers: &[LineServer; K]) -> [usize; K] {
    servers.each_ref().map(|server| server.seen().len())
}

/// How many requests each server has seen since `mark`.
fn since<const K: usize>(servers: &[LineServer; K], mark: [usize; K]) -> [usize; K] {
    let now = counts(servers);
    std::array::from_fn(|i| now[i] - mark[i])
}

/// Every line every server has seen, sorted.
fn all_seen(servers: &[LineServer]) -> Vec<String> {
    sorted(servers.iter().flat_map(LineServer::seen).collect())
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}
