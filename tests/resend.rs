//! Requests that cannot have been processed are sent again, once, and no
//! other request ever is: against real servers on 127.0.0.1 that close a
//! connection under a request's feet.
//!
//! - An HTTP/1 server that closes a connection after 5 ms of idleness, and
//!   one caller sending a request every 4.5–5.5 ms: every other request
//!   meets a connection the server is closing. GETs are all answered;
//!   POSTs may fail, but none reaches the server twice.
//! - An HTTP/2 server that shuts down gracefully (`GOAWAY`) while requests
//!   wait for a stream: each is answered once, on the next connection.
//!
//! Each request carries a unique id, and the servers log the ids they
//! processed, so "reached the server twice" is counted, not assumed.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use redial::{
    http::{Http1Connector, Http2Connector},
    Backoff, ReconnectLayer,
};
use support::net::guard;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    time::timeout,
};
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;

/// How long the HTTP/1 server keeps an idle connection.
const IDLE: Duration = Duration::from_millis(5);
const REQUESTS: u64 = 200;

// ===== HTTP/1: the idle-close race =====

/// Every GET is answered although about half of them meet a connection the
/// server is closing, and none reaches the server twice.
#[tokio::test]
async fn http1_idle_close_race_loses_no_get() {
    let race = race(Method::GET).await;
    assert_eq!(race.failed, 0, "GETs failed: {:?} {race:?}", race.errors);
    assert_eq!(race.processed.len() as u64, REQUESTS, "every GET processed");
    assert!(
        race.processed.values().all(|&n| n == 1),
        "a GET reached the server twice"
    );
    // The race did happen, and requests were sent again because of it.
    assert!(race.resent > 0, "no request was sent again: {race:?}");
    println!("{race:?}");
}

/// POSTs are not idempotent: one the server may have seen is never sent
/// again, so some fail, but none reaches the server twice.
#[tokio::test]
async fn http1_idle_close_race_never_sends_a_post_twice() {
    let race = race(Method::POST).await;
    // The race did happen: the server closed connections under the caller.
    assert!(race.failed > 0 && race.connects > 1, "{race:?}");
    assert!(
        race.processed.values().all(|&n| n == 1),
        "a POST reached the server twice"
    );
    assert_eq!(
        race.processed.len() as u64 + race.failed,
        REQUESTS,
        "every POST was either processed once or failed: {race:?}"
    );
    println!("{race:?}");
}

struct Race {
    failed: u64,
    errors: Vec<String>,
    resent: u64,
    connects: u64,
    /// How often the server processed each request id.
    processed: HashMap<u64, usize>,
}

impl std::fmt::Debug for Race {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Race")
            .field("failed", &self.failed)
            .field("resent", &self.resent)
            .field("connects", &self.connects)
            .field("processed", &self.processed.len())
            .field("most_per_id", &self.processed.values().max())
            .finish()
    }
}

/// One caller, `REQUESTS` requests of `method` a little under and a little
/// over the server's idle timeout apart, through a shared handle in
/// wait-for-ready mode.
async fn race(method: Method) -> Race {
    let (addr, processed) = idle_closing_server(IDLE).await;
    let uri = format!("http://{addr}").parse().unwrap();
    let client = ReconnectLayer::new(uri)
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .wait_for_ready(true)
        .layer(Http1Connector::new())
        .spawn(16);
    let watch = client.watch();
    guard(watch.connected()).await.unwrap();

    // 4.5 to 5.5 ms apart, in a fixed pseudo-random order.
    let mut seed = 0x2545_f491_u64;
    let (mut failed, mut errors) = (0, Vec::new());
    for id in 0..REQUESTS {
        let req = Request::builder()
            .method(method.clone())
            .uri("/")
            .header("x-request-id", id)
            .body(Body::from("payload"))
            .unwrap();
        match guard(client.clone().oneshot(req)).await {
            Ok(res) => assert!(res.status().is_success()),
            Err(err) => {
                failed += 1;
                errors.push(format!("{err:?}"));
            }
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let gap = 4_500 + (seed >> 33) % 1_001;
        tokio::time::sleep(Duration::from_micros(gap)).await;
    }
    let state = watch.state();
    client.close();
    let processed = processed.lock().unwrap().clone();
    Race {
        failed,
        errors,
        resent: state.resent(),
        connects: state.connects(),
        processed,
    }
}

/// A keep-alive HTTP/1 server that closes a connection once it has waited
/// `idle` for the next request, as any server with a keep-alive timeout
/// does; a request that arrives just after is never read. Logs the id of
/// every request it processes.
async fn idle_closing_server(idle: Duration) -> (SocketAddr, Arc<Mutex<HashMap<u64, usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let processed = Arc::new(Mutex::new(HashMap::new()));
    let log = processed.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_until_idle(stream, idle, log.clone()));
        }
    });
    (addr, processed)
}

