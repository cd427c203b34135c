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

// ===== the shared handle's rules, on a scripted connection =====

mod scripted {
    use std::{
        collections::VecDeque,
        future::Future,
        io,
        pin::Pin,
        sync::{
            atomic::{AtomicBool, AtomicUsize, Ordering},
            Arc, Mutex,
        },
        task::{Context, Poll},
        time::Duration,
    };

    use redial::{
        error::{Closed, Resend, Unavailable},
        Backoff, Phase, Reconnect, ReconnectLayer,
    };
    use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

    /// What the connection does with the next request.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Ok,
        /// Hands it back unwritten and closes, after this long.
        Unwritten(Duration),
        /// Hands it back unanswered and closes.
        Unanswered,
    }

    /// The connections' script and log, shared by all of them.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Answer>>>,
        /// (connection, request) for every request a connection got.
        log: Arc<Mutex<Vec<(usize, u32)>>>,
        connects: Arc<AtomicUsize>,
        refuse: Arc<AtomicBool>,
        /// The next dial panics, inside the shared handle's task.
        panic: Arc<AtomicBool>,
    }

    impl Script {
        fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
            let script = Self::default();
            script.answers.lock().unwrap().extend(answers);
            script
        }

        fn log(&self) -> Vec<(usize, u32)> {
            self.log.lock().unwrap().clone()
        }

        /// A make service dialling connections that follow the script.
        fn make(
            &self,
        ) -> impl Service<(), Response = Conn, Error = io::Error, Future = impl Future + Send>
               + Clone
               + Send
               + 'static {
            let script = self.clone();
            service_fn(move |()| {
                let script = script.clone();
                async move {
                    if script.refuse.load(Ordering::SeqCst) {
                        return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
                    }
                    assert!(!script.panic.load(Ordering::SeqCst), "the dial panicked");
                    let id = script.connects.fetch_add(1, Ordering::SeqCst);
                    Ok(Conn {
                        id,
                        closed: Arc::new(AtomicBool::new(false)),
                        script,
                    })
                }
            })
        }
    }

    /// A connection that answers `n` with `n`, or hands it back and closes.
    struct Conn {
        id: usize,
        closed: Arc<AtomicBool>,
        script: Script,
    }

    impl Service<u32> for Conn {
        type Response = u32;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            match self.closed.load(Ordering::SeqCst) {
                true => Poll::Ready(Err("connection closed".into())),
                false => Poll::Ready(Ok(())),
            }
        }

        fn call(&mut self, n: u32) -> Self::Future {
            self.script.log.lock().unwrap().push((self.id, n));
            let answer = self.script.answers.lock().unwrap().pop_front();
            let closed = self.closed.clone();
            Box::pin(async move {
                match answer.unwrap_or(Answer::Ok) {
                    Answer::Ok => Ok(n),
                    Answer::Unwritten(after) => {
                        tokio::time::sleep(after).await;
                        closed.store(true, Ordering::SeqCst);
                        Err(
                            Resend::unwritten(n, io::Error::from(io::ErrorKind::NotConnected))
                                .into(),
                        )
                    }
                    Answer::Unanswered => {
                        closed.store(true, Ordering::SeqCst);
                        Err(
                            Resend::unanswered(n, io::Error::from(io::ErrorKind::ConnectionReset))
                                .into(),
                        )
                    }
                }
            })
        }
    }

    fn layer() -> ReconnectLayer<()> {
        ReconnectLayer::new(()).backoff(Backoff::constant(Duration::from_millis(100)))
    }

    /// Connects, and lets the connection live past the first retry delay:
    /// a connection lost sooner counts as a failed attempt, and the
    /// fail-fast handle would answer `Unavailable` while it reconnects.
    async fn proven(watch: &redial::ConnectionWatch) {
        watch.connected().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// A request the connection hands back unwritten is answered on the
    /// next connection, and the watch counts it.
    #[tokio::test(start_paused = true)]
    async fn an_unwritten_request_is_sent_on_the_next_connection() {
        let script = Script::new([Answer::Unwritten(Duration::ZERO), Answer::Ok]);
        let shared = layer().layer(script.make()).spawn(8);
        proven(&shared.watch()).await;
        assert_eq!(shared.clone().oneshot(7).await.unwrap(), 7);
        assert_eq!(script.log(), [(0, 7), (1, 7)]);
        let state = shared.watch().state();
        assert_eq!((state.resent(), state.connects()), (1, 2));
    }

    /// A request handed back after the task died (its next dial panicked)
    /// is not left waiting for a task that is gone: its caller gets
    /// `Closed`.
    #[tokio::test(start_paused = true)]
    async fn a_request_handed_back_after_the_task_died_fails_closed() {
        let script = Script::new([Answer::Unwritten(Duration::from_millis(50))]);
        let shared = layer().wait_for_ready(true).layer(script.make()).spawn(8);
        proven(&shared.watch()).await;
        script.panic.store(true, Ordering::SeqCst);
        let answer = tokio::time::timeout(Duration::from_secs(3_600), shared.clone().oneshot(7))
            .await
            .expect("answered, not left waiting");
        let err = answer.unwrap_err();
        assert!(err.is::<redial::error::Closed>(), "{err:?}");
        assert!(shared.watch().state().is_closed());
    }

    /// A request handed back a second time is not sent a third: the caller
    /// gets the `Resend`, with the request and the connection's own error.
    #[tokio::test(start_paused = true)]
    async fn a_request_is_sent_at_most_twice() {
        let script = Script::new([
            Answer::Unanswered,
            Answer::Unwritten(Duration::ZERO),
            Answer::Ok,
        ]);
        let shared = layer().layer(script.make()).spawn(8);
        proven(&shared.watch()).await;
        let err = shared.clone().oneshot(7).await.unwrap_err();
        let resend = err.downcast::<Resend<u32>>().expect("the Resend");
        assert!(resend.is_unwritten(), "the second hand-back's kind");
        let (request, error) = resend.into_parts();
        assert_eq!(request, 7);
        let io = error
            .downcast::<io::Error>()
            .expect("the connection's own error");
        assert_eq!(io.kind(), io::ErrorKind::NotConnected);
        assert_eq!(script.log(), [(0, 7), (1, 7)]);
        assert_eq!(shared.watch().state().resent(), 1);
        // The next request is a new one.
        proven(&shared.watch()).await;
        assert_eq!(shared.clone().oneshot(8).await.unwrap(), 8);
    }

    /// Fail-fast mode: a request to send again while the peer is away fails
    /// fast with `Unavailable`, as a new one would, and is not sent.
    #[tokio::test(start_paused = true)]
    async fn a_request_to_resend_fails_fast_while_disconnected() {
        let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
        let shared = layer().layer(script.make()).spawn(8);
        let watch = shared.watch();
        // Proven: a young connection's loss would fail fast by itself.
        proven(&watch).await;
        let pending = tokio::spawn(shared.clone().oneshot(7));
        // The peer goes away before the request comes back.
        script.refuse.store(true, Ordering::SeqCst);
        let err = pending.await.unwrap().unwrap_err();
        assert!(err.is::<Unavailable>(), "{err:?}");
        assert_eq!(watch.phase(), Phase::Disconnected);
        assert_eq!(script.log(), [(0, 7)]);
    }

    /// Wait-for-ready mode: the request to send again waits for the peer,
    /// and is answered once it is back.
    #[tokio::test(start_paused = true)]
    async fn a_request_to_resend_waits_for_the_peer_in_wait_for_ready_mode() {
        let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
        let shared = layer().wait_for_ready(true).layer(script.make()).spawn(8);
        let watch = shared.watch();
        watch.connected().await.unwrap();
        let pending = tokio::spawn(shared.clone().oneshot(7));
        script.refuse.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(watch.phase(), Phase::Disconnected);
        assert!(!pending.is_finished(), "the request waits");
        script.refuse.store(false, Ordering::SeqCst);
        assert_eq!(pending.await.unwrap().unwrap(), 7);
        assert_eq!(script.log(), [(0, 7), (1, 7)]);
        assert_eq!(watch.state().resent(), 1);
    }

    /// With an idle timeout, a connection lost with nothing in flight leaves
    /// the task idle, waiting for a request before dialling: a request the
    /// connection handed back is one, and is sent on a new connection
    /// without any other request coming.
    #[tokio::test(start_paused = true)]
    async fn a_request_handed_back_with_an_idle_timeout_needs_no_other_request() {
        let script = Script::new([Answer::Unwritten(Duration::from_millis(10)), Answer::Ok]);
        let shared = layer()
            .idle_timeout(Duration::from_secs(60))
            .layer(script.make())
            .spawn(8);
        let watch = shared.watch();
        proven(&watch).await;
        let answer = tokio::time::timeout(Duration::from_secs(10), shared.clone().oneshot(7))
            .await
            .expect("answered without another request");
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(script.log(), [(0, 7), (1, 7)]);
        let state = watch.state();
        assert_eq!((state.resent(), state.connects()), (1, 2));
    }

    /// With a wait timeout, a request sent again waits within the caller's
    /// one wait, counted from the call: while the peer is away (waiting for
    /// ready) it fails with `Unavailable` at the call plus the wait timeout,
    /// and is never sent a second time, even once the peer is back.
    #[tokio::test(start_paused = true)]
    async fn a_request_to_resend_is_bounded_by_the_wait_timeout_from_the_call() {
        const WAIT: Duration = Duration::from_secs(1);
        let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
        let shared = layer()
            .wait_for_ready(true)
            .wait_timeout(WAIT)
            .layer(script.make())
            .spawn(8);
        let watch = shared.watch();
        proven(&watch).await;
        let t0 = tokio::time::Instant::now();
        let pending = tokio::spawn(shared.clone().oneshot(7));
        // The peer goes away before the request comes back.
        script.refuse.store(true, Ordering::SeqCst);
        let err = pending.await.unwrap().unwrap_err();
        assert_eq!(t0.elapsed(), WAIT);
        let err = err
            .downcast::<Unavailable>()
            .unwrap_or_else(|err| panic!("expected Unavailable, got {err:?}"));
        assert_eq!(err.waited(), Some(WAIT));
        assert_ne!(watch.phase(), Phase::Connected);
        // The peer comes back: the request stays unsent.
        script.refuse.store(false, Ordering::SeqCst);
        watch.connected().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(script.log(), [(0, 7)]);
        assert_eq!(watch.state().resent(), 0);
        // A new request is sent, with a wait of its own.
        assert_eq!(shared.clone().oneshot(8).await.unwrap(), 8);
    }

    /// With a wait timeout, a request handed back after the caller's wait
    /// has run out fails at once with `Unavailable` and is not sent again,
    /// though the peer is there.
    #[tokio::test(start_paused = true)]
    async fn a_request_handed_back_after_its_wait_fails_unavailable() {
        const WAIT: Duration = Duration::from_secs(1);
        let script = Script::new([Answer::Unwritten(2 * WAIT)]);
        let shared = layer()
            .wait_for_ready(true)
            .wait_timeout(WAIT)
            .layer(script.make())
            .spawn(8);
        let watch = shared.watch();
        proven(&watch).await;
        let t0 = tokio::time::Instant::now();
        let err = shared.clone().oneshot(7).await.unwrap_err();
        assert_eq!(t0.elapsed(), 2 * WAIT);
        let err = err
            .downcast::<Unavailable>()
            .unwrap_or_else(|err| panic!("expected Unavailable, got {err:?}"));
        assert_eq!(err.waited(), Some(WAIT));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(script.log(), [(0, 7)]);
        assert_eq!(watch.state().resent(), 0);
    }

    /// A request handed back after the handle closed fails with `Closed`;
    /// nothing sends it.
    #[tokio::test(start_paused = true)]
    async fn a_request_handed_back_after_close_fails_closed() {
        let script = Script::new([Answer::Unwritten(Duration::from_millis(10))]);
        let shared = layer().layer(script.make()).spawn(8);
        let watch = shared.watch();
        watch.connected().await.unwrap();
        let pending = tokio::spawn(shared.clone().oneshot(7));
        tokio::task::yield_now().await;
        shared.close();
        let err = pending.await.unwrap().unwrap_err();
        assert!(err.is::<Closed>(), "{err:?}");
        assert_eq!(script.log(), [(0, 7)]);
        assert_eq!(watch.state().resent(), 0);
    }

    /// A plain `Reconnect` has handed its response future to the caller and
    /// cannot send again: the caller gets the `Resend`, and the request.
    #[tokio::test(start_paused = true)]
    async fn plain_reconnect_hands_the_request_back_to_the_caller() {
        let script = Script::new([Answer::Unwritten(Duration::ZERO)]);
        let svc: Reconnect<_, ()> = layer().layer(script.make());
        let watch = svc.watch();
        let err = svc.oneshot(7).await.unwrap_err();
        let resend = err.downcast::<Resend<u32>>().expect("handed back");
        assert!(resend.is_unwritten());
        assert_eq!(resend.into_request(), 7);
        assert_eq!(watch.state().resent(), 0);
    }

    // ===== the model =====

    use proptest::{collection::vec, option, prelude::*};

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            3 => Just(Answer::Ok),
            2 => (0_u64..30).prop_map(|ms| Answer::Unwritten(Duration::from_millis(ms))),
            1 => Just(Answer::Unanswered),
        ]
    }

    proptest! {
        /// Whatever the connections do with each request (answer it, hand
        /// it back unwritten now or later, hand it back unanswered), the
        /// peer's outages, the mode and a close at any time: every caller
        /// gets an answer, no request reaches a connection more than
        /// twice, an answer is the caller's own, a request sent twice went
        /// to two different connections, a caller gets a `Resend` only for
        /// a request sent twice, and the watch counts exactly the requests
        /// sent again.
        #[test]
        fn every_request_is_answered_and_sent_at_most_twice(
            answers in vec(answer(), 0..24),
            requests in 1_u32..12,
            wait_for_ready in any::<bool>(),
            outages in vec((0_u64..300, 1_u64..300), 0..3),
            close_at in option::of(0_u64..600),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let script = Script::new(answers);
                let shared = layer()
                    .wait_for_ready(wait_for_ready)
                    .layer(script.make())
                    .spawn(4);
                let watch = shared.watch();
                let refuse = script.refuse.clone();
                tokio::spawn(async move {
                    for (start, length) in outages {
                        tokio::time::sleep(Duration::from_millis(start)).await;
                        refuse.store(true, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(length)).await;
                        refuse.store(false, Ordering::SeqCst);
                    }
                });
                if let Some(at) = close_at {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(at)).await;
                        shared.close();
                    });
                }
                let mut callers = Vec::new();
                for id in 1..=requests {
                    callers.push(tokio::spawn(shared.clone().oneshot(id)));
                    tokio::time::sleep(Duration::from_millis(7)).await;
                }
                let mut answers = Vec::new();
                for caller in callers {
                    // Hours of paused time: a caller still waiting then was lost.
                    let answer = tokio::time::timeout(Duration::from_secs(3_600), caller).await;
                    answers.push(answer.expect("every caller gets an answer").unwrap());
                }
                let log = script.log();
                let sent = |id: u32| log.iter().filter(|(_, n)| *n == id).count();
                for (id, answer) in (1..=requests).zip(&answers) {
                    assert!(sent(id) <= 2, "request {id} sent {} times", sent(id));
                    match answer {
                        Ok(n) => assert_eq!(*n, id),
                        // A `Resend` only for a request handed back on
                        // its second connection too.
                        Err(err) if err.is::<Resend<u32>>() => {
                            assert_eq!(sent(id), 2, "request {id}: {err:?}")
                        }
                        Err(_) => {}
                    }
                    if sent(id) == 2 {
                        let first = log.iter().position(|(_, n)| *n == id).unwrap();
                        let second = log.iter().rposition(|(_, n)| *n == id).unwrap();
                        assert_ne!(log[first].0, log[second].0, "sent again on the same connection");
                    }
                }
                let twice = (1..=requests).filter(|&id| sent(id) == 2).count() as u64;
                assert_eq!(watch.state().resent(), twice);
                shared.close();
            });
        }
    }
}
