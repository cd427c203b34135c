use std::{
    fmt,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
};

use tokio::sync::mpsc;
use tower::{BoxError, Service};

use super::{
    message::{Message, Resender, Tx},
    signal::{Signal, CLOSE, DRAIN, MARK_DISCONNECTED, RESEND, RESET_BACKOFF},
};
use crate::{error::Closed, Phase, Reconnect};

/// The response future of a `Reconnect<M, T>`.
type Fut<M, T, Req> = <Reconnect<M, T> as Service<Req>>::Future;

/// A queued request to a `Reconnect<M, T>`.
type Msg<M, T, Req> = Message<Req, Fut<M, T, Req>>;

/// What the handles and the task share: whether the connection is closed
/// and why, and the handles' requests to the task.
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
/// each queued request. Shaped like tower's buffer worker.
pub(crate) struct Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req>,
{
    /// `None` once closed: the connection went with it.
    service: Option<Reconnect<M, T>>,
    inbox: Inbox<Req, Fut<M, T, Req>>,
    handle: Arc<Handle>,
}

/// The queues' receiving ends.
struct Inbox<Req, F> {
    rx: mpsc::Receiver<Message<Req, F>>,
    /// Requests a connection handed back, to send again: read first, and
    /// only after the `RESEND` signal says one is there.
    resend: Arc<Resender<Req, F>>,
    resend_pending: bool,
    /// A request received before the service was ready (a lazy task's
    /// first).
    held: Option<Message<Req, F>>,
    /// Whether the service is driven yet: from the start when eager, from
    /// the first request when lazy.
    started: bool,
    /// The caller of the request the connection is being called with.
    calling: Option<Tx<F>>,
    /// Every handle is gone: the task sends what is queued, then closes.
    /// The attempt under way (or last made) when they went.
    draining: Option<u32>,
}

impl<M, T, Req> Worker<M, T, Req>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req, Error = BoxError>,
{
    pub(crate) fn new(
        service: Reconnect<M, T>,
        rx: mpsc::Receiver<Msg<M, T, Req>>,
        resend: Arc<Resender<Req, Fut<M, T, Req>>>,
        eager: bool,
        handle: Arc<Handle>,
    ) -> Self {
        Self {
            service: Some(service),
            inbox: Inbox {
                rx,
                resend,
                resend_pending: false,
                held: None,
                started: eager,
                draining: None,
                calling: None,
            },
            handle,
        }
    }

    /// Runs until closed and drained. An `async fn` holds the worker in its
    /// own pinned state, so neither the service nor the requests need be
    /// `Unpin`.
    pub(crate) async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_step(cx)).await
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(service) = &mut self.service {
            let error = ready!(serve(service, &mut self.inbox, &self.handle, cx));
            self.failed(error);
        }
        self.poll_drain(cx)
    }

    /// Closes for good: refuses new requests, fails the queued ones with
    /// `Closed`, and drops the connection (the watch publishes `Closed`).
    fn failed(&mut self, error: Closed) {
        self.handle.set_closed(error);
        self.service = None;
        self.inbox.rx.close();
        self.inbox.resend.close();
        if let Some(msg) = self.inbox.held.take() {
            let _ = msg.tx.send(Err(self.handle.closed_error()));
        }
    }

    /// After closing: fails every request still in the queue, and every one
    /// sent into a slot a handle reserved before the close, until the queue
    /// is empty and no slot is reserved; then `Ready`, and the task ends.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Closed above, so nothing more can arrive there.
        while let Some(msg) = self.inbox.resend.try_recv() {
            let _ = msg.tx.send(Err(self.handle.closed_error()));
        }
        while let Some(msg) = ready!(self.inbox.rx.poll_recv(cx)) {
            let _ = msg.tx.send(Err(self.handle.closed_error()));
        }
        Poll::Ready(())
    }
}

/// Whether `signals` carries `bit`.
#[inline]
fn has(signals: u8, bit: u8) -> bool {
    signals & bit != 0
}

