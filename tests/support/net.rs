//! For tests over real sockets on 127.0.0.1, which need the real clock: a
//! hang guard, and a port where dials are refused.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::{net::TcpSocket, time::timeout};

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
