//! Unary gRPC calls per second on 127.0.0.1: `redial::grpc::Channel`
//! against tonic's own `tonic::transport::Channel`.
//!
//! One server for both: tonic's `Server` with tonic-health's health
//! service, on a current-thread runtime of its own thread, so that it is
//! never scheduled among the clients' tasks and answers both alike. Each
//! client is made as its users make it
//! (`Endpoint::from_shared(uri)?.connect().await`, the defaults otherwise:
//! one HTTP/2 connection, a queue of 1,024 calls and a task to drive it) on
//! a tokio multi-thread runtime with 2 workers, and calls `Health/Check`
//! through tonic-health's generated `HealthClient`, with 1, 16 and 256
//! concurrent callers (`common/throughput.rs`).
//!
//! Criterion reports the time per call and calls per second; then an
//! interleaved pass (`common/interleave.rs`) runs round after round through
//! each client in turn and prints the table to quote: calls per second for
//! each and the median of the per-round ratio.
//!
//! Run with `cargo bench --bench grpc --features grpc` (about 2 minutes);
//! `-- --warm-up-time 1 --measurement-time 2` shortens criterion's part and
//! `REDIAL_ROUNDS=20` the interleaved pass. `REDIAL_CALLS=tonic:3000:16`
//! (or `redial:…`) makes only those calls through one client, for a
//! profiler: `valgrind --tool=callgrind` gives repeatable instruction counts
//! whatever else the machine does.

#[path = "common/interleave.rs"]
mod interleave;
#[path = "common/throughput.rs"]
mod throughput;

use std::{future::Future, net::SocketAddr, thread};

use criterion::Criterion;
use throughput::Caller;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{transport::server::TcpIncoming, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    HealthCheckResponse,
};

/// The concurrent callers of each row.
const CALLERS: [u64; 3] = [1, 16, 256];

/// Rounds of the interleaved pass unless `REDIAL_ROUNDS` says otherwise.
const ROUNDS: usize = 40;

/// Calls per client per round: about 50 ms of calls on this machine.
fn per_round(callers: u64) -> u64 {
    match callers {
        1 => 1_000,
        16 => 2_000,
        _ => 4_096,
    }
}

/// A generated client over either channel.
#[derive(Clone)]
struct Health<C>(HealthClient<C>);

impl Caller for Health<redial::grpc::Channel> {
    fn call(&mut self) -> impl Future<Output = ()> + Send {
        serving(self.0.check(HealthCheckRequest::default()))
    }
}

impl Caller for Health<tonic::transport::Channel> {
    fn call(&mut self) -> impl Future<Output = ()> + Send {
        serving(self.0.check(HealthCheckRequest::default()))
    }
}

/// Checks that a call answered `SERVING`: a failed call must not pass for
/// a fast one.
async fn serving(call: impl Future<Output = Result<tonic::Response<HealthCheckResponse>, Status>>) {
    let status = call.await.expect("health check").into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

fn main() {
    let server = Server::start();
    let uri = format!("http://{}", server.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let ((tonic, redial), watch) = rt.block_on(async {
        let tonic = tonic::transport::Endpoint::from_shared(uri.clone())
            .expect("tonic endpoint")
            .connect()
            .await
            .expect("tonic connects");
        let redial = redial::grpc::Endpoint::from_shared(uri)
            .expect("redial endpoint")
            .connect()
            .await
            .expect("redial connects");
        let watch = redial.watch();
        let clients = (
            Health(HealthClient::new(tonic)),
            Health(HealthClient::new(redial)),
        );
        (clients, watch)
    });

    if throughput::calls_only(&rt, ("tonic", &tonic), &redial) {
        return;
    }
    // Without plots: on this machine plotters takes ~10 s per benchmark, and
    // the table after the report is what to quote.
    let mut c = Criterion::default().without_plots().configure_from_args();
    throughput::criterion(&mut c, &rt, "grpc", ("tonic", &tonic), &redial, &CALLERS);
    c.final_summary();
    throughput::compare(
        &rt,
        "grpc",
        ("tonic", &tonic),
        &redial,
        &CALLERS,
        ROUNDS,
        per_round,
    );

    // Every call went through the connection made above: no reconnect.
    assert_eq!(watch.state().connects(), 1);
    drop((tonic, redial));
    server.stop();
}

/// tonic's server with tonic-health's service (`SERVING` for `""`), on a
/// thread and a current-thread runtime of its own.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Server {
    fn start() -> Self {
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
                let (_reporter, health) = tonic_health::server::health_reporter();
                // As tonic's `Server::tcp_nodelay`, which an incoming of
                // one's own does not get.
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .serve_with_incoming_shutdown(health, incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("server");
            });
        });
        let addr = addr.recv().expect("server address");
        Self { addr, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("server thread");
    }
}
