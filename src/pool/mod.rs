//! Many connections to one target: [`Pool`] spreads requests over the
//! connections that are up, and one [`ConnectionWatch`] shows them all.
//!
//! [`Pool`] and [`PoolLayer`] are also at the crate root;
//! [`ResponseFuture`] is the pool's response future.

mod future;
mod layer;
mod pick;

pub use self::{future::ResponseFuture, layer::PoolLayer};

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{sleep, Sleep};
use tower::{BoxError, Service};

use self::pick::{Choice, Picker};
use crate::{
    backoff::Spread,
    error::{NotReady, Unavailable},
    watch::Aggregate,
    ConnectionWatch, Phase, Reconnect, ReconnectLayer, Shared,
};

/// A clone-able handle on `n` connections to one target, each a
/// [`Shared`] connection of its own that reconnects on its own: the form
/// for HTTP/1, where one connection serves one request at a time, and for
/// loads one HTTP/2 connection cannot carry.
///
/// Made with [`ReconnectLayer::pool`]. The connections dial as soon as the
/// pool is built, and every clone reaches the same ones.
///
/// # Readiness
///
/// `poll_ready` chooses a connection and reserves a slot in its queue, as
/// [`Shared`] does: it is `Pending` while that queue is full, and, in
/// wait-for-ready mode, while no connection is up. `Err` only once every
/// connection is closed.
///
/// | the connections | the request goes to |
/// |---|---|
/// | one or more `Connected` | the one with the fewest requests in flight (queued or sent, until their response futures resolve); among equals, the next in turn |
/// | none `Connected`, fail fast (default) | the one expected up first: one that is connecting, else an idle one (which the request wakes), else the one whose retry is due first |
/// | none `Connected`, [`wait_for_ready(true)`](ReconnectLayer::wait_for_ready) | none yet: `poll_ready` is `Pending` until any connection is up; with a [`wait_timeout`](ReconnectLayer::wait_timeout), at most that, then `Ready(Ok)` and `call` fails with [`Unavailable`] (its [`waited()`](crate::error::Unavailable::waited) set) without sending (once a connection is up, the request's time in its queue is bounded by the same timeout, as with [`Shared`]). Only when the connection expected first is idle after an idle close does the request go to it, to wake it (a connection not yet dialled is waited for) |
/// | all closed | none: `poll_ready` returns [`Closed`](crate::error::Closed) |
///
/// The request then meets that connection's rules, as with a
/// [`Shared`] handle: it is sent at once if connected; waits for an
/// attempt that is running (at most the connect timeout, and the
/// `wait_timeout`), as after a healthy connection was lost; or fails fast
/// with `Unavailable` in an outage. So in fail-fast mode a request fails
/// only when no connection is up, and in wait-for-ready mode it waits for
/// whichever connection is up first. A request already in a connection's
/// queue stays there: if that connection goes down before the request is
/// sent, the request meets its rules, even when others are up; so does a
/// `poll_ready` waiting for room in the chosen connection's full queue (a
/// full queue means every connection up is as loaded). Calling
/// `call` without a `Ready(Ok)` from `poll_ready` first returns
/// [`NotReady`] instead of panicking.
///
/// # Reconnecting apart
///
/// Each connection reconnects by the layer's settings, as a single one
/// does, with one change that keeps them from redialling all at once: the
/// first redial after a healthy connection was lost (due at once for a
/// single connection), and the first retry of an outage (due one backoff
/// delay after the failed attempt started), come later by an offset that
/// is each connection's own. Connection `i` of `n` gets one within
/// `[i·w/n, (i+1)·w/n)`, where `w` is half the backoff's first delay (1 s
/// by default): the slots do not overlap, so a server restart that cuts
/// all `n` connections at once meets them one at a time, and the point in
/// each slot is random, so two pools do not line up either. Later retries
/// keep the gap, since each delay counts from the start of its attempt.
///
/// Each connection's log events carry the layer's
/// [`name`](ReconnectLayer::name) followed by its number, from 0:
/// `orders/0`, `orders/1`, and so on.
///
/// # The watch
///
/// [`watch`](Self::watch) shows the connections as one, by gRPC's rule for
/// a channel over many subchannels: `Connected` if any connection is, else
/// `Connecting` if any is, else `Idle` if any is, else `Disconnected`, and
/// `Closed` once all are. While disconnected,
/// [`last_error`](crate::ConnectionState::last_error) is the newest cause
/// a connection shows and [`retry_at`](crate::ConnectionState::retry_at)
/// the earliest retry (`None` while one of them is attempting);
/// [`attempt`](crate::ConnectionState::attempt) is the highest, and the
/// counters are summed. [`connections`](Self::connections) lists each
/// connection's own watch.
///
/// # Why not `tower::balance`
///
/// tower's `p2c` balancer draws two endpoints at random and takes the one
/// with fewer pending requests (`tower::load::PendingRequests`): built for
/// hundreds of endpoints whose loads it can only sample. A pool holds a
/// handful of connections and knows each one's count exactly, so it looks
/// at all of them and takes the least loaded, which costs about what two
/// draws do and never sends a request to a busy HTTP/1 connection while
/// another is free (two draws can both land on busy ones). And a
/// [`Shared`] handle is ready whenever its queue has room, so `Balance`
/// could not tell a dead connection from a live one; here the choice reads
/// each connection's phase from its watch. Nor is `Balance` `Clone`:
/// sharing it would take a `Buffer` in front, a second queue and task on
/// every request. Here the choice is made in the caller's `poll_ready` and
/// the request goes straight into the chosen connection's queue, with no
/// allocation. To balance over *different* endpoints, `tower::balance` is
/// the right tool, with a pool per endpoint from
/// [`PoolLayer::discover`] (or plain [`Reconnect`]s in wait-for-ready
/// mode for a fixed set): there each endpoint is one service, and a pool
/// that waits for ready pends while none of its connections is up.
///
/// # Closing
///
/// [`close`](Self::close) closes every connection once, as
/// [`Shared::close`] does for one; dropping the last clone closes each
/// once it has sent what was queued, as dropping a [`Shared`]'s last handle
/// does. The watch shows
/// `Closed` once all have closed, and goes there straight from what it
/// showed before (not through `Connecting` when the connection that was up
/// closes before one still dialling).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use std::convert::Infallible;
/// use redial::{Phase, ReconnectLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let connector = service_fn(|_: ()| async {
///     Ok::<_, Infallible>(service_fn(|n: u32| async move { Ok::<_, Infallible>(n * 10) }))
/// });
/// let pool = ReconnectLayer::new(()).pool(4).layer(connector);
/// let watch = pool.watch();
/// watch.connected().await?; // one connection is up
///
/// assert_eq!(pool.clone().oneshot(1).await?, 10);
/// assert_eq!(pool.connections().len(), 4);
///
/// pool.close();
/// assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
/// # Ok(())
/// # }
/// ```
pub struct Pool<Req, F> {
    /// This clone's handles, one per connection: each holds its own
    /// reservation in its connection's queue.
    handles: Box<[Shared<Req, F>]>,
    picker: Picker,
    /// The connection `poll_ready` reserved a slot on (or waits on).
    chosen: Option<usize>,
    /// The chosen connection's load, taken with the slot: a request counts
    /// from its reservation, so that clones choosing at the same moment on
    /// other threads see it and choose another connection.
    share: Option<Arc<()>>,
    /// In wait-for-ready mode: the pool's own wait for any connection.
    wait: Option<WaitForAny>,
    /// The last `Ready(Ok)` ended a wait that ran out: `call` fails.
    waited: bool,
    /// The pool's watch, shared by every clone: the last clone dropped
    /// closes it as a whole.
    aggregate: Arc<Closer>,
}

