//! The plumbing of the test servers on 127.0.0.1 (`tests/http.rs`,
//! `tests/tonic.rs`, the fault matrix's and the soak's): a listener that can
//! be bound again on its port, a server task that stops on demand, the
//! accept loop that closes every connection when it stops, a count of open
//! connections, and hyper serving one connection over HTTP/1 or HTTP/2.

use std::{error::Error, future::Future, net::SocketAddr};

use hyper::{
    body::{Body, Incoming},
    rt::{Read, Write},
    server::conn::{http1, http2},
    service::HttpService,
};
use hyper_util::rt::TokioExecutor;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{oneshot, watch},
    task::{JoinHandle, JoinSet},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// Listens on `addr` (port 0: a free one) with this backlog. SO_REUSEADDR
/// lets a server's port be bound again at once although its closed
/// connections sit in TIME_WAIT.
pub fn listen(addr: SocketAddr, backlog: u32) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(backlog).unwrap()
}

/// A server's task while it runs, and the sender that stops it.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Spawns `server`, which must end once the receiver it is given
    /// resolves (its sender dropped).
    pub fn spawn<F>(server: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server(stopped));
        Self { stop, task }
    }

    /// Spawns [`accept`] on `listener`.
    pub fn accept<F, C>(listener: TcpListener, on_accept: F) -> Self
    where
        F: FnMut(TcpStream, SocketAddr) -> Option<C> + Send + 'static,
        C: Future<Output = ()> + Send + 'static,
    {
        Self::spawn(|stopped| accept(listener, stopped, on_accept))
    }

    /// Stops the server; returns once its task has ended (for [`accept`]:
    /// once every connection is closed).
    pub async fn stop(self) {
        drop(self.stop);
        self.task.await.unwrap();
    }
}

/// Accepts on `listener` until `stop` resolves, handing each connection
/// (and its peer) to `on_accept`, and running the future it returns, if
/// any, as the connection's task. Then closes the listener, aborts every
/// connection and returns once their sockets are closed.
pub async fn accept<F, C>(listener: TcpListener, mut stop: oneshot::Receiver<()>, mut on_accept: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Option<C>,
    C: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if let Some(conn) = on_accept(stream, peer) {
                    conns.spawn(conn);
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut stop => break,
        }
    }
    drop(listener);
    // Aborts every connection and waits until their sockets are closed.
    conns.shutdown().await;
}

/// Counts a connection as open while it lives, aborted or not.
pub struct Open(watch::Sender<usize>);

impl Open {
    pub fn new(open: &watch::Sender<usize>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Serves one connection with `svc` over `proto` until it ends, its errors
/// ignored. With `keep_alive` false, HTTP/1 closes it after the first
/// response.
pub async fn serve_connection<I, S, B>(io: I, proto: Proto, keep_alive: bool, svc: S)
where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let _ = match proto {
        Proto::Http1 => {
            http1::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(io, svc)
                .await
        }
        Proto::Http2 => {
            http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await
        }
    };
}
