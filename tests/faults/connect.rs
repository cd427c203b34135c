//! The connect-side faults, each over every client and mode, and the checks
//! that the faults themselves are real.

use std::{future::Future, path::Path, time::Duration};

use http::{Request, Uri};
use redial::{
    error::{ConnectTimeout, Unavailable},
    http::{ConnectionClosed, Http2Connector},
    ReconnectLayer,
};
use tokio::{
    net::{TcpListener, TcpStream},
    time::{timeout, Instant},
};
use tower::{Layer, Service, ServiceExt};

use crate::{
    harness::{backoff, Body, CONNECT_TIMEOUT},
    matrix::{run, Case, Fault},
    netns::{fallback_warning, BlackHole},
    resources::{guard, lock, runtime, sockets_at},
    server::{Behaviour, FaultServer, Proto::*},
    support::errors::find,
};

// ===== the matrix =====

/// Nothing listens on the port: attempts fail at once with the refusal and
/// follow the schedule; fail-fast requests fail with `Unavailable`, waiting
/// ones wait; all recover when a server listens there.
#[test]
fn refused_connection_fails_fast_or_waits_then_recovers() {
    run(Case::all(Fault::Refused, &[Http1, Http2]));
}

/// SYNs vanish: each attempt ends at the connect timeout with
/// `ConnectTimeout`, no request hangs, and all recover when the address
/// answers.
#[test]
fn black_hole_attempts_end_at_the_connect_timeout() {
    run(Case::all(Fault::BlackHole, &[Http1, Http2]));
}

/// An HTTP/2 server that accepts TCP but never sends its preface: each
/// attempt ends at the connect timeout with `ConnectTimeout` (it never
/// looks connected), and all recover when it speaks.
#[test]
fn mute_http2_server_times_out_the_connect() {
    run(Case::all(Fault::Mute, &[Http2]));
}

/// A server that accepts and closes at once, over and over: it is dialled
/// on the backoff schedule, never in a loop, and all recover when it
/// serves.
#[test]
fn flapping_server_is_dialled_on_the_backoff_schedule() {
    run(Case::all(Fault::Flap, &[Http1, Http2]));
}

/// An HTTP/2 server whose preface comes after the connect timeout, then,
/// healed, well within it: timeouts first, then recovery.
#[test]
fn slow_handshake_times_out_then_recovers() {
    run(Case::all(Fault::Slow, &[Http2]));
}

// ===== regressions =====

/// Regression: `Http2Connector` resolved once TCP connected, before the
/// server's preface, so a server that never spoke HTTP/2 looked connected
/// and requests on it hung; now the attempt waits for the preface and ends
/// with `ConnectTimeout`, and a server closing first fails it at once.
#[test]
fn http2_connector_reported_connected_before_the_server_preface() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut server = FaultServer::start(listener, Http2, Behaviour::Mute, Vec::new());

        let connect = Http2Connector::<Body>::new().oneshot(uri.clone());
        let pending = timeout(CONNECT_TIMEOUT * 2, connect).await;
        assert!(pending.is_err(), "connected without a preface: {pending:?}");

        let mut svc = ReconnectLayer::new(uri.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .backoff(backoff())
            .layer(Http2Connector::<Body>::new());
        let watch = svc.watch();
        let req = Request::get("/").body(Body::default()).unwrap();
        let call = async { svc.ready().await?.call(req).await };
        let err = guard("the first request", call).await.unwrap_err();
        assert!(find::<Unavailable>(&*err).is_some(), "{err:?}");
        assert!(find::<ConnectTimeout>(&*err).is_some(), "{err:?}");
        assert_eq!(watch.state().connects(), 0);
        drop(svc);

        server.set(Behaviour::Flap);
        let connect = Http2Connector::<Body>::new().oneshot(uri);
        let err = guard("a connect to a closing server", connect)
            .await
            .unwrap_err();
        assert!(find::<ConnectionClosed>(&*err).is_some(), "{err:?}");
        server.stop().await;
    });
}

// ===== the faults are real =====

/// Both kinds of black hole hang a connect (the constructors check it),
/// heal into an address that accepts, and leave nothing behind: the
/// namespace is removed on drop.
#[test]
fn black_holes_hang_a_connect_until_healed() {
    block_on(async {
        let mut holes = vec![BlackHole::backlog().await];
        match BlackHole::netns().await {
            Ok(hole) => holes.push(hole),
            Err(why) => fallback_warning(&why),
        }
        for mut hole in holes {
            let addr = hole.addr();
            let started = Instant::now();
            let hung = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
            assert!(hung.is_err(), "{}: {hung:?}", hole.kind());
            assert!(started.elapsed() >= CONNECT_TIMEOUT);

            let (listener, _) = hole.heal();
            let connect = TcpStream::connect(addr);
            let (accepted, connected) = guard("a healed connect", async {
                tokio::join!(listener.accept(), connect)
            })
            .await;
            accepted.unwrap();
            connected.unwrap();

            let netns = match &hole {
                BlackHole::Netns(netns) => Some(netns.name().to_owned()),
                BlackHole::Backlog(_) => None,
            };
            drop(hole);
            if let Some(name) = netns {
                let path = Path::new("/run/netns").join(&name);
                assert!(!path.exists(), "{name} left behind");
            }
        }
    });
}

/// The socket check sees this process's sockets at an address, and only
/// while they are open: it is not vacuous.
#[test]
fn socket_check_sees_open_sockets_only() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(sockets_at(addr).len(), 3, "{:?}", sockets_at(addr));
        drop((listener, client, server));
        assert_eq!(sockets_at(addr), Vec::<String>::new());
    });
}

/// Runs `fut` on a current-thread runtime, holding the binary's lock.
fn block_on<F: Future>(fut: F) -> F::Output {
    let _lock = lock();
    crate::support::trace_init();
    let rt = runtime();
    let out = rt.block_on(fut);
    // Let the runtime's tasks finish before the lock goes.
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}
