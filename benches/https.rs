//! HTTPS requests per second, HTTP/2 over TLS on 127.0.0.1: redial's TLS
//! HTTP/2 connector under the shared handle, against hyper-util's pooled
//! `Client` over hyper-rustls.
//!
//! One server for both: hyper's HTTP/2 server behind tokio-rustls's
//! acceptor, with a certificate from a CA made at run time
//! (`examples/common/tls.rs`), on a current-thread runtime of its own
//! thread, so that it is never scheduled among the clients' tasks and
//! answers both alike. It answers every request with `hello`. The clients,
//! on a tokio multi-thread runtime with 2 workers, share one rustls
//! `ClientConfig` (ring, ALPN `h2`) and each keep one HTTP/2 connection:
//!
//! - `hyper`: `Client::builder(TokioExecutor::new()).http2_only(true)`
//!   over `HttpsConnectorBuilder::new().with_tls_config(config)
//!   .https_only().enable_http2()`, which shares one HTTP/2 connection
//!   among its callers;
//! - `redial`: `ReconnectLayer::new(uri).layer(Http2Connector::new()
//!   .tls(config)).spawn(1024)`, the shared handle.
//!
//! Each call is `GET https://127.0.0.1:<port>/` with an empty body, its
//! response body read to the end, from 1, 16 and 256 concurrent callers
//! (`common/throughput.rs`). Criterion reports the time per call and calls
//! per second; then an interleaved pass (`common/interleave.rs`) runs round
//! after round through each client in turn and prints the table to quote.
//!
//! Run with `cargo bench --bench https --features tls` (about 2 minutes);
//! `-- --warm-up-time 1 --measurement-time 2` shortens criterion's part and
//! `REDIAL_ROUNDS=20` the interleaved pass. `REDIAL_CALLS=hyper:3000:16`
//! (or `redial:…`) makes only those calls through one client, for a
//! profiler: `valgrind --tool=callgrind` gives repeatable instruction counts
//! whatever else the machine does.

#[path = "common/interleave.rs"]
mod interleave;
#[path = "common/throughput.rs"]
mod throughput;
#[path = "../examples/common/tls.rs"]
mod tls;

use std::{convert::Infallible, net::SocketAddr, thread};

use criterion::Criterion;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use redial::{
    http::{Http2Connector, SharedHttp2},
    ReconnectLayer,
};
use throughput::Caller;
use tls::TestCa;
use tokio::{net::TcpListener, sync::oneshot, task::JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

/// The concurrent callers of each row.
const CALLERS: [u64; 3] = [1, 16, 256];

/// Rounds of the interleaved pass unless `REDIAL_ROUNDS` says otherwise.
const ROUNDS: usize = 40;

/// What the server answers.
const HELLO: &[u8] = b"hello";

/// Calls per client per round: about 50 ms of calls on this machine.
fn per_round(callers: u64) -> u64 {
    match callers {
        1 => 1_000,
        16 => 2_000,
        _ => 4_096,
    }
}

/// redial's shared handle, and the target every request names.
#[derive(Clone)]
struct Redial {
    client: SharedHttp2<Body>,
    uri: Uri,
}

impl Caller for Redial {
    async fn call(&mut self) {
        let req = Request::get(self.uri.clone())
            .body(Body::default())
            .expect("request");
        let res = async { self.client.ready().await?.call(req).await }.await;
        hello(res).await;
    }
}

/// hyper-util's pooled client over hyper-rustls.
#[derive(Clone)]
struct Hyper {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    uri: Uri,
}

impl Caller for Hyper {
    async fn call(&mut self) {
        let req = Request::get(self.uri.clone())
            .body(Body::default())
            .expect("request");
        hello(self.client.request(req).await.map_err(Into::into)).await;
    }
}

/// Reads the body to its end and checks it: a failed call must not pass
/// for a fast one.
async fn hello(res: Result<Response<Incoming>, BoxError>) {
    let body = res
        .expect("response")
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(body.to_bytes(), HELLO);
}

fn main() {
    let ca = TestCa::new().expect("test CA");
    let server = Server::start(TlsAcceptor::from(
        ca.server_config(&[b"h2"]).expect("server config"),
    ));
    let uri: Uri = format!("https://{}/", server.addr).parse().expect("uri");
    let config = ca.client_config().expect("client config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The shared handle spawns its task when built.
    let _guard = rt.enter();

    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config.clone())
        .https_only()
        .enable_http2()
        .build();
    let hyper = Hyper {
        client: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(https),
        uri: uri.clone(),
    };
    let redial = Redial {
        client: ReconnectLayer::new(uri.clone())
            .layer(Http2Connector::new().tls(config))
            .spawn(1024),
        uri,
    };
    let watch = redial.client.watch();

    // Connect both before measuring, and check that they answer.
    rt.block_on(async {
        watch.connected().await.expect("redial connects");
        hyper.clone().call().await;
        redial.clone().call().await;
    });

    if throughput::calls_only(&rt, ("hyper", &hyper), &redial) {
        return;
    }
    // Without plots: on this machine plotters takes ~10 s per benchmark, and
    // the table after the report is what to quote.
    let mut c = Criterion::default().without_plots().configure_from_args();
    throughput::criterion(&mut c, &rt, "https", ("hyper", &hyper), &redial, &CALLERS);
    c.final_summary();
    throughput::compare(
        &rt,
        "https",
        ("hyper", &hyper),
        &redial,
        &CALLERS,
        ROUNDS,
        per_round,
    );

    // Every call went through the connection made above: no reconnect,
    // and the server saw one handshake from each client.
    assert_eq!(watch.state().connects(), 1);
    drop((hyper, redial));
    assert_eq!(server.stop(), 2);
}

/// hyper's HTTP/2 server behind tokio-rustls, on a thread and a
/// current-thread runtime of its own; answers every request with
/// [`HELLO`].
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: thread::JoinHandle<usize>,
}

impl Server {
    fn start(acceptor: TlsAcceptor) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                bound.send(listener.local_addr().expect("address")).unwrap();
                serve(listener, acceptor, stopped).await
            })
        });
        let addr = addr.recv().expect("server address");
        Self { addr, stop, thread }
    }

    /// Stops the server; returns how many TLS handshakes it completed.
    fn stop(self) -> usize {
        let _ = self.stop.send(());
        self.thread.join().expect("server thread")
    }
}

/// Accepts until `stopped`, then drops every connection; returns the
/// handshakes completed.
async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut stopped: oneshot::Receiver<()>,
) -> usize {
    let mut conns = JoinSet::new();
    let mut handshakes = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.expect("accept");
                let _ = stream.set_nodelay(true);
                // In the accept loop: each client dials once, before the
                // measuring starts, and a failed handshake is a broken bench.
                let tls = acceptor.accept(stream).await.expect("TLS handshake");
                handshakes += 1;
                conns.spawn(async move {
                    let hello = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Body::from(HELLO)))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), hello)
                        .await;
                });
            }
            _ = &mut stopped => break,
        }
    }
    conns.shutdown().await;
    handshakes
}
