//! A pool of HTTP/1 connections against a real hyper server on 127.0.0.1:
//! requests served side by side, and a server restart.
mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
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
use redial::{
    http::{Http1Connector, Http2Connector, PoolHttp1, PoolHttp2},
    Backoff, Phase, ReconnectLayer,
};
use support::{
    net::guard,
    server::{listen, serve_connection, Proto, Running},
};
use tokio::sync::Barrier;
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;
type Client = PoolHttp1<Body>;

/// Answers `ok`, each request only once `width` requests are open at the
/// same time; counts the connections it accepted and the requests it
/// answered. It can stop (closing the
/// listener and every connection) and start again on the same address.
struct Server {
    addr: SocketAddr,
    proto: Proto,
    width: usize,
    /// Requests answered on each connection accepted, in order.
    per_connection: Arc<Mutex<Vec<usize>>>,
    accepts: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    running: Option<Running>,
}

impl Server {
    fn start(width: usize) -> Self {
        Self::start_with(Proto::Http1, width)
    }

    fn start_with(proto: Proto, width: usize) -> Self {
        let mut server = Self {
            addr: ([127, 0, 0, 1], 0).into(),
            proto,
            width,
            per_connection: Arc::default(),
            accepts: Arc::default(),
            answered: Arc::default(),
            running: None,
        };
        server.restart();
        server
    }

    fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn restart(&mut self) {
        let listener = listen(self.addr, 64);
        self.addr = listener.local_addr().unwrap();
        let barrier = Arc::new(Barrier::new(self.width));
        let (accepts, answered) = (self.accepts.clone(), self.answered.clone());
        let (proto, per_connection) = (self.proto, self.per_connection.clone());
        self.running = Some(Running::accept(listener, move |stream, _| {
            accepts.fetch_add(1, Ordering::SeqCst);
            let id = {
                let mut counts = per_connection.lock().unwrap();
                counts.push(0);
                counts.len() - 1
            };
            let (barrier, answered) = (barrier.clone(), answered.clone());
            let per_connection = per_connection.clone();
            let svc = service_fn(move |_: Request<Incoming>| {
                let (barrier, answered) = (barrier.clone(), answered.clone());
                let per_connection = per_connection.clone();
                async move {
                    barrier.wait().await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    per_connection.lock().unwrap()[id] += 1;
                    Ok::<_, Infallible>(Response::new(Body::from("ok")))
                }
            });
            Some(serve_connection(TokioIo::new(stream), proto, true, svc))
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

    fn per_connection(&self) -> Vec<usize> {
        self.per_connection.lock().unwrap().clone()
    }
}

/// A connector whose clones dial servers in turn: the first clone the
/// pool makes dials `uris[0]`, the next `uris[1]`, and so on, whatever the
/// target. So each connection of a pool has a server of its own, which can
/// stop while the others' run.
struct OwnServer {
    connector: Http1Connector<Body>,
    uris: Arc<Vec<Uri>>,
    clones: Arc<AtomicUsize>,
    uri: Uri,
}

impl OwnServer {
    fn new(uris: Vec<Uri>) -> Self {
        let uri = uris[0].clone();
        Self {
            connector: Http1Connector::new(),
            uris: Arc::new(uris),
            clones: Arc::default(),
            uri,
        }
    }
}

impl Clone for OwnServer {
    fn clone(&self) -> Self {
        let next = self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            connector: self.connector.clone(),
            uris: self.uris.clone(),
            clones: self.clones.clone(),
            uri: self.uris[next % self.uris.len()].clone(),
        }
    }
}

impl Service<Uri> for OwnServer {
    type Response = <Http1Connector<Body> as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = <Http1Connector<Body> as Service<Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.connector.poll_ready(cx)
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        self.connector.call(self.uri.clone())
    }
}

fn pool(server: &Server, size: usize) -> Client {
    ReconnectLayer::new(server.uri())
        .connect_timeout(Duration::from_millis(500))
        .backoff(Backoff::constant(Duration::from_millis(50)))
        .pool(size)
        .layer(Http1Connector::new())
}

/// A GET through its own clone of the pool: readiness, the call, the body.
async fn get(mut client: Client) -> Result<String, BoxError> {
    let request = Request::get("/").body(Body::default())?;
    let response = client.ready().await?.call(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sends `n` requests at once and waits for every answer.
async fn side_by_side(client: &Client, n: usize) {
    let requests: Vec<_> = (0..n).map(|_| tokio::spawn(get(client.clone()))).collect();
    for request in requests {
        assert_eq!(guard(request).await.unwrap().unwrap(), "ok");
    }
}

/// Waits until each of the pool's connections is up.
async fn all_up(client: &Client) {
    for watch in client.connections() {
        guard(watch.connected()).await.unwrap();
    }
}

/// Four HTTP/1 connections serve four requests at the same time: the server answers
/// none until four are open, which one connection (one request at a time) could
/// never do.
#[tokio::test]
async fn four_connections_serve_four_requests_at_once() {
    support::trace_init();
    let server = Server::start(4);
    let client = pool(&server, 4);
    all_up(&client).await;
    assert_eq!(server.accepts(), 4);
    side_by_side(&client, 4).await;
    // Again, on the same connections.
    side_by_side(&client, 4).await;
    assert_eq!(server.accepts(), 4);
    assert_eq!(client.watch().state().connects(), 4);
}

/// Over HTTP/2 the pool spreads streams too: eight requests open at once go four to
/// each of two connections.
#[tokio::test]
async fn http2_requests_are_spread_over_the_connections() {
    support::trace_init();
    let server = Server::start_with(Proto::Http2, 8);
    let client: PoolHttp2<Body> = ReconnectLayer::new(server.uri())
        .connect_timeout(Duration::from_millis(500))
        .pool(2)
        .layer(Http2Connector::new());
    for watch in client.connections() {
        guard(watch.connected()).await.unwrap();
    }
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let request = Request::get("/").body(Body::default())?;
                let response = client.ready().await?.call(request).await?;
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>(body)
            })
        })
        .collect();
    for request in requests {
        assert_eq!(guard(request).await.unwrap().unwrap(), "ok");
    }
    assert_eq!(server.per_connection(), [4, 4]);
}

