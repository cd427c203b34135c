//! A TCP relay on 127.0.0.1 that can freeze the connections it carries:
//! stop forwarding both ways and close nothing, as a hung proxy or a
//! dropped route would. Neither end sees a close; only the client's
//! keep-alive can tell.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use http::Uri;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

use super::server::Running;

/// Forwards each connection to `upstream` until told to freeze: then it
/// stops forwarding both ways and holds both sockets open, so neither side
/// sees a close. It counts the sockets it accepted.
pub struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    freezers: Arc<Mutex<Vec<oneshot::Sender<()>>>>,
    _running: Running,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let freezers = Arc::new(Mutex::new(Vec::new()));
        let (counted, frozen) = (accepted.clone(), freezers.clone());
        let running = Running::accept(listener, move |client, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            let (freeze, on_freeze) = oneshot::channel();
            frozen.lock().unwrap().push(freeze);
            Some(relay(client, upstream, on_freeze))
        });
        Self {
            addr,
            accepted,
            freezers,
            _running: running,
        }
    }

    pub fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Freezes every connection relayed so far.
    pub fn freeze(&self) {
        for freeze in self.freezers.lock().unwrap().drain(..) {
            let _ = freeze.send(());
        }
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, freeze: oneshot::Receiver<()>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = freeze => {}
    }
    // Frozen: both sockets stay open, and nothing moves, until the relay
    // stops.
    std::future::pending::<()>().await;
}
