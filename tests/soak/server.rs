//! A hyper server on 127.0.0.1 that misbehaves on demand, and books what it
//! saw: accepts, closes, and every request id (so a request that reached it
//! twice is caught).
//!
//! Per request (the `x-fault` header), it can reset the connection after
//! reading a request, or in the middle of a streaming response. Per
//! connection (the accepting mode), it serves, accepts and closes at once
//! (flapping), or accepts and never answers. As a whole, it can stop (its
//! port refuses), crash (every connection reset) and start again on the
//! same port. A reset is a close with `SO_LINGER` zero: the peer gets a TCP
//! RST, not a FIN.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::AsyncReadExt,
    net::TcpStream,
    sync::{mpsc, watch, Notify},
};

pub use crate::support::server::Proto;
use crate::{
    io::{Chunks, Resettable},
    support::server::{listen, serve_connection, Running},
};

/// The request header carrying the caller's unique request id.
pub const ID: &str = "x-request-id";
/// The request header asking for a fault: [`RESET_REQUEST`] or
/// [`RESET_STREAM`].
pub const FAULT: &str = "x-fault";
/// Read the whole request, then reset the connection instead of answering.
pub const RESET_REQUEST: &str = "reset-request";
/// Answer `200` and a first body chunk (`part-1`), wait until the client
/// says it read it ([`Server::release_stream`]), then reset the connection.
pub const RESET_STREAM: &str = "reset-stream";
/// The first chunk of a streaming response.
pub const PART_1: &[u8] = b"part-1";

/// What the server does with a connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepting {
    /// Serves HTTP.
    Serve,
    /// Closes it at once.
    Flap,
    /// Holds it and never writes a byte, until the mode changes or the
    /// client closes it.
    Silent,
}

/// What the server saw, over all its runs.
#[derive(Debug)]
pub struct Book {
    accepts: AtomicU64,
    closes: AtomicU64,
    resets: AtomicU64,
    duplicates: AtomicU64,
    open: watch::Sender<usize>,
    requests: watch::Sender<u64>,
    /// A bit per request id seen.
    seen: Mutex<Vec<u64>>,
    accepting: watch::Sender<Accepting>,
    /// Set while crashing: every connection closed now is reset.
    crashing: AtomicBool,
    stream_gate: Notify,
}

impl Book {
    fn new() -> Self {
        Self {
            accepts: AtomicU64::new(0),
            closes: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            open: watch::Sender::new(0),
            requests: watch::Sender::new(0),
            seen: Mutex::new(Vec::new()),
            accepting: watch::Sender::new(Accepting::Serve),
            crashing: AtomicBool::new(false),
            stream_gate: Notify::new(),
        }
    }

    fn record(&self, id: u64) {
        let (word, bit) = ((id / 64) as usize, 1 << (id % 64));
        let mut seen = self.seen.lock().unwrap();
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit != 0 {
            self.duplicates.fetch_add(1, SeqCst);
        }
        seen[word] |= bit;
        drop(seen);
        self.requests.send_modify(|n| *n += 1);
    }

    /// Whether a request with this id reached the server.
    pub fn seen(&self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, 1 << (id % 64));
        self.seen
            .lock()
            .unwrap()
            .get(word)
            .is_some_and(|w| w & bit != 0)
    }

    pub fn accepts(&self) -> u64 {
        self.accepts.load(SeqCst)
    }

    pub fn closes(&self) -> u64 {
        self.closes.load(SeqCst)
    }

    /// Connections the server reset (a fault or a crash).
    pub fn resets(&self) -> u64 {
        self.resets.load(SeqCst)
    }

    /// Request ids that arrived more than once.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(SeqCst)
    }

    pub fn requests(&self) -> u64 {
        *self.requests.borrow()
    }

    pub async fn until_requests(&self, n: u64) {
        let _ = self.requests.subscribe().wait_for(|&seen| seen >= n).await;
    }

    pub async fn until_open(&self, n: usize) {
        let _ = self.open.subscribe().wait_for(|&open| open == n).await;
    }

    /// The client read the first chunk of a streaming response: reset it.
    pub fn release_stream(&self) {
        self.stream_gate.notify_one();
    }
}

/// The server: a listener task while running, and its [`Book`].
pub struct Server {
    proto: Proto,
    addr: SocketAddr,
    book: Arc<Book>,
    running: Option<Running>,
}

impl Server {
    pub fn start(proto: Proto) -> Self {
        let mut server = Self {
            proto,
            addr: ([127, 0, 0, 1], 0).into(),
            book: Arc::new(Book::new()),
            running: None,
        };
        server.restart();
        server
    }