/// One connection's server stops: no request fails in fail-fast mode while the
/// other is up, its share moves to the other, and returns once its server is back.
#[tokio::test]
async fn a_connection_down_loses_its_share_until_it_is_back() {
    support::trace_init();
    let mut servers = [Server::start(1), Server::start(1)];
    let client: Client = ReconnectLayer::new(servers[0].uri())
        .connect_timeout(Duration::from_millis(500))
        .backoff(Backoff::constant(Duration::from_millis(50)))
        .pool(2)
        .layer(OwnServer::new(servers.iter().map(Server::uri).collect()));
    all_up(&client).await;
    let connections = client.connections();
    one_by_one(&client, 4).await;
    assert_eq!((servers[0].answered(), servers[1].answered()), (2, 2));

    servers[0].stop().await;
    let state = guard(connections[0].disconnected()).await;
    assert_ne!(state.phase(), Phase::Connected);
    assert!(client.watch().is_connected());
    one_by_one(&client, 6).await; // each must succeed
    assert_eq!((servers[0].answered(), servers[1].answered()), (2, 8));

    servers[0].restart();
    guard(connections[0].connected()).await.unwrap();
    one_by_one(&client, 6).await;
    assert_eq!((servers[0].answered(), servers[1].answered()), (5, 11));
    assert_eq!(client.watch().state().disconnects(), 1);
}

/// Sends `n` requests one after the other through one clone; each must succeed.
async fn one_by_one(client: &Client, n: usize) {
    let mut client = client.clone();
    for _ in 0..n {
        let svc = guard(client.ready()).await.unwrap();
        let request = Request::get("/").body(Body::default()).unwrap();
        let response = guard(svc.call(request)).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }
}

/// The server stops: the pool's watch leaves `Connected` once no connection is up,
/// and when the server is back every connection reconnects and the four again serve
/// four requests at once (on two worker threads, so the connections' tasks update
/// the pool's watch side by side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_comes_back_after_a_server_restart() {
    support::trace_init();
    let mut server = Server::start(4);
    let client = pool(&server, 4);
    let watch = client.watch();
    all_up(&client).await;
    side_by_side(&client, 4).await;

    server.stop().await;
    let state = guard(watch.disconnected()).await;
    assert_ne!(state.phase(), Phase::Connected);
    assert_ne!(state.phase(), Phase::Closed);
    for connection in client.connections() {
        assert!(!connection.is_connected(), "{connection:?}");
    }

    server.restart();
    guard(watch.connected()).await.unwrap();
    all_up(&client).await;
    side_by_side(&client, 4).await;
    let state = watch.state();
    assert_eq!(state.connects(), 8, "{state:?}");
    assert_eq!(state.disconnects(), 4, "{state:?}");
    assert_eq!(server.accepts(), 8);
}
