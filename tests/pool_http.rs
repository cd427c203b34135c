//! A pool of HTTP/1 connections against a real hyper server on 127.0.0.1:
//! requests served side by side, and a server restart.
mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
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
    http::{Http1Connector, PoolHttp1},
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
/// same time; counts the connections it accepted. It can stop (closing the
/// listener and every connection) and start again on the same address.
struct Server {
    addr: SocketAddr,
    width: usize,
    accepts: Arc<AtomicUsize>,
    running: Option<Running>,
}

impl Server {
    fn start(width: usize) -> Self {
        let mut server = Self {
            addr: ([127, 0, 0, 1], 0).into(),
            width,
            accepts: Arc::default(),
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
        let accepts = self.accepts.clone();
        self.running = Some(Running::accept(listener, move |stream, _| {
            accepts.fetch_add(1, Ordering::SeqCst);
            let barrier = barrier.clone();
            let svc = service_fn(move |_: Request<Incoming>| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Ok::<_, Infallible>(Response::new(Body::from("ok")))
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

/// Four HTTP/1 connections serve four requests at the same time: the server answers none until four are open, which one connection (one request at a time) could never do.
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

/// The server stops: the pool's watch leaves `Connected` once no connection is up, and when the server is back every connection reconnects and the four again serve four requests at once.
#[tokio::test]
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
