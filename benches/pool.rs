//! Requests per second through a pool of connections to one server on
//! 127.0.0.1, from 64 concurrent callers:
//!
//! - HTTP/1: redial's `Pool` of 8 over `Http1Connector`
//!   (`ReconnectLayer::new(uri).pool(8).layer(Http1Connector::new())`)
//!   against hyper-util's legacy `Client` with `pool_max_idle_per_host(8)`
//!   over its `HttpConnector` (`TCP_NODELAY` on, as redial's connector
//!   sets it), then against the same client behind a semaphore of 8
//!   permits, each call holding one until its body is read: hyper-util has
//!   no setting that caps the connections it opens, and 8 requests in
//!   flight is the nearest a user gets to 8 connections;
//! - HTTP/2: redial's `Pool` of 2 over `Http2Connector` against tonic's
//!   `Channel::balance_list` over 2 endpoints, sent plain HTTP requests
//!   (tonic's `Channel` is a `Service<http::Request<tonic::body::Body>>`).
//!
//! One server for all: hyper's HTTP/1 or HTTP/2 server, on a
//! current-thread runtime of its own thread, so that it is never scheduled
//! among the clients' tasks and answers all alike. It listens on one port
//! per client (two for tonic's two endpoints) and counts, per port, the
//! connections it accepted and the most open at once: hyper-util's
//! `pool_max_idle_per_host` caps only the *idle* connections it keeps, and
//! under concurrency it dials one for every request that finds none idle,
//! so the table says how many each client opened. Every call is `GET /`
//! with an empty body and its 5-byte answer read to the end.
//!
//! Criterion reports the time per call and calls per second; then an
//! interleaved pass (`common/interleave.rs`) runs round after round through
//! each client in turn and prints the table to quote, followed by the
//! connections each side opened during that pass. The semaphore's row has
//! the interleaved pass only.
//!
//! Run with `cargo bench --bench pool --features http` (about 1.5
//! minutes); `-- --warm-up-time 1 --measurement-time 2` shortens
//! criterion's part and `REDIAL_ROUNDS=20` the interleaved pass.
//! `REDIAL_CALLS=hyper:3000:64` (or `redial:…`) makes only those calls
//! through one client of the HTTP/1 comparison, for a profiler
//! (`valgrind --tool=callgrind` gives repeatable instruction counts whatever
//! else the machine does); `REDIAL_HTTP=1-limited` does so against
//! hyper-util with 8 requests in flight, and `REDIAL_HTTP=2` with
//! `REDIAL_CALLS=tonic:…` (or `redial:…`) in the HTTP/2 comparison.

#[path = "common/interleave.rs"]
mod interleave;
#[path = "common/throughput.rs"]
mod throughput;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
};

use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use redial::{
    http::{Http1Connector, Http2Connector},
    ConnectionWatch, ReconnectLayer,
};
use throughput::Caller;
use tokio::{
    net::TcpListener,
    runtime::Runtime,
    sync::{oneshot, Semaphore},
    task::JoinSet,
};
use tonic::transport::{Channel, Endpoint};
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

/// The concurrent callers.
const CALLERS: [u64; 1] = [64];

/// Connections in redial's HTTP/1 pool, and hyper-util's idle cap.
const HTTP1_CONNECTIONS: usize = 8;

/// Connections in redial's HTTP/2 pool, and tonic's endpoints.
const HTTP2_CONNECTIONS: usize = 2;

/// Rounds of the interleaved pass unless `REDIAL_ROUNDS` says otherwise.
const ROUNDS: usize = 40;

/// What the server answers.
const HELLO: &[u8] = b"hello";

/// Calls per client per round: about 100 ms of calls on this machine.
fn per_round(_callers: u64) -> u64 {
    4_096
}

/// redial's pool (`PoolHttp1<Body>` or `PoolHttp2<Body>`), and the target
/// every request names.
#[derive(Clone)]
struct Redial<S> {
    client: S,
    uri: Uri,
}

impl<S> Caller for Redial<S>
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    async fn call(&mut self) {
        let req = Request::get(self.uri.clone())
            .body(Body::default())
            .expect("request");
        let res = async { self.client.ready().await?.call(req).await }.await;
        hello(res).await;
    }
}

/// hyper-util's pooled HTTP/1 client; with `in_flight`, each call first
/// takes a permit of that semaphore and holds it until its body is read.
#[derive(Clone)]
struct Hyper {
    client: Client<HttpConnector, Body>,
    uri: Uri,
    in_flight: Option<Arc<Semaphore>>,
}

impl Caller for Hyper {
    async fn call(&mut self) {
        let _permit = match &self.in_flight {
            Some(permits) => Some(permits.acquire().await.expect("permit")),
            None => None,
        };
        let req = Request::get(self.uri.clone())
            .body(Body::default())
            .expect("request");
        hello(self.client.request(req).await.map_err(Into::into)).await;
    }
}

