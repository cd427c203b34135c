//! [`BoxedExecutor`]: hyper's HTTP/2 tasks on tokio, each boxed first.

use std::future::Future;

/// The executor redial's HTTP/2 connections run hyper's tasks on: tokio's,
/// like hyper-util's `TokioExecutor`, but each future is boxed before it
/// is spawned.
///
/// hyper's HTTP/2 client spawns tasks for every request (to send the body
/// and to drive the response), each as large as the connection's own. Spawned
/// by value, such a future is copied several times on its way into tokio's
/// task; boxed first, it is copied once, as tonic's own executor does.
/// BENCHMARKS.md has what that saves per gRPC call.
///
/// [`Http2Connector::hyper_builder`](super::Http2Connector::hyper_builder)
/// takes hyper's settings built on it.
///
/// # Examples
///
/// ```
/// use hyper::client::conn::http2;
/// use redial::http::BoxedExecutor;
///
/// let mut settings = http2::Builder::new(BoxedExecutor::new());
/// settings.initial_stream_window_size(1 << 20);
/// # let _ = settings;
/// ```
///
/// # Panics
///
/// Spawning panics outside a tokio runtime, as `tokio::spawn` does; hyper
/// spawns only while a connection is driven, which is inside one.
#[derive(Clone, Copy, Debug, Default)]
pub struct BoxedExecutor {
    _private: (),
}

impl BoxedExecutor {
    /// The executor.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl<F> hyper::rt::Executor<F> for BoxedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}
