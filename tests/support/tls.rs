//! The TLS server of `tests/tls.rs`: tokio-rustls's server side under
//! hyper on 127.0.0.1, with a certificate from the test CA
//! (`examples/common/tls.rs`), that can stop and start again on its port
//! and records what each connection negotiated; or a mute one, which reads
//! the ClientHello and never answers.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{io::AsyncReadExt, net::TcpStream, sync::watch};
use tokio_rustls::TlsAcceptor;

pub(crate) use super::ca::TestCa;
use super::{
    net::guard,
    server::{listen, serve_connection, Open, Proto, Running},
};

type Body = Full<Bytes>;

#[derive(Clone, Copy)]
pub enum Behaviour {
    /// The TLS handshake, then `hello <path>` over this protocol.
    Serve(Proto),
    /// Reads the ClientHello and whatever follows, and never answers.
    Mute,
}

/// What a completed handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<String>,
}

/// A TLS server that can stop (closing every connection) and start again on
/// the same address, recording what it saw.
pub struct TlsServer {
    behaviour: Behaviour,
    acceptor: TlsAcceptor,
    pub addr: SocketAddr,
    pub log: Arc<Log>,
    running: Option<Running>,
}

#[derive(Default)]
pub struct Log {
    pub handshakes: Mutex<Vec<Handshake>>,
    pub seen: Mutex<Vec<String>>,
    pub accepts: watch::Sender<usize>,
    pub failed: watch::Sender<usize>,
    pub open: watch::Sender<usize>,
    pub mute_read: watch::Sender<usize>,
}

impl TlsServer {
    pub fn start(ca: &TestCa, behaviour: Behaviour, alpn: &[&[u8]]) -> Self {
        let mut server = Self {
            behaviour,
            acceptor: TlsAcceptor::from(ca.server_config(alpn).unwrap()),
            addr: ([127, 0, 0, 1], 0).into(),
            log: Arc::default(),
            running: None,
        };
        server.restart();
        server
    }

    pub fn uri(&self, host: &str) -> Uri {
        format!("https://{host}:{}/", self.addr.port())
            .parse()
            .unwrap()
    }

    pub fn restart(&mut self) {
        let listener = listen(self.addr, 64);
        self.addr = listener.local_addr().unwrap();
        let (behaviour, acceptor, log) = (self.behaviour, self.acceptor.clone(), self.log.clone());
        self.running = Some(Running::accept(listener, move |stream, _| {
            Some(connection(stream, behaviour, acceptor.clone(), log.clone()))
        }));
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            guard(running.stop()).await;
        }
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.log.handshakes.lock().unwrap().clone()
    }

    /// The URI of every request, over all runs.
    pub fn seen(&self) -> Vec<String> {
        self.log.seen.lock().unwrap().clone()
    }
}

async fn connection(
    mut stream: TcpStream,
    behaviour: Behaviour,
    acceptor: TlsAcceptor,
    log: Arc<Log>,
) {
    let _open = Open::new(&log.open);
    log.accepts.send_modify(|n| *n += 1);
    let proto = match behaviour {
        Behaviour::Serve(proto) => proto,
        Behaviour::Mute => {
            let mut buf = [0; 1024];
            while let Ok(read @ 1..) = stream.read(&mut buf).await {
                log.mute_read.send_modify(|n| *n += read);
            }
            return;
        }
    };
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(_) => return log.failed.send_modify(|n| *n += 1),
    };
    let (_, session) = tls.get_ref();
    log.handshakes.lock().unwrap().push(Handshake {
        sni: session.server_name().map(str::to_owned),
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    });
    let hello = service_fn(move |req: Request<Incoming>| {
        log.seen.lock().unwrap().push(req.uri().to_string());
        let body = Body::from(format!("hello {}", req.uri().path()));
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    serve_connection(TokioIo::new(tls), proto, true, hello).await;
}
