use std::{
    fmt,
    sync::{Arc, OnceLock},
    task::{Context, Poll, Waker},
};

use tokio::sync::mpsc;
use tower::{BoxError, Service};

use super::{
    message::Message,
    signal::{Signal, CLOSE, RESET_BACKOFF},
};
use crate::{error::Closed, Reconnect};

/// A queued request to a `Reconnect<M, T>`.
type Msg<M, T, Req> = Message<Req, <Reconnect<M, T> as Service<Req>>::Future>;

/// What the handles and the worker share: whether the connection is closed
/// and why, and the handles' requests to the worker.
#[derive(Debug, Default)]
pub(crate) struct Handle {
    closed: OnceLock<Closed>,
    pub(crate) signal: Signal,
}

impl Handle {
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Records why the connection closed; the first reason wins.
    pub(crate) fn set_closed(&self, error: Closed) {
        let _ = self.closed.set(error);
    }

    /// The error for a request that found the connection closed.
    pub(crate) fn closed_error(&self) -> BoxError {
        let error = self.closed.get().cloned();
        Box::new(error.unwrap_or_else(|| Closed::new(None)))
    }
}

/// The task that owns the [`Reconnect`]: it drives connecting and
/// reconnecting whether or not requests arrive, and calls the service for
/// each queued request.
pub(crate) struct Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req>,
{
    /// `None` once closed: the connection is gone with it.
    service: Option<Reconnect<M, T>>,
    /// A request received before the service was ready.
    current: Option<Msg<M, T, Req>>,
    rx: mpsc::Receiver<Msg<M, T, Req>>,
    /// The waker registered with the handles' [`Signal`].
    registered: Option<Waker>,
    /// Whether the service is driven before the first request.
    started: bool,
    handle: Arc<Handle>,
}

impl<M, T, Req> Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req, Error = BoxError>,
{
    pub(crate) fn new(
        service: Reconnect<M, T>,
        rx: mpsc::Receiver<Msg<M, T, Req>>,
        eager: bool,
        handle: Arc<Handle>,
    ) -> Self {
        Self {
            service: Some(service),
            current: None,
            rx,
            registered: None,
            started: eager,
            handle,
        }
    }

    /// Closes for good: refuses new requests, fails the queued ones with
    /// `Closed`, and drops the connection (the watch publishes `Closed`).
    fn close(&mut self, error: Closed) {
        self.handle.set_closed(error);
        self.rx.close();
        if let Some(msg) = self.current.take() {
            let _ = msg.tx.send(Err(self.handle.closed_error()));
        }
        while let Ok(msg) = self.rx.try_recv() {
            let _ = msg.tx.send(Err(self.handle.closed_error()));
        }
        self.service = None;
    }

    /// After `close`: fails every request still sent into the queue (a
    /// handle may have reserved a slot before the close and send after it)
    /// until the queue is empty and no slot is reserved; then `Ready`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(msg)) => {
                    let _ = msg.tx.send(Err(self.handle.closed_error()));
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next request: the one held back, or a new one from the queue.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Msg<M, T, Req>>> {
        if let Some(msg) = self.current.take() {
            return Poll::Ready(Some(msg));
        }
        self.rx.poll_recv(cx)
    }
}

impl<M, T, Req> Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req, Error = BoxError>,
{
    /// Runs until closed. An `async fn` holds the worker in its own pinned
    /// state, so neither the service nor the requests need be `Unpin`.
    pub(crate) async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_step(cx)).await
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let this = self;
        if this.service.is_none() {
            return this.poll_drain(cx);
        }
        // Once per wake-up, not per request: a signal sent later wakes the
        // task again (and `close()` has already marked every handle closed).
        let signals = this.handle.signal.take(&mut this.registered, cx);
        if signals & CLOSE != 0 {
            this.close(Closed::new(None));
            return this.poll_drain(cx);
        }
        if signals & RESET_BACKOFF != 0 {
            if let Some(service) = &mut this.service {
                service.reset_backoff();
            }
        }
        loop {
            if !this.started {
                // Lazy: wait for the first request before connecting.
                match this.rx.poll_recv(cx) {
                    Poll::Ready(Some(msg)) => this.current = Some(msg),
                    Poll::Ready(None) => {
                        this.close(Closed::new(None));
                        return this.poll_drain(cx);
                    }
                    Poll::Pending => return Poll::Pending,
                }
                this.started = true;
            }
            let Some(service) = &mut this.service else {
                return Poll::Ready(());
            };
            // Polled whether or not a request waits: this is what connects
            // eagerly, runs the retry timer, and notices an idle connection
            // closing (the connection's `poll_ready` holds our waker).
            match service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    this.close(Closed::new(Some(Arc::from(error))));
                    return this.poll_drain(cx);
                }
                Poll::Pending => return Poll::Pending,
            }
            let msg = match this.poll_message(cx) {
                Poll::Ready(Some(msg)) => msg,
                Poll::Ready(None) => {
                    this.close(Closed::new(None));
                    return this.poll_drain(cx);
                }
                Poll::Pending => return Poll::Pending,
            };
            if msg.tx.is_closed() {
                // The caller gave up: the request is never sent.
                continue;
            }
            let Some(service) = &mut this.service else {
                return Poll::Ready(());
            };
            let _span = msg.span.enter();
            let fut = service.call(msg.request);
            let _ = msg.tx.send(Ok(fut));
        }
    }
}

impl<M, T, Req> Drop for Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req>,
{
    fn drop(&mut self) {
        self.handle.signal.unregister();
        if std::thread::panicking() {
            self.handle
                .set_closed(Closed::new(Some(Arc::new(Panicked))));
        } else {
            self.handle.set_closed(Closed::new(None));
        }
    }
}

impl<M, T, Req> fmt::Debug for Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("service", &self.service)
            .field("started", &self.started)
            .finish()
    }
}

/// The cause of `Closed` when the make service or the connection panicked
/// inside the worker.
#[derive(Debug)]
struct Panicked;

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection task panicked")
    }
}

impl std::error::Error for Panicked {}