/// tonic's balanced `Channel`. Its requests name only the path: the
/// balancer picks the endpoint, and each endpoint's connection sets the
/// scheme and authority.
#[derive(Clone)]
struct Tonic(Channel);

impl Caller for Tonic {
    async fn call(&mut self) {
        let req = Request::get("/")
            .body(tonic::body::Body::empty())
            .expect("request");
        let res = async { self.0.ready().await?.call(req).await }.await;
        let body = res
            .expect("response")
            .into_body()
            .collect()
            .await
            .expect("body");
        assert_eq!(body.to_bytes(), HELLO);
    }
}

/// Reads the body to its end and checks it: a failed call must not pass
/// for a fast one.
async fn hello(res: Result<Response<Incoming>, BoxError>) {
    let body = res
        .expect("response")
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(body.to_bytes(), HELLO);
}

fn main() {
    let which = match std::env::var("REDIAL_HTTP").as_deref() {
        Err(_) | Ok("1") => Only::Http1,
        Ok("1-limited") => Only::Http1Limited,
        Ok("2") => Only::Http2,
        Ok(other) => panic!("REDIAL_HTTP takes 1, 1-limited or 2, not {other}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The pools and tonic's balancer spawn their tasks when built.
    let _guard = rt.enter();

    if std::env::var_os("REDIAL_CALLS").is_some() {
        match which {
            Only::Http2 => http2_bench(&rt, None),
            _ => http1_bench(&rt, None, which == Only::Http1Limited),
        }
        return;
    }
    // Without plots: on this machine plotters takes ~10 s per benchmark, and
    // the tables after the report are what to quote.
    let mut c = Criterion::default().without_plots().configure_from_args();
    http1_bench(&rt, Some(&mut c), false);
    http2_bench(&rt, Some(&mut c));
    c.final_summary();
}

/// The comparison `REDIAL_CALLS` makes its calls in (`REDIAL_HTTP`).
#[derive(Clone, Copy, PartialEq)]
enum Only {
    Http1,
    /// Against hyper-util with 8 requests in flight.
    Http1Limited,
    Http2,
}

/// HTTP/1: redial's pool of 8 against hyper-util's `Client`, then against
/// the same with 8 requests in flight at most. Without `c`, only
/// `REDIAL_CALLS`'s calls, against the second if `limited_only`.
fn http1_bench(rt: &Runtime, c: Option<&mut Criterion>, limited_only: bool) {
    let server = Server::start(Protocol::Http1, 3);
    let [hyper_port, redial_port, limited_port] =
        [&server.ports[0], &server.ports[1], &server.ports[2]];

    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let hyper = Hyper {
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(HTTP1_CONNECTIONS)
            .build(http),
        uri: hyper_port.uri(),
        in_flight: None,
    };
    // hyper-util has no cap on the connections it opens; the nearest a
    // user gets is to let only 8 requests in at a time.
    let limited = Hyper {
        uri: limited_port.uri(),
        in_flight: Some(Arc::new(Semaphore::new(HTTP1_CONNECTIONS))),
        ..hyper.clone()
    };
    let redial = Redial {
        client: ReconnectLayer::new(redial_port.uri())
            .pool(HTTP1_CONNECTIONS)
            .layer(Http1Connector::new()),
        uri: redial_port.uri(),
    };
    let watch = redial.client.watch();
    let connections = redial.client.connections();
    rt.block_on(warm_up(&hyper, &redial, &connections));
    rt.block_on(warm_up(&limited, &redial, &connections));

    let alt = if limited_only { &limited } else { &hyper };
    if throughput::calls_only(rt, ("hyper", alt), &redial) {
        return;
    }
    let c = c.expect("criterion");
    throughput::criterion(c, rt, "pool_http1", ("hyper", &hyper), &redial, &CALLERS);
    println!(
        "\npool_http1, warm-up and criterion's part: connections opened (most open \
         at once): hyper {}, redial {}",
        hyper_port.take(),
        redial_port.take()
    );
    throughput::compare(
        rt,
        "pool_http1",
        ("hyper", &hyper),
        &redial,
        &CALLERS,
        ROUNDS,
        per_round,
    );
    println!(
        "pool_http1, interleaved pass: connections opened (most open at once): \
         hyper {}, redial {}",
        hyper_port.take(),
        redial_port.take()
    );
    // The same against hyper-util with 8 requests in flight at most.
    throughput::compare(
        rt,
        "pool_http1, hyper 8 in flight",
        ("hyper", &limited),
        &redial,
        &CALLERS,
        ROUNDS,
        per_round,
    );
    println!(
        "pool_http1, hyper 8 in flight, warm-up and interleaved pass: connections \
         opened (most open at once): hyper {}, redial {}",
        limited_port.take(),
        redial_port.take()
    );
    // redial's pool never redialled.
    assert_eq!(watch.state().connects(), HTTP1_CONNECTIONS as u64);
    drop((hyper, limited, redial));
    server.stop();
}

/// HTTP/2: redial's pool of 2 against tonic's balanced `Channel` over two
/// endpoints. Without `c`, only `REDIAL_CALLS`'s calls.
fn http2_bench(rt: &Runtime, c: Option<&mut Criterion>) {
    let server = Server::start(Protocol::Http2, 3);
    let [tonic_a, tonic_b, redial_port] = [&server.ports[0], &server.ports[1], &server.ports[2]];

    let endpoints = [tonic_a, tonic_b]
        .map(|port| Endpoint::from_shared(port.uri().to_string()).expect("endpoint"));
    let tonic = Tonic(Channel::balance_list(endpoints.into_iter()));
    let redial = Redial {
        client: ReconnectLayer::new(redial_port.uri())
            .pool(HTTP2_CONNECTIONS)
            .layer(Http2Connector::new()),
        uri: redial_port.uri(),
    };
    let watch = redial.client.watch();
    let connections = redial.client.connections();
    rt.block_on(warm_up(&tonic, &redial, &connections));

    if throughput::calls_only(rt, ("tonic", &tonic), &redial) {
        return;
    }
    let c = c.expect("criterion");
    throughput::criterion(c, rt, "pool_http2", ("tonic", &tonic), &redial, &CALLERS);
    let tonic_conns = || format!("{} + {}", tonic_a.take(), tonic_b.take());
    println!(
        "\npool_http2, warm-up and criterion's part: connections opened (most open \
         at once): tonic {}, redial {}",
        tonic_conns(),
        redial_port.take()
    );
    throughput::compare(
        rt,
        "pool_http2",
        ("tonic", &tonic),
        &redial,
        &CALLERS,
        ROUNDS,
        per_round,
    );
    println!(
        "pool_http2, interleaved pass: connections opened (most open at once): \
         tonic {}, redial {}",
        tonic_conns(),
        redial_port.take()
    );
    assert_eq!(watch.state().connects(), HTTP2_CONNECTIONS as u64);
    drop((tonic, redial));
    server.stop();
}

/// Waits for every connection of redial's pool, and sends a batch through
/// each client from all the callers, so that the other side has dialled
/// what it dials under this load before anything is timed.
async fn warm_up<A: Caller, R: Caller>(alt: &A, redial: &R, connections: &[ConnectionWatch]) {
    for connection in connections {
        connection.connected().await.expect("redial connects");
    }
    for callers in CALLERS {
        throughput::batch(alt, callers, 4 * callers).await;
        throughput::batch(redial, callers, 4 * callers).await;
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

/// hyper's server, on a thread and a current-thread runtime of its own,
/// listening on `ports.len()` ports of 127.0.0.1; answers every request
/// with [`HELLO`].
struct Server {
    ports: Vec<Port>,
    stop: oneshot::Sender<()>,
    thread: thread::JoinHandle<()>,
}

/// One of the server's listening ports, with its connection counts.
struct Port {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
}

impl Port {
    fn uri(&self) -> Uri {
        format!("http://{}/", self.addr).parse().expect("uri")
    }

    /// The connections accepted since the last `take`, and the most open
    /// at once; starts counting again.
    fn take(&self) -> String {
        let counts = &self.counts;
        let accepted = counts.accepted.swap(0, Ordering::Relaxed);
        let open = counts.open.load(Ordering::Relaxed);
        let most = counts.most_open.swap(open, Ordering::Relaxed);
        format!("{accepted} ({most})")
    }
}

impl Server {
    fn start(protocol: Protocol, ports: usize) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addrs) = std::sync::mpsc::channel();
        let counts: Vec<Arc<Counts>> = (0..ports).map(|_| Arc::default()).collect();
        let thread = {
            let counts = counts.clone();
            thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let mut listeners = JoinSet::new();
                    for counts in counts {
                        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                        bound.send(listener.local_addr().expect("address")).unwrap();
                        listeners.spawn(serve(listener, protocol, counts));
                    }
                    let _ = stopped.await;
                    listeners.shutdown().await;
                })
            })
        };
        let ports = counts
            .into_iter()
            .map(|counts| Port {
                addr: addrs.recv().expect("server address"),
                counts,
            })
            .collect();
        Self {
            ports,
            stop,
            thread,
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("server thread");
    }
}

/// Accepts on `listener` and serves each connection in a task of its own,
/// counting them; dropping this future drops them all.
async fn serve(listener: TcpListener, protocol: Protocol, counts: Arc<Counts>) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let _ = stream.set_nodelay(true);
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let open = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
        counts.most_open.fetch_max(open, Ordering::Relaxed);
        let counts = counts.clone();
        conns.spawn(async move {
            let hello = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Body::from(HELLO)))
            });
            let io = TokioIo::new(stream);
            let _ = match protocol {
                Protocol::Http1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, hello)
                        .await
                }
                Protocol::Http2 => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, hello)
                        .await
                }
            };
            counts.open.fetch_sub(1, Ordering::Relaxed);
        });
        // Reap the connections that ended, so the set does not grow with
        // hyper-util's churn.
        while conns.try_join_next().is_some() {}
    }
}
