//! The idle timeout over real hyper servers on 127.0.0.1, HTTP/1 and
//! HTTP/2, which count the connections they accept and see closed:
//!
//! - an idle connection is closed on time, the server sees the close,
//!   nothing dials while the handle is idle, and the next request connects
//!   as the first one did;
//! - a response whose body is still streaming when the timeout passes is
//!   read to its end: the connection goes only once the body is done.
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

use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::{
    body::{Bytes, Frame, Incoming},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use redial::{
    http::{Http1Connector, Http2Connector},
    ConnectionWatch, Phase, ReconnectLayer,
};
use support::net::{guard, settle};
use tokio::{net::TcpListener, sync::mpsc};
use tower::{Layer, ServiceExt};

/// The idle timeout of these tests: short, as the tests wait for it on the
/// real clock.
const IDLE: Duration = Duration::from_millis(100);

type Chunks = mpsc::UnboundedSender<Bytes>;

/// A server that counts what it accepts and what closes, answers `/` with
/// "ok", and answers `/stream` with headers at once and a body fed by the
/// test through the sender it hands over in `streams`.
struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    streams: Arc<Mutex<Option<mpsc::UnboundedSender<Chunks>>>>,
}

impl Server {
    async fn start() -> (Self, mpsc::UnboundedReceiver<Chunks>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepts, closes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (streams_tx, streams_rx) = mpsc::unbounded_channel();
        let streams = Arc::new(Mutex::new(Some(streams_tx)));
        {
            let (accepts, closes, streams) = (accepts.clone(), closes.clone(), streams.clone());
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    accepts.fetch_add(1, Ordering::SeqCst);
                    let streams = streams.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let streams = streams.lock().unwrap().clone();
                        async move { Ok::<_, Infallible>(answer(&req, streams)) }
                    });
                    let closes = closes.clone();
                    tokio::spawn(async move {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                        closes.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
        }
        let server = Self {
            addr,
            accepts,
            closes,
            streams,
        };
        (server, streams_rx)
    }

    fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.streams.lock().unwrap().take();
    }
}

fn answer(
    req: &Request<Incoming>,
    streams: Option<mpsc::UnboundedSender<Chunks>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    if req.uri().path() != "/stream" {
        return Response::new(Full::new(Bytes::from("ok")).boxed());
    }
    let (chunks, rx) = mpsc::unbounded_channel::<Bytes>();
    streams
        .expect("server running")
        .send(chunks)
        .expect("test listening");
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    }));
    Response::new(body.boxed())
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).unwrap()
}

/// A GET of `/`, its body read to the end: a response still held keeps an
/// HTTP/2 stream, and so its connection, open.
async fn fetch<S>(client: &S) -> String
where
    S: tower::Service<Request<Empty<Bytes>>, Response = Response<Incoming>> + Clone,
    S::Error: std::fmt::Debug,
{
    let res = client.clone().oneshot(get("/")).await.unwrap();
    assert!(res.status().is_success());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Waits until the watch shows `n` idle closes.
async fn idle_closes(watch: &ConnectionWatch, n: u64) {
    let mut rx = watch.subscribe();
    guard(rx.wait_for(|state| state.idle_closes() >= n))
        .await
        .unwrap();
    assert_eq!(watch.state().idle_closes(), n, "one idle close at a time");
}

/// Each test, once over `Http1Connector` and once over `Http2Connector`,
/// bound to `$conn`.
macro_rules! both_protocols {
    ($conn:ident; $($(#[$doc:meta])* $name:ident $body:block)*) => {
        mod http1 {
            use super::*;
            $($(#[$doc])* #[tokio::test] async fn $name() { let $conn = Http1Connector::new(); $body })*
        }
        mod http2 {
            use super::*;
            $($(#[$doc])* #[tokio::test] async fn $name() { let $conn = Http2Connector::new(); $body })*
        }
    };
}

both_protocols! {
    connector;

    /// The idle connection is closed on time and seen closed by the server;
    /// nothing dials while idle; the next request connects anew.
    idle_connection_is_closed_on_time_and_the_next_request_connects_anew {
        let (server, _streams) = Server::start().await;
        let client = ReconnectLayer::new(server.uri())
            .idle_timeout(IDLE)
            .layer(connector)
            .spawn(8);
        let watch = client.watch();
        assert_eq!(guard(fetch(&client)).await, "ok");
        assert_eq!(server.accepts(), 1);

        // The connection rests: closed on purpose, and the server sees it go.
        idle_closes(&watch, 1).await;
        assert_eq!(watch.phase(), Phase::Idle);
        settle("server-side closes", Duration::from_secs(5), || server.closes(), |&n| n == 1).await;
        let state = watch.state();
        assert_eq!((state.connects(), state.disconnects()), (1, 0));
        assert!(state.last_error().is_none(), "an idle close is no error");

        // Nothing dials while the handle is idle: an eager handle would have
        // dialled at once, so a few timeouts' worth of quiet shows it.
        tokio::time::sleep(IDLE * 3).await;
        assert_eq!((server.accepts(), watch.phase()), (1, Phase::Idle));

        // The next request connects as the first one did.
        assert_eq!(guard(fetch(&client)).await, "ok");
        assert_eq!(server.accepts(), 2);
        assert_eq!(watch.state().connects(), 2);
        client.close();
    }

    /// A body still streaming when the timeout passes is read whole; the
    /// socket closes after it.
    response_body_still_streaming_is_read_to_its_end {
        let (server, mut streams) = Server::start().await;
        let client = ReconnectLayer::new(server.uri())
            .idle_timeout(IDLE)
            .layer(connector)
            .spawn(8);
        let watch = client.watch();
        let res = guard(client.clone().oneshot(get("/stream"))).await.unwrap();
        let chunks = guard(streams.recv()).await.unwrap();
        chunks.send(Bytes::from("first ")).unwrap();

        // The headers are in, so the request is no longer in flight and the
        // idle timeout closes the connection, with the body still coming.
        idle_closes(&watch, 1).await;
        assert_eq!(server.closes(), 0, "the socket stays while the body streams");

        // The rest of the body arrives after the close, and is read whole.
        chunks.send(Bytes::from("second")).unwrap();
        drop(chunks);
        let body = guard(res.into_body().collect()).await.unwrap().to_bytes();
        assert_eq!(&body[..], b"first second");

        // Only then does the connection go, and nothing dials.
        settle("server-side closes", Duration::from_secs(5), || server.closes(), |&n| n == 1).await;
        assert_eq!((server.accepts(), watch.phase()), (1, Phase::Idle));
        client.close();
    }
}
