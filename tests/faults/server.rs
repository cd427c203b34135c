//! A server whose behaviour towards new connections can be switched while it
//! runs: mute, closing at once, slow to greet, or serving `hello <path>` over
//! HTTP/1 or HTTP/2. It logs what it saw: each accept (with its time), the
//! connections open, and each request's path.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

pub use crate::support::server::Proto;
use crate::support::server::{serve_connection, Open, Running};

/// What the server does with a connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Holds it open and never writes a byte (no HTTP/2 preface).
    Mute,
    /// Closes it at once.
    Flap,
    /// Waits this long, then serves it.
    Slow(Duration),
    /// Serves it.
    Serve,
}

pub struct FaultServer {
    behaviour: watch::Sender<Behaviour>,
    log: Arc<Log>,
    running: Option<Running>,
}

#[derive(Default)]
struct Log {
    accepts: Mutex<Vec<Instant>>,
    open: watch::Sender<usize>,
    seen: Mutex<Vec<String>>,
}

impl FaultServer {
    /// Serves `listener`, ignoring connections from `ignore` (which are
    /// closed unseen).
    pub fn start(
        listener: TcpListener,
        proto: Proto,
        behaviour: Behaviour,
        ignore: Vec<SocketAddr>,
    ) -> Self {
        let (behaviour, rx) = watch::channel(behaviour);
        let log = Arc::new(Log::default());
        let running = Running::accept(listener, {
            let log = log.clone();
            move |stream, peer| {
                if ignore.contains(&peer) {
                    return None;
                }
                log.accepts.lock().unwrap().push(Instant::now());
                let behaviour = *rx.borrow();
                Some(connection(stream, proto, behaviour, log.clone()))
            }
        });
        Self {
            behaviour,
            log,
            running: Some(running),
        }
    }

    /// Changes what happens to connections accepted from now on.
    pub fn set(&self, behaviour: Behaviour) {
        self.behaviour.send_replace(behaviour);
    }

    /// When each connection was accepted.
    pub fn accepts(&self) -> Vec<Instant> {
        self.log.accepts.lock().unwrap().clone()
    }

    /// The path of every request it saw, in order.
    pub fn seen(&self) -> Vec<String> {
        self.log.seen.lock().unwrap().clone()
    }

    /// Until exactly `n` connections are open.
    pub async fn until_open(&self, n: usize) {
        let mut rx = self.log.open.subscribe();
        rx.wait_for(|&open| open == n).await.unwrap();
    }

    /// Stops accepting and closes every connection; returns once they are
    /// all closed.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

async fn connection(mut stream: TcpStream, proto: Proto, behaviour: Behaviour, log: Arc<Log>) {
    let _open = Open::new(&log.open);
    match behaviour {
        Behaviour::Mute => {
            // Until the client gives up and closes.
            let mut buf = [0; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Behaviour::Flap => drop(stream),
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            hello(stream, proto, log).await;
        }
        Behaviour::Serve => hello(stream, proto, log).await,
    }
}

/// Answers `hello <path>` to every request, logging its path.
async fn hello(stream: TcpStream, proto: Proto, log: Arc<Log>) {
    let io = TokioIo::new(stream);
    let hello = service_fn(move |req: Request<Incoming>| {
        let path = req.uri().path().to_owned();
        let body = Full::new(Bytes::from(format!("hello {path}")));
        log.seen.lock().unwrap().push(path);
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    serve_connection(io, proto, true, hello).await;
}
