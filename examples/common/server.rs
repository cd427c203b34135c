//! The local server of the HTTP examples: one that stops, closing the
//! listener and every connection, and starts again on the same port,
//! counting the requests it answered.
//!
//! `examples/hyper_client.rs`, `examples/tonic_client.rs` and
//! `examples/tls_client.rs` include it with
//! `#[path = "common/server.rs"] mod server;`, next to `report.rs`, each
//! with its own [`Serve`]. It lives in a subfolder without a `main.rs`, so
//! cargo does not build it as an example of its own.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket},
    sync::oneshot,
    task::JoinHandle,
    time::sleep_until,
};

use crate::report::Clock;

/// Spawns the task that serves a listener until the stop signal (the sender
/// dropped), counting each request it answers.
pub(crate) type Serve =
    Box<dyn Fn(TcpListener, oneshot::Receiver<()>, Arc<AtomicUsize>) -> JoinHandle<()> + Send>;

/// A server that can stop and start again on the same address.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    serve: Serve,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Server {
    /// Listens on `addr`, served by `serve`; port 0 picks a free port, kept
    /// for restarts.
    pub(crate) fn start<F>(addr: SocketAddr, serve: F) -> io::Result<Self>
    where
        F: Fn(TcpListener, oneshot::Receiver<()>, Arc<AtomicUsize>) -> JoinHandle<()>,
        F: Send + 'static,
    {
        let mut server = Self {
            addr,
            answered: Arc::default(),
            serve: Box::new(serve),
            running: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// Listens on the same address again; SO_REUSEADDR lets the port be
    /// bound at once although the closed connections sit in TIME_WAIT.
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(64)?;
        self.addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = (self.serve)(listener, stopped, self.answered.clone());
        self.running = Some((stop, task));
        Ok(())
    }

    /// Stops accepting and closes every connection; returns once they are
    /// all closed.
    pub(crate) async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            drop(stop);
            let _ = task.await;
        }
    }

    /// The outage of the story: stops `down` after the start and restarts
    /// `up` after it, saying so.
    pub(crate) async fn outage(
        &mut self,
        clock: Clock,
        down: Duration,
        up: Duration,
    ) -> io::Result<()> {
        sleep_until(clock.0 + down).await;
        self.stop().await;
        clock.say("--- server stopped ---");
        sleep_until(clock.0 + up).await;
        self.restart()?;
        clock.say(format!("--- server restarted on {} ---", self.addr));
        Ok(())
    }

    /// The requests answered so far, over all its runs.
    pub(crate) fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}
