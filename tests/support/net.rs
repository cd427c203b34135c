//! For tests over real sockets on 127.0.0.1, which need the real clock: a
//! hang guard, a port where dials are refused, and a wait for what has no
//! event to wait on (sockets closing, tasks ending).

use std::{fmt, future::Future, net::SocketAddr, time::Duration};

use tokio::{
    net::TcpSocket,
    time::{timeout, Instant},
};

/// Only a hang guard: nothing should take more than a fraction of it.
pub const HANG: Duration = Duration::from_secs(10);

/// Fails the test instead of hanging.
pub async fn guard<F: Future>(fut: F) -> F::Output {
    timeout(HANG, fut)
        .await
        .expect("timed out: the client hung")
}

/// A port on 127.0.0.1 where nothing listens. The socket is bound but never
/// listens, so dials are refused and no other test can take the port; keep
/// it alive for the test.
pub fn refusing_port() -> (TcpSocket, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// The tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (on the real clock) until `done` holds for what `probe` reads,
/// polling every few milliseconds: sockets closing and tasks ending have no
/// event to wait on. Panics with `what` and the last value after `limit`.
pub async fn settle<T: fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) {
    let until = Instant::now() + limit;
    loop {
        let value = probe();
        if done(&value) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: still {value:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
