//! A pool per endpoint from DNS (a scripted resolver) under tower's
//! balancer, against real HTTP/1 servers on 127.0.0.1, 127.0.0.2 and
//! 127.0.0.3 (Linux routes all of 127/8 to loopback): endpoints added and
//! removed, a replica lost under load and back, and flapping DNS under
//! load. Each prints its figures (`-- --nocapture`) for RELIABILITY.md.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use redial::{discover, error::Unavailable, http::Http1Connector, Backoff, Phase, ReconnectLayer};
use support::{
    errors::find,
    net::guard,
    server::{listen, serve_connection, Proto, Running},
};
use tokio::time::Instant;
use tower::{balance::p2c::Balance, buffer::Buffer, BoxError, Service, ServiceExt};

type Body = Full<Bytes>;

/// A server on one loopback address that answers with that address, counts
/// what it accepted and answered, and stops (aborting its connections, as a
/// crash does) and starts again on the same address.
struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    running: Option<Running>,
}

impl Server {
    fn start(addr: SocketAddr) -> Self {
        let mut server = Self {
            addr,
            accepts: Arc::default(),
            answered: Arc::default(),
            running: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let listener = listen(self.addr, 128);
        let (accepts, answered) = (self.accepts.clone(), self.answered.clone());
        let me = self.addr.ip().to_string();
        self.running = Some(Running::accept(listener, move |stream, _| {
            accepts.fetch_add(1, Ordering::SeqCst);
            let (answered, me) = (answered.clone(), me.clone());
            let svc = service_fn(move |_: Request<Incoming>| {
                let (answered, me) = (answered.clone(), me.clone());
                async move {
                    // A little work, so that requests overlap.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(Body::from(me)))
                }
            });
            Some(serve_connection(
                TokioIo::new(stream),
                Proto::Http1,
                true,
                svc,
            ))
        }));
    }

    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            guard(running.stop()).await;
        }
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

/// Three servers on 127.0.0.1, .2 and .3, on one port.
fn three_servers() -> Vec<Server> {
    // A port free on .1 is almost always free on .2 and .3; try a few.
    for _ in 0..20 {
        let first = listen(([127, 0, 0, 1], 0).into(), 1);
        let port = first.local_addr().unwrap().port();
        drop(first);
        let addrs: Vec<SocketAddr> = (1..=3).map(|i| ([127, 0, 0, i], port).into()).collect();
        let free = addrs
            .iter()
            .all(|addr| std::net::TcpListener::bind(addr).is_ok());
        if free {
            return addrs.into_iter().map(Server::start).collect();
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

/// The answers a scripted resolver gives: the addresses it returns now, and
/// how many lookups it made.
#[derive(Clone, Default)]
struct Zone {
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    lookups: Arc<AtomicUsize>,
}

impl Zone {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.addrs.lock().unwrap() = addrs.to_vec();
    }

    fn source(&self, every: Duration) -> discover::Dns {
        let zone = self.clone();
        discover::dns("api.test", 0, every).with_resolver(move |_, _| {
            zone.lookups.fetch_add(1, Ordering::SeqCst);
            let addrs = zone.addrs.lock().unwrap().clone();
            async move { Ok::<_, io::Error>(addrs) }
        })
    }
}

/// The client: a pool of `size` HTTP/1 connections per address the zone
/// gives, behind tower's balancer, behind a buffer so that many callers
/// share it; the one watch and each endpoint's.
fn client(
    source: discover::Dns,
    size: usize,
) -> (
    impl Service<Request<Body>, Response = Response<Incoming>, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static,
    redial::ConnectionWatch,
    discover::Endpoints<SocketAddr>,
) {
    let connector = Http1Connector::<Body>::new()
        .map_request(|addr: SocketAddr| format!("http://{addr}").parse::<Uri>().unwrap());
    let pools = ReconnectLayer::new(())
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .wait_timeout(Duration::from_secs(2))
        .pool(size)
        .discover(source, connector);
    let watch = pools.watch();
    let endpoints = pools.endpoints();
    (Buffer::new(Balance::new(pools), 256), watch, endpoints)
}

/// Sends one GET; the server that answered.
async fn get<S>(client: &mut S) -> Result<String, BoxError>
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    let request = Request::get("/").body(Body::default()).unwrap();
    let response = client.ready().await?.call(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

/// What callers under load saw: each request's start and outcome, and
/// how many times in a row a caller saw a request fail.
#[derive(Default)]
struct Tally {
    results: Vec<(Instant, Result<String, Failure>)>,
    most_failures_in_a_row: usize,
}

/// A failed request: its error, and whether it is `Unavailable` (never
/// written to any server, so safe to send again).
#[derive(Debug)]
struct Failure {
    #[allow(dead_code)] // printed
    error: String,
    unavailable: bool,
}

impl Tally {
    fn failed(&self) -> Vec<&(Instant, Result<String, Failure>)> {
        self.results.iter().filter(|(_, r)| r.is_err()).collect()
    }

    fn by_server(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (_, result) in &self.results {
            if let Ok(server) = result {
                *counts.entry(server.clone()).or_default() += 1;
            }
        }
        counts
    }
}

/// `callers` tasks sending GETs back to back until `stop` is set.
fn load<S>(
    client: &S,
    callers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>>
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    (0..callers)
        .map(|_| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut in_a_row = 0;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let result = get(&mut client).await.map_err(|e| Failure {
                        error: e.to_string(),
                        unavailable: find::<Unavailable>(&*e).is_some(),
                    });
                    in_a_row = if result.is_err() { in_a_row + 1 } else { 0 };
                    tally.most_failures_in_a_row = tally.most_failures_in_a_row.max(in_a_row);
                    tally.results.push((start, result));
                }
                tally
            })
        })
        .collect()
}