async fn serve_until_idle(
    mut stream: TcpStream,
    idle: Duration,
    log: Arc<Mutex<HashMap<u64, usize>>>,
) {
    let mut buf = Vec::new();
    loop {
        // Idle: wait for the first byte of the next request, at most `idle`.
        if buf.is_empty() {
            let mut byte = [0; 1024];
            match timeout(idle, stream.read(&mut byte)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&byte[..n]),
                _ => return, // closed for idleness, or by the client
            }
        }
        let Some(end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().parse::<u64>().unwrap())
        };
        let length = header("content-length").unwrap_or(0) as usize;
        buf.drain(..end);
        while buf.len() < length {
            let mut more = [0; 1024];
            match stream.read(&mut more).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&more[..n]),
                _ => return,
            }
        }
        buf.drain(..length);
        if let Some(id) = header("x-request-id") {
            *log.lock().unwrap().entry(id).or_insert(0) += 1;
        }
        let res = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(res).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds a whole request head; its length.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut more = [0; 1024];
        match stream.read(&mut more).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&more[..n]),
            _ => return None,
        }
    }
}

// ===== HTTP/2: GOAWAY while requests wait =====

/// A server allowing one stream at a time holds the first request, so the
/// next waits for a stream and the rest wait in hyper's queue; then it shuts
/// the connection down gracefully. The held request is answered on the old
/// connection, every other one on the new, each processed exactly once, and
/// no caller sees an error.
#[tokio::test]
async fn http2_goaway_with_requests_waiting_loses_none() {
    const WAITING: u64 = 8;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let processed = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    let release = Arc::new(Notify::new());
    let (goaway, goaway_rx) = watch::channel(false);
    let (seen, mut seen_rx) = watch::channel(0_usize);
    {
        let (processed, release) = (processed.clone(), release.clone());
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let svc = {
                    let (processed, release, seen) =
                        (processed.clone(), release.clone(), seen.clone());
                    service_fn(move |req: Request<Incoming>| {
                        let (processed, release, seen) =
                            (processed.clone(), release.clone(), seen.clone());
                        async move {
                            let id: u64 = req.headers()["x-request-id"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            *processed.lock().unwrap().entry(id).or_insert(0) += 1;
                            seen.send_modify(|n| *n += 1);
                            if id == 0 {
                                release.notified().await;
                            }
                            Ok::<_, Infallible>(Response::new(Body::from("ok")))
                        }
                    })
                };
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1)
                    .serve_connection(TokioIo::new(stream), svc);
                let mut goaway = goaway_rx.clone();
                let shut_this_one = std::mem::take(&mut first);
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    if shut_this_one {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = goaway.wait_for(|go| *go) => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = conn.await;
                });
            }
        });
    }

    let uri = format!("http://{addr}").parse().unwrap();
    // Counts the requests handed to a connection, so the test waits for
    // the event rather than for time.
    let (handed, mut handed_rx) = watch::channel(0_u64);
    let connector = Http2Connector::new().map_response(move |conn| {
        let handed = handed.clone();
        tower::util::MapRequest::new(conn, move |req: Request<Body>| {
            handed.send_modify(|n| *n += 1);
            req
        })
    });
    let client = ReconnectLayer::new(uri)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .wait_for_ready(true)
        .layer(connector)
        .spawn(64);
    let watch = client.watch();
    guard(watch.connected()).await.unwrap();

    let get = |id: u64| {
        let req = Request::get("/")
            .header("x-request-id", id)
            .body(Body::default())
            .unwrap();
        tokio::spawn(client.clone().oneshot(req))
    };
    let held = get(0);
    guard(seen_rx.wait_for(|&n| n == 1)).await.unwrap();
    let waiting: Vec<_> = (1..=WAITING).map(get).collect();
    // Every waiting request has reached the connection: one waits for a
    // stream, the rest in hyper's queue.
    guard(handed_rx.wait_for(|&n| n == WAITING + 1))
        .await
        .unwrap();
    assert_eq!(
        *seen_rx.borrow(),
        1,
        "the server allows one stream at a time"
    );

    goaway.send(true).unwrap();
    let mut states = watch.subscribe();
    guard(states.wait_for(|s| s.connects() == 2)).await.unwrap();
    release.notify_one();

    for (id, res) in (1..=WAITING).zip(waiting) {
        let res = guard(res).await.unwrap();
        assert!(res.is_ok(), "request {id}: {res:?}");
    }
    assert!(
        guard(held).await.unwrap().is_ok(),
        "the held request finished"
    );
    let processed = processed.lock().unwrap().clone();
    assert_eq!(processed.len() as u64, WAITING + 1, "{processed:?}");
    assert!(processed.values().all(|&n| n == 1), "{processed:?}");
    let state = watch.state();
    // Every waiting request was on the old connection: hyper handed back
    // the queued ones unwritten and failed the one waiting for a stream.
    assert_eq!(state.resent(), WAITING, "{state:?}");
    client.close();
}

