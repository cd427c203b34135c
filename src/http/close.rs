use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{runtime::Handle, sync::oneshot};
use tracing::Instrument;

use super::ping::Why;

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

/// The connection has closed: what `poll_ready` of [`Http1Connection`](super::Http1Connection) and
/// [`Http2Connection`](super::Http2Connection) returns from then on. Under
/// [`Reconnect`](crate::Reconnect) it becomes the source of
/// [`ConnectionLost`](crate::error::ConnectionLost).
///
/// Its [`source`](StdError::source) is hyper's error when the connection
/// failed, the first time it is reported, and `None` when it closed
/// cleanly (the server closed it) or on later reports. Two failures are
/// told apart, in the message too, since they call for different fixes:
/// an unanswered keep-alive ping
/// ([`is_keep_alive_timeout`](Self::is_keep_alive_timeout), "http
/// connection closed: keep-alive timed out") and a server that found the
/// pings too frequent ([`is_too_many_pings`](Self::is_too_many_pings)). See
/// [`Http2Connector::keep_alive`](super::Http2Connector::keep_alive).
///
/// # Examples
///
/// ```
/// use std::error::Error;
/// use redial::http::ConnectionClosed;
///
/// fn closed_cleanly(err: &tower::BoxError) -> bool {
///     err.downcast_ref::<ConnectionClosed>()
///         .is_some_and(|closed| closed.source().is_none())
/// }
/// # let _ = closed_cleanly;
/// ```
#[derive(Debug)]
pub struct ConnectionClosed {
    source: Option<hyper::Error>,
    why: Why,
}

impl ConnectionClosed {
    pub(crate) fn new(source: Option<hyper::Error>) -> Self {
        let why = Why::of(source.as_ref());
        Self { source, why }
    }

    /// `true` if a keep-alive ping went unanswered: the peer went silent,
    /// or the path to it did.
    pub fn is_keep_alive_timeout(&self) -> bool {
        self.why == Why::KeepAliveTimedOut
    }

    /// `true` if the server sent `GOAWAY ENHANCE_YOUR_CALM` with the debug
    /// data `too_many_pings`, as a gRPC server does to a client that pings
    /// more often than it allows.
    pub fn is_too_many_pings(&self) -> bool {
        self.why == Why::TooManyPings
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why.message())
    }
}

impl StdError for ConnectionClosed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|err| err as _)
    }
}
