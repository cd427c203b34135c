//! A small line protocol over TCP, shared by the demo and the real-socket
//! tests: [`LineConn`], a client connection that sends a line and reads one
//! back, [`Dial`], the make service that dials one, and [`LineServer`], a
//! server on which it can be stopped and started again on the same port.
//!
//! `examples/demo.rs` includes it with `#[path = "common/line.rs"] mod line;`
//! and `tests/tcp.rs` with `#[path = "../examples/common/line.rs"] mod line;`.
//! It lives in a subfolder without a `main.rs`, so cargo does not build it as
//! an example of its own.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use redial::error::Resend;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, oneshot},
    task::{JoinHandle, JoinSet},
};
use tower::{BoxError, Service};

// ===== Dial: the make service =====

/// Dials an address and wraps the socket in a [`LineConn`], counting its
/// dials (clones share the count).
#[derive(Clone, Debug, Default)]
pub(crate) struct Dial {
    dials: Arc<AtomicUsize>,
}

impl Dial {
    /// How many times it has dialled.
    #[allow(dead_code)] // not every includer reports its dials
    pub(crate) fn dials(&self) -> usize {
        self.dials.load(Ordering::Relaxed)
    }
}

impl Service<SocketAddr> for Dial {
    type Response = LineConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<LineConn>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        self.dials.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { TcpStream::connect(addr).await.map(LineConn::new) })
    }
}

// ===== LineConn: the connection =====

/// A line to send, and where its reply goes.
type Request = (String, oneshot::Sender<Result<String, BoxError>>);

/// A client connection for a line protocol: send a line, read one back.
///
/// A task spawned by `new` owns the socket. `poll_ready` fails once that
/// task has ended (the peer closed the socket, or it failed), which is how
/// `Reconnect` learns that the connection is gone, as it does from hyper's
/// `SendRequest`. A line the connection could not write, because it was
/// found closed first, is handed back with [`Resend`], and the shared
/// handle sends it on the next connection.
pub(crate) struct LineConn {
    requests: mpsc::UnboundedSender<Request>,
    /// The task holds the other end, and drops it when the socket closes.
    alive: oneshot::Sender<()>,
}

impl LineConn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        let (alive, alive_rx) = oneshot::channel();
        tokio::spawn(drive(stream, rx, alive_rx));
        Self { requests, alive }
    }
}

impl Service<String> for LineConn {
    type Response = String;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The check also leaves the caller's waker for the close, so a task
        // holding an idle connection is woken when the peer goes away.
        match self.alive.poll_closed(cx) {
            Poll::Ready(()) => Poll::Ready(Err(closed().into())),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, line: String) -> Self::Future {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((line, _))) = self.requests.send((line, reply)) {
            // The task is gone: the line was never written.
            return Box::pin(async move { Err(Resend::unwritten(line, closed()).into()) });
        }
        Box::pin(async move { answer.await.unwrap_or_else(|_| Err(closed().into())) })
    }
}

/// Owns the socket: writes each request and reads its reply, until the peer
/// closes, the socket fails or the [`LineConn`] is dropped.
async fn drive(
    stream: TcpStream,
    mut requests: mpsc::UnboundedReceiver<Request>,
    alive: oneshot::Receiver<()>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let failed = loop {
        tokio::select! {
            request = requests.recv() => {
                let Some((line, reply)) = request else { return };
                let answer = async {
                    write.write_all(format!("{line}\n").as_bytes()).await?;
                    lines.next_line().await?.ok_or_else(closed)
                };
                match answer.await {
                    Ok(answer) => { let _ = reply.send(Ok(answer)); }
                    Err(err) => break Some((reply, err.into())),
                }
            }
            // The server speaks only when spoken to: EOF, an error or stray
            // bytes between requests all end the connection.
            _ = lines.next_line() => break None,
        }
    };
    // Mark the connection closed before failing the request, so that the
    // caller's next `poll_ready` already knows.
    drop(alive);
    if let Some((reply, err)) = failed {
        let _ = reply.send(Err(err));
    }
    // Lines queued behind it were never written: hand them back.
    requests.close();
    while let Ok((line, reply)) = requests.try_recv() {
        let _ = reply.send(Err(Resend::unwritten(line, closed()).into()));
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed")
}

// ===== LineServer =====

/// A server that answers each line with `echo: <line>` and records what it
/// was sent. It can stop (closing the listener and every connection) and
/// start again on the same address.
pub(crate) struct LineServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl LineServer {
    /// Listens on `addr`; port 0 picks a free port, kept for restarts.
    pub(crate) fn start(addr: SocketAddr) -> io::Result<Self> {
        let mut server = Self {
            addr,
            seen: Arc::default(),
            running: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// The address it listens on, the same after a restart.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every line the server was sent, over all its runs, in order.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Listens on `addr` again. SO_REUSEADDR lets the port be bound at once
    /// although the closed connections still sit in TIME_WAIT.
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(64)?;
        self.addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, stopped, self.seen.clone()));
        self.running = Some((stop, task));
        Ok(())
    }

    /// Stops accepting and closes every connection; returns once they are
    /// all closed.
    pub(crate) async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            drop(stop);
            task.await.unwrap();
        }
    }
}

async fn serve(
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(echo(stream, seen.clone()));
                }
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    // Aborts every connection and waits until their sockets are closed.
    conns.shutdown().await;
}

async fn echo(stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        seen.lock().unwrap().push(line.clone());
        write
            .write_all(format!("echo: {line}\n").as_bytes())
            .await?;
    }
    Ok(())
}