/// Serves requests until the task must close, and says why.
fn serve<M, T, Req>(
    service: &mut Reconnect<M, T>,
    inbox: &mut Inbox<Req, Fut<M, T, Req>>,
    handle: &Handle,
    cx: &mut Context<'_>,
) -> Poll<Closed>
where
    M: Service<T>,
    Reconnect<M, T>: Service<Req, Error = BoxError>,
{
    // Once per wake-up, not per request: a signal sent later wakes the task
    // again (and `close()` has already marked every handle closed).
    let signals = handle.signal.take(cx);
    if has(signals, CLOSE) {
        return Poll::Ready(Closed::new(None));
    }
    // In the order a caller means them when both arrive in one wake-up:
    // "this connection is broken", then "the peer is back, retry now".
    if has(signals, MARK_DISCONNECTED) {
        service.mark_disconnected();
    }
    if has(signals, RESET_BACKOFF) {
        service.reset_backoff();
    }
    if has(signals, RESEND) {
        inbox.resend_pending = true;
    }
    if has(signals, DRAIN) && inbox.draining.is_none() {
        inbox.draining = Some(service.watch().state().attempt());
    }
    loop {
        if inbox.draining.is_some() && inbox.drained(cx) {
            return Poll::Ready(Closed::new(None));
        }
        if service.is_dormant() {
            // Closed for idleness: as a lazy task, wait for a request
            // before dialling again.
            inbox.started = false;
        }
        if !inbox.started {
            // Lazy: wait for the first request before connecting. A request
            // a connection handed back is one too: its `RESEND` signal wakes
            // this task, which must not wait for some other request.
            if inbox.held.is_none() && !inbox.has_resend() {
                match ready!(inbox.rx.poll_recv(cx)) {
                    Some(msg) => inbox.held = Some(msg),
                    None => return Poll::Ready(Closed::new(None)),
                }
            }
            inbox.started = true;
            service.resume();
        }
        // Polled whether or not a request waits: this is what connects
        // eagerly, runs the retry and idle timers, and notices an idle
        // connection closing (the connection's `poll_ready` holds our waker).
        match service.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Closed::new(Some(Arc::from(error)))),
            Poll::Pending if service.is_dormant() => continue,
            Poll::Pending
                if inbox
                    .draining
                    .is_some_and(|from| failed_since(service, from)) =>
            {
                // Waiting for ready with every handle gone: nobody is left
                // to close the task, so the first attempt that fails after
                // they went does.
                return Poll::Ready(Closed::new(None));
            }
            Poll::Pending => return Poll::Pending,
        }
        let Some((msg, again)) = ready!(inbox.poll_next_msg(cx)) else {
            // Every handle is gone.
            return Poll::Ready(Closed::new(None));
        };
        if msg.tx.is_closed() || !msg.claim.as_ref().is_none_or(|claim| claim.take()) {
            // The caller gave up, or its wait ran out: the request is never
            // sent.
            continue;
        }
        let _span = msg.span.enter();
        if again {
            service.call_again();
        }
        // Kept in the worker while the connection has the request: if
        // `call` panics, this caller's answer is dropped with the worker,
        // after `Drop` has set the cause its response future reports. A
        // local would be dropped while unwinding, before that: a caller
        // polled on another thread in between would get no cause (a
        // single-threaded test cannot see the difference).
        inbox.calling = Some(msg.tx);
        let response = service.call(msg.request);
        if let Some(tx) = inbox.calling.take() {
            let _ = tx.send(Ok(response));
        }
    }
}

/// Whether an attempt made after attempt `from` has failed.
fn failed_since<M, T>(service: &Reconnect<M, T>, from: u32) -> bool
where
    M: Service<T>,
{
    let state = service.watch().state();
    // While an attempt runs the phase stays `Disconnected`, with no retry
    // time: one is set when it has failed.
    state.phase() == Phase::Disconnected && state.attempt() > from && state.retry_at().is_some()
}

impl<Req, F> Inbox<Req, F> {
    /// With every handle gone: whether nothing is left to send. Takes the
    /// next queued request to hold, skipping those whose callers gave up,
    /// so that a task waiting for a connection does not wait for nobody.
    fn drained(&mut self, cx: &mut Context<'_>) -> bool {
        if self.held.as_ref().is_some_and(|msg| msg.tx.is_closed()) {
            self.held = None;
        }
        while self.held.is_none() && !self.has_resend() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(None) => return true,
                Poll::Ready(Some(msg)) if msg.tx.is_closed() => {}
                Poll::Ready(Some(msg)) => self.held = Some(msg),
                // The last sender is on its way out: its drop wakes us.
                Poll::Pending => break,
            }
        }
        false
    }

    /// Whether a request a connection handed back waits in the second
    /// queue (the `RESEND` signal came and it is not yet read).
    fn has_resend(&mut self) -> bool {
        if self.resend_pending && self.resend.is_empty() {
            self.resend_pending = false;
        }
        self.resend_pending
    }

    /// The next request, and whether it is one to send again: the one held
    /// back, one a connection handed back, or a new one from the queue.
    fn poll_next_msg(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Message<Req, F>, bool)>> {
        if let Some(msg) = self.held.take() {
            return Poll::Ready(Some((msg, false)));
        }
        // No waker here: a request put there also sends `RESEND`.
        if self.resend_pending {
            match self.resend.try_recv() {
                Some(msg) => return Poll::Ready(Some((msg, true))),
                None => self.resend_pending = false,
            }
        }
        self.rx.poll_recv(cx).map(|msg| msg.map(|msg| (msg, false)))
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
        // The queue of requests to send again outlives the task (response
        // futures hold it): refuse what comes later, and answer what waits,
        // so that no caller waits for a task that is gone.
        self.inbox.resend.close();
        while let Some(msg) = self.inbox.resend.try_recv() {
            let _ = msg.tx.send(Err(self.handle.closed_error()));
        }
    }
}

/// The cause of `Closed` when the make service or the connection panicked
/// inside the task.
#[derive(Debug)]
struct Panicked;

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection task panicked")
    }
}

impl std::error::Error for Panicked {}