async fn gather(callers: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut all = Tally::default();
    for caller in callers {
        let tally = guard(caller).await.unwrap();
        all.most_failures_in_a_row = all.most_failures_in_a_row.max(tally.most_failures_in_a_row);
        all.results.extend(tally.results);
    }
    all
}

/// Sends GETs one at a time (the balancer reads its source as it is
/// polled) until `done` holds of the endpoints; every one must succeed.
async fn until<S>(
    client: &mut S,
    endpoints: &discover::Endpoints<SocketAddr>,
    done: impl Fn(&[SocketAddr]) -> bool,
) where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    guard(async {
        while !done(&endpoints.keys()) {
            get(client).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Endpoints from DNS: each address gets a pool, requests reach both; when
/// the answer changes, the vanished address gets no more requests and the
/// new one gets its share; no request fails.
#[tokio::test]
async fn endpoints_from_dns_are_added_and_removed() {
    let servers = three_servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let zone = Zone::default();
    zone.set(&addrs[..2]);
    let (mut client, watch, endpoints) = client(zone.source(Duration::from_millis(50)), 2);
    until(&mut client, &endpoints, |keys| keys.len() == 2).await;
    guard(watch.connected()).await.unwrap();
    for _ in 0..40 {
        get(&mut client).await.unwrap();
    }
    assert!(servers[0].answered() > 0 && servers[1].answered() > 0);
    assert_eq!(servers[2].accepts(), 0);

    zone.set(&addrs[1..]);
    until(&mut client, &endpoints, |keys| keys == &addrs[1..]).await;
    let first = servers[0].answered();
    for _ in 0..40 {
        get(&mut client).await.unwrap();
    }
    assert_eq!(servers[0].answered(), first, "none to the vanished address");
    assert!(servers[2].answered() > 0, "the new address takes its share");
    assert_eq!(servers[2].accepts(), 2, "a pool of two");
    assert_eq!(watch.phase(), Phase::Connected);
    assert_eq!(watch.state().connects(), 6);
    assert!(zone.lookups.load(Ordering::SeqCst) >= 2);
}

/// A replica crashes under load (its connections aborted) and comes back:
/// the only requests that fail are those it held when it crashed, each
/// with `Unavailable` (never written: safe to send again), and no caller
/// fails twice in a row (its next request goes to a live replica); its
/// share moves to the others, and it takes requests again once back.
#[tokio::test]
async fn a_replica_lost_under_load_and_back() {
    let mut servers = three_servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let zone = Zone::default();
    zone.set(&addrs);
    let (mut client, watch, endpoints) = client(zone.source(Duration::from_secs(30)), 2);
    until(&mut client, &endpoints, |keys| keys.len() == 3).await;
    guard(watch.connected()).await.unwrap();
    let lost = endpoints.list().remove(1).1;
    guard(lost.connected()).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let callers = load(&client, 16, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    servers[1].stop().await;
    guard(lost.disconnected()).await;
    let seen = Instant::now();
    let answered_before = servers[1].answered();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let while_down = servers[0].answered() + servers[2].answered();
    servers[1].restart();
    guard(lost.connected()).await.unwrap();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = gather(callers).await;

    let failed = tally.failed();
    println!(
        "replica lost under load: {} requests, {} failed, {} of them started after the loss was seen; \
         answered by .1/.2/.3: {:?}; .2 down for {:?}; {} accepts on .2; watch: {:?}",
        tally.results.len(),
        failed.len(),
        failed.iter().filter(|(start, _)| *start >= seen).count(),
        [servers[0].answered(), servers[1].answered(), servers[2].answered()],
        back - seen,
        servers[1].accepts(),
        watch.state(),
    );
    for (_, result) in &failed {
        println!("  failed: {result:?}");
    }
    assert!(
        failed
            .iter()
            .all(|(_, result)| result.as_ref().is_err_and(|f| f.unavailable)),
        "a failure other than Unavailable"
    );
    assert!(
        failed.len() <= 16,
        "at most the requests in flight at the crash"
    );
    assert_eq!(
        tally.most_failures_in_a_row, 1,
        "a caller failed twice in a row"
    );
    assert!(while_down > 0, "the others served while it was down");
    assert!(
        servers[1].answered() > answered_before,
        "back, it takes requests again"
    );
    assert_eq!(watch.phase(), Phase::Connected);
    let by_server = tally.by_server();
    assert_eq!(by_server.len(), 3, "{by_server:?}");
}

/// DNS that flaps: every lookup (each 100 ms) swaps .2 for .3 and back,
/// while 16 callers send GETs; .1 stays. Endpoints come and go dozens of
/// times, each removed one draining what it holds: no request fails.
#[tokio::test]
async fn flapping_dns_under_load_fails_no_request() {
    let servers = three_servers();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let flips = Arc::new(AtomicUsize::new(0));
    let answers = {
        let (flips, addrs) = (flips.clone(), addrs.clone());
        move |_: &str, _: u16| {
            let n = flips.fetch_add(1, Ordering::SeqCst);
            let flapping = if n % 2 == 0 { addrs[1] } else { addrs[2] };
            let answer = vec![addrs[0], flapping];
            async move { Ok::<_, io::Error>(answer) }
        }
    };
    let source = discover::dns("api.test", 0, Duration::from_millis(100)).with_resolver(answers);
    let (mut client, watch, endpoints) = client(source, 2);
    until(&mut client, &endpoints, |keys| keys.len() == 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let callers = load(&client, 16, &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = gather(callers).await;

    let lookups = flips.load(Ordering::SeqCst);
    let failed = tally.failed();
    println!(
        "flapping dns: {lookups} lookups, {} requests, {} failed; answered by .1/.2/.3: {:?}; \
         connections accepted by .1/.2/.3: {:?}; watch: {:?}",
        tally.results.len(),
        failed.len(),
        [
            servers[0].answered(),
            servers[1].answered(),
            servers[2].answered()
        ],
        [
            servers[0].accepts(),
            servers[1].accepts(),
            servers[2].accepts()
        ],
        watch.state(),
    );
    for (_, result) in failed.iter().take(5) {
        println!("  failed: {result:?}");
    }
    assert!(lookups >= 20, "{lookups} lookups");
    assert!(failed.is_empty(), "{} failed", failed.len());
    assert!(servers[1].answered() > 0 && servers[2].answered() > 0);
    assert_eq!(
        servers[0].accepts(),
        2,
        ".1 stayed: its pool was never redialled"
    );
    assert_eq!(watch.phase(), Phase::Connected);
}