/// The pool's watch, closed as a whole when the last clone goes (each
/// connection's task closes on its own, as its last handle goes).
struct Closer(Arc<Aggregate>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A `poll_ready` waiting, in wait-for-ready mode, until any connection is
/// up: woken by the pool's watch, and bounded by the wait timeout.
struct WaitForAny {
    timeout: Option<Duration>,
    /// The wait's deadline, made at its first `Pending` (boxed: most
    /// waits end without it).
    sleep: Option<Pin<Box<Sleep>>>,
}

// ===== impl Pool =====

impl<Req, F> Pool<Req, F>
where
    Req: Send + 'static,
    F: Send + 'static,
{
    /// Builds `size` connections with `layer`'s settings, joined to one
    /// watch and spread apart, and spawns each with a queue of `bound`.
    #[track_caller]
    pub(crate) fn start<M, T>(
        layer: &ReconnectLayer<T>,
        make: &M,
        size: usize,
        bound: usize,
    ) -> Self
    where
        M: Service<T> + Clone,
        T: Clone,
        Reconnect<M, T>: Service<Req, Error = BoxError, Future = F> + Send + 'static,
    {
        let aggregate = Aggregate::new();
        // All join before any is spawned, so the pool's state is never
        // worked out from some of them.
        let services: Vec<_> = (0..size)
            .map(|index| {
                let mut service = match &layer.config().name {
                    // Logs tell the connections apart.
                    Some(name) => layer
                        .clone()
                        .name(format!("{name}/{index}"))
                        .build(make.clone()),
                    None => layer.build(make.clone()),
                };
                service.join_pool(&aggregate, Spread::new(index, size));
                service
            })
            .collect();
        let watches = services.iter().map(Reconnect::watch).collect();
        let handles = services
            .into_iter()
            .map(|service| service.spawn(bound))
            .collect();
        let config = layer.config();
        Self {
            handles,
            picker: Picker::new(watches),
            chosen: None,
            share: None,
            wait: config.wait_for_ready.then_some(WaitForAny {
                timeout: config.wait_timeout,
                sleep: None,
            }),
            waited: false,
            aggregate: Arc::new(Closer(aggregate)),
        }
    }

    /// Gives back the slot reserved on the connection chosen before, if
    /// `next` is another.
    fn choose(&mut self, next: usize) {
        match self.chosen.replace(next) {
            Some(before) if before == next && self.share.is_some() => {}
            before => {
                if let Some(before) = before.filter(|&before| before != next) {
                    self.handles[before].release();
                }
                self.share = Some(self.picker.load(next));
            }
        }
    }

    /// Waits for any connection to come up (wait-for-ready mode, none up):
    /// `Pending`, woken by the pool's watch; once the wait timeout has run
    /// since the wait's first `Pending`, `Ready(Ok)` for a `call` that
    /// fails with `Unavailable`.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(before) = self.chosen.take() {
            self.handles[before].release();
        }
        self.share = None;
        self.aggregate.0.wake_when_up(cx.waker());
        if self.picker.any_up(&self.handles) {
            // Came up before the waker was in place: look again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(WaitForAny {
            timeout: Some(timeout),
            sleep: deadline,
        }) = &mut self.wait
        else {
            return Poll::Pending;
        };
        let deadline = deadline.get_or_insert_with(|| Box::pin(sleep(*timeout)));
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.end_wait();
        self.waited = true;
        Poll::Ready(Ok(()))
    }

    /// Makes `poll_ready` wait, without bound, until a connection is up,
    /// whatever mode the connections are in: under a balancer, a pool must
    /// pend while none is up (so that it is skipped), and one that turned
    /// ready when a wait ran out would draw requests away from the
    /// endpoints that are up.
    pub(crate) fn wait_for_any_up(mut self) -> Self {
        self.wait = Some(WaitForAny {
            timeout: None,
            sleep: None,
        });
        self
    }

    /// The writer of this pool's watch.
    pub(crate) fn aggregate(&self) -> &Arc<Aggregate> {
        &self.aggregate.0
    }

    fn end_wait(&mut self) {
        if let Some(wait) = &mut self.wait {
            wait.sleep = None;
        }
    }
}