    pub fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }

    /// Listens on the same address again. SO_REUSEADDR lets the port be
    /// bound at once although closed connections sit in TIME_WAIT.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "already running");
        let listener = listen(self.addr, 1024);
        self.addr = listener.local_addr().unwrap();
        let (proto, book) = (self.proto, self.book.clone());
        self.running = Some(Running::accept(listener, move |stream, _| {
            book.accepts.fetch_add(1, SeqCst);
            let accepting = *book.accepting.borrow();
            if accepting == Accepting::Flap {
                let open = Open::new(&book);
                drop(stream);
                drop(open);
                return None;
            }
            Some(connection(stream, accepting, proto, book.clone()))
        }));
    }

    /// Stops listening (the port refuses) and closes every connection;
    /// returns once their sockets are closed.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// As [`stop`](Self::stop), but every served connection is reset.
    pub async fn crash(&mut self) {
        self.book.crashing.store(true, SeqCst);
        self.stop().await;
        self.book.crashing.store(false, SeqCst);
    }

    pub fn set_accepting(&self, accepting: Accepting) {
        self.book.accepting.send_replace(accepting);
    }
}

/// Counts a connection open while it lives and closed once its socket is.
struct Open(Arc<Book>);

impl Open {
    fn new(book: &Arc<Book>) -> Self {
        book.open.send_modify(|n| *n += 1);
        Self(book.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closes.fetch_add(1, SeqCst);
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// A connection's task, as the accepting mode said: served, or held silent.
async fn connection(stream: TcpStream, accepting: Accepting, proto: Proto, book: Arc<Book>) {
    if accepting == Accepting::Silent {
        silent(stream, book).await;
    } else {
        serve(stream, proto, book).await;
    }
}

async fn silent(mut stream: TcpStream, book: Arc<Book>) {
    let _open = Open::new(&book);
    let mut accepting = book.accepting.subscribe();
    let mut buf = [0; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => if !matches!(read, Ok(1..)) { break },
            _ = accepting.wait_for(|&a| a != Accepting::Silent) => break,
        }
    }
}

// ===== serving, and resetting =====

/// One served connection's fault switches.
struct Conn {
    /// Reset rather than close.
    reset: AtomicBool,
    abort: Notify,
    /// Set once the connection is gone, so that work waiting on it ends.
    gone: watch::Sender<bool>,
}

impl Conn {
    fn reset(&self, book: &Book) {
        if !self.reset.swap(true, SeqCst) {
            book.resets.fetch_add(1, SeqCst);
        }
        self.abort.notify_one();
    }

    async fn gone(&self) {
        let _ = self.gone.subscribe().wait_for(|&gone| gone).await;
    }
}

/// Marks the connection gone when its task ends, aborted or not.
struct Gone(Arc<Conn>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.gone.send_replace(true);
    }
}

type Reply = Either<Full<Bytes>, Chunks>;

async fn serve(stream: TcpStream, proto: Proto, book: Arc<Book>) {
    let _open = Open::new(&book);
    let conn = Arc::new(Conn {
        reset: AtomicBool::new(false),
        abort: Notify::new(),
        gone: watch::Sender::new(false),
    });
    let _gone = Gone(conn.clone());
    let io = TokioIo::new(Resettable::new(stream, {
        let (conn, book) = (conn.clone(), book.clone());
        move || conn.reset.load(SeqCst) || book.crashing.load(SeqCst)
    }));
    let svc = {
        let (conn, book) = (conn.clone(), book.clone());
        service_fn(move |req| handle(req, conn.clone(), book.clone()))
    };
    let serving = serve_connection(io, proto, true, svc);
    // Aborting drops the connection, and with it the socket: reset.
    tokio::select! {
        biased;
        () = conn.abort.notified() => {}
        () = serving => {}
    }
}

async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
    book: Arc<Book>,
) -> Result<Response<Reply>, Infallible> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let id = header(ID).and_then(|id| id.parse::<u64>().ok());
    let fault = header(FAULT).map(str::to_owned);
    if let Some(id) = id {
        book.record(id);
    }
    // The whole request is read before any fault.
    let _ = req.into_body().collect().await;
    match fault.as_deref() {
        Some(RESET_REQUEST) => {
            conn.reset(&book);
            conn.gone().await;
            Ok(Response::new(Either::Left(Full::default())))
        }
        Some(RESET_STREAM) => {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(stream_then_reset(tx, conn, book));
            Ok(Response::new(Either::Right(Chunks(rx))))
        }
        _ => {
            let body = format!("ok {}", id.unwrap_or_default());
            Ok(Response::new(Either::Left(Full::from(body))))
        }
    }
}

async fn stream_then_reset(tx: mpsc::Sender<Bytes>, conn: Arc<Conn>, book: Arc<Book>) {
    let _ = tx.send(Bytes::from_static(PART_1)).await;
    tokio::select! {
        () = book.stream_gate.notified() => {}
        () = conn.gone() => return,
        // Only a guard against a client that never reads.
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    conn.reset(&book);
    // The body must not end before the reset, or hyper would finish the
    // response cleanly.
    conn.gone().await;
    drop(tx);
}