/// HTTP/2, a server that reads a request and then drops the connection
/// without answering: a POST is not idempotent, so it fails and is never
/// sent again; a GET on the same kind of connection is sent again once.
#[tokio::test]
async fn http2_connection_dropped_after_the_request_resends_only_the_get() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let processed = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    {
        let processed = processed.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (drop_it, dropped) = tokio::sync::oneshot::channel::<()>();
                let drop_it = Arc::new(Mutex::new(Some(drop_it)));
                let processed = processed.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (processed, drop_it) = (processed.clone(), drop_it.clone());
                    async move {
                        let id: u64 = req.headers()["x-request-id"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        *processed.lock().unwrap().entry(id).or_insert(0) += 1;
                        if req.headers().contains_key("x-drop") {
                            // Processed, never answered: the connection goes.
                            drop_it.lock().unwrap().take().map(|tx| tx.send(()));
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Infallible>(Response::new(Body::from("ok")))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        _ = dropped => {}
                    }
                });
            }
        });
    }
    let uri = format!("http://{addr}").parse().unwrap();
    let client = ReconnectLayer::new(uri)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .wait_for_ready(true)
        .layer(Http2Connector::new())
        .spawn(8);
    let watch = client.watch();
    guard(watch.connected()).await.unwrap();
    let send = |method: Method, id: u64, drop: bool| {
        let mut req = Request::builder()
            .method(method)
            .uri("/")
            .header("x-request-id", id);
        if drop {
            req = req.header("x-drop", "1");
        }
        client
            .clone()
            .oneshot(req.body(Body::from("payload")).unwrap())
    };
    // A first request, so the connection is a reused one.
    guard(send(Method::GET, 0, false)).await.unwrap();

    let err = guard(send(Method::POST, 1, true)).await.unwrap_err();
    assert!(err.is::<hyper::Error>(), "hyper's own error: {err:?}");
    assert_eq!(processed.lock().unwrap()[&1], 1, "the POST was sent once");
    assert_eq!(watch.state().resent(), 0);

    guard(watch.connected()).await.unwrap();
    guard(send(Method::GET, 2, false)).await.unwrap();
    // The GET is sent again and dropped again: the second time it was on a
    // fresh connection, which does not hand it back, so its caller gets
    // hyper's error (it may have been processed: the server saw it twice,
    // never three times).
    let err = guard(send(Method::GET, 3, true)).await.unwrap_err();
    assert!(err.is::<hyper::Error>(), "hyper's own error: {err:?}");
    assert_eq!(processed.lock().unwrap()[&3], 2, "the GET was sent twice");
    assert_eq!(watch.state().resent(), 1);
    client.close();
}