impl<Req, F> Pool<Req, F> {
    /// A watch on the connections as one (see [the watch](Self#the-watch)).
    pub fn watch(&self) -> ConnectionWatch {
        self.aggregate.0.watch()
    }

    /// Each connection's own watch, in the order they were made.
    pub fn connections(&self) -> Vec<ConnectionWatch> {
        self.picker.watches().to_vec()
    }

    /// Closes every connection, for every clone, as [`Shared::close`] does
    /// for one: from now on `poll_ready` and queued requests fail with
    /// [`Closed`](crate::error::Closed), and the watch shows `Closed` once
    /// every connection's task has dropped its connection (await
    /// [`ConnectionWatch::disconnected`] to know it is done). Responses
    /// already on their way are not cancelled.
    pub fn close(&self) {
        self.aggregate.0.close();
        for handle in self.handles.iter() {
            handle.close();
        }
    }

    /// Starts every connection's backoff schedule afresh and makes each
    /// waiting retry due now, for every clone, as
    /// [`Shared::reset_backoff`] does for one: use it when you learn the
    /// peer is back.
    pub fn reset_backoff(&self) {
        for handle in self.handles.iter() {
            handle.reset_backoff();
        }
    }

    /// Whether every connection is closed: by [`close`](Self::close), by
    /// giving up, or because its task ended.
    pub fn is_closed(&self) -> bool {
        self.handles.iter().all(Shared::is_closed)
    }
}

