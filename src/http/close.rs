use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{runtime::Handle, sync::oneshot};
use tracing::Instrument;

/// The connection's side of the task that drives it: the task holds the
/// sender and drops it when the connection ends (sending hyper's error
/// first, if any), which wakes whoever polled the receiver last.
pub(crate) struct CloseSignal {
    /// `None` once the close has been seen.
    rx: Option<oneshot::Receiver<hyper::Error>>,
}

impl CloseSignal {
    /// Spawns the task that drives the connection `conn` on `runtime`, in
    /// the span of the attempt that made it, so its events name the
    /// connection. If the connection fails, the task hands hyper's error to
    /// `on_failure` first: it runs whether or not anyone polls the signal.
    pub(crate) fn spawn<F>(
        runtime: &Handle,
        conn: F,
        on_failure: impl FnOnce(&hyper::Error) + Send + 'static,
    ) -> Self
    where
        F: Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        runtime.spawn(
            async move {
                match conn.await {
                    Ok(()) => tracing::debug!("http connection closed"),
                    Err(err) => {
                        tracing::debug!(%err, "http connection failed");
                        on_failure(&err);
                        let _ = tx.send(err);
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        Self { rx: Some(rx) }
    }

    /// `Ready` once the connection has closed, with hyper's error if it
    /// failed and this is the first time the close is seen; otherwise
    /// `Pending`, with the waker left for the close.
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Option<hyper::Error>> {
        let Some(rx) = &mut self.rx else {
            return Poll::Ready(None);
        };
        let ended = std::task::ready!(Pin::new(rx).poll(cx));
        self.rx = None;
        Poll::Ready(ended.ok())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.rx.is_none()
    }
}