impl<Req, F, T, E> Service<Req> for Pool<Req, F>
where
    Req: Send + 'static,
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<Req, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.waited = false;
        // A slot reserved before is kept while its connection is still the
        // kind the picker would choose.
        if let Some(chosen) = self.chosen {
            if self.handles[chosen].is_reserved() && self.picker.still_fits(chosen, &self.handles) {
                return Poll::Ready(Ok(()));
            }
        }
        // A handle that fails here is closed, and the picker skips it from
        // now on: each round rules one out.
        for _ in 0..self.handles.len() {
            let next = match self.picker.pick(&self.handles) {
                None => break,
                // An idle connection needs the request to wake it.
                Some(Choice::Down(_, phase)) if self.wait.is_some() && phase != Phase::Idle => {
                    return self.poll_wait(cx);
                }
                Some(Choice::Up(next) | Choice::Down(next, _)) => next,
            };
            self.choose(next);
            match self.handles[next].poll_ready(cx) {
                Poll::Ready(Err(_)) => {
                    self.chosen = None;
                    self.share = None;
                }
                Poll::Ready(Ok(())) => {
                    self.end_wait();
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Err(self.handles[0].closed_error()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if std::mem::take(&mut self.waited) {
            let timeout = self.wait.as_ref().and_then(|wait| wait.timeout);
            let state = self.aggregate.0.watch().state();
            let error = Unavailable::new(state.last_error, state.attempt, state.retry_at);
            let error = match timeout {
                Some(timeout) => error.after_waiting(timeout),
                None => error,
            };
            return ResponseFuture::failed(Box::new(error));
        }
        let Some(chosen) = self.chosen.take() else {
            return ResponseFuture::failed(Box::new(NotReady::new()));
        };
        let share = self.share.take();
        let handle = &mut self.handles[chosen];
        if !handle.is_reserved() {
            handle.release();
            return ResponseFuture::failed(Box::new(NotReady::new()));
        }
        let load = share.unwrap_or_else(|| self.picker.load(chosen));
        ResponseFuture::new(handle.call(request), load)
    }
}

/// The requests in flight on the pool (queued or sent, until their
/// response futures resolve), as tower's `PendingRequests` counts them: what
/// `tower::balance` weighs when it balances over pools, one per endpoint
/// (see [`PoolLayer::discover`]).
impl<Req, F> tower::load::Load for Pool<Req, F> {
    type Metric = usize;

    fn load(&self) -> usize {
        self.picker.total_in_flight()
    }
}

impl<Req, F> Clone for Pool<Req, F> {
    fn clone(&self) -> Self {
        Self {
            handles: self.handles.clone(),
            picker: self.picker.clone(),
            chosen: None,
            share: None,
            wait: self.wait.as_ref().map(|wait| WaitForAny {
                timeout: wait.timeout,
                sleep: None,
            }),
            waited: false,
            aggregate: self.aggregate.clone(),
        }
    }
}

impl<Req, F> fmt::Debug for Pool<Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("state", &self.aggregate.0.watch().state())
            .field("connections", &self.handles.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}
