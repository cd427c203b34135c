use std::{
    fmt,
    task::{Context, Poll},
};

use tower::{BoxError, Service};

use crate::{config::Config, future::ResponseFuture, state::Machine, watch::ConnectionWatch};

/// A [`Service`] that connects through a `MakeService`, bounds each attempt
/// with a connect timeout, reconnects with backoff when the connection is
/// lost, and publishes its state on a [`ConnectionWatch`].
///
/// It is lazy and poll-driven, like `tower::reconnect::Reconnect`: nothing
/// happens until `poll_ready` is called, and a retry starts on the first
/// `poll_ready` at or after its time. In fail-fast mode a running attempt
/// also moves forward only when `poll_ready` is called (each call fails fast
/// meanwhile), so with sparse traffic a multi-step handshake advances one
/// request at a time; wait-for-ready mode keeps the owner polling until the
/// attempt ends. It has a single owner; put it under
/// [`tower::buffer::Buffer`](https://docs.rs/tower/0.5/tower/buffer/struct.Buffer.html)
/// to share it.
///
/// # Readiness
///
/// | phase | `poll_ready` |
/// |---|---|
/// | `Idle`, `Connecting` | `Pending`: the request waits for the attempt, at most the connect timeout (and at most the wait timeout) |
/// | `Connected` | the connection's `poll_ready`; its `Err` means the connection is gone, and the same call goes on to reconnect |
/// | `Disconnected` | fail fast (default): `Ready(Ok)`, and `call` returns [`Unavailable`](crate::error::Unavailable) at once without dialling; with `wait_for_ready(true)`: `Pending` until connected, or until the wait timeout |
/// | `Closed` | `Err(`[`GaveUp`](crate::error::GaveUp)`)`, final |
///
/// With a [`wait_timeout`](crate::ReconnectLayer::wait_timeout), a wait
/// runs from the first `Pending` while not connected; once it has lasted
/// the timeout, `poll_ready` answers as fail fast does: `Ready(Ok)`, and
/// `call` returns `Unavailable` (with
/// [`waited()`](crate::error::Unavailable::waited) set) without sending.
/// The next `poll_ready` starts a new wait.
///
/// With an [`idle_timeout`](crate::ReconnectLayer::idle_timeout), the first
/// `poll_ready` at or after the idle deadline closes the connection (an
/// idle close, counted in
/// [`idle_closes`](crate::ConnectionState::idle_closes)) and, since a
/// request is asking, starts a new attempt at once: `Pending`, in phase
/// `Connecting`, as for the first request. A `Reconnect` acts only when
/// polled: its timer wakes the task that drives it at the deadline.
/// To have the connection closed on time and stay closed until a request
/// comes, use the [`Shared`](crate::Shared) handle.
///
/// The error `call` returns always describes the state at the moment of the
/// call, never an earlier attempt. Reconnecting is not retrying: a plain
/// `Reconnect` never sends a request twice. When the connection hands one
/// back unsent ([`Resend`](crate::error::Resend)), the caller gets that
/// error with the request in it; the shared handle sends it again itself.
///
/// Calling `call` without a `Ready(Ok)` from `poll_ready` first returns a
/// [`NotReady`](crate::error::NotReady) error instead of panicking.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use std::convert::Infallible;
/// use redial::Reconnect;
/// use tower::{service_fn, ServiceExt};
///
/// // A make service: target -> connection (here, a service that echoes).
/// let make = service_fn(|addr: &'static str| async move {
///     Ok::<_, Infallible>(service_fn(move |req: String| async move {
///         Ok::<_, Infallible>(format!("{addr} says {req}"))
///     }))
/// });
/// let svc = Reconnect::new(make, "127.0.0.1:4000");
/// assert_eq!(svc.oneshot("hi".into()).await?, "127.0.0.1:4000 says hi");
/// # Ok(())
/// # }
/// ```
pub struct Reconnect<M, T>
where
    M: Service<T>,
{
    make: M,
    target: T,
    machine: Machine<M::Future, M::Response>,
}

// ===== impl Reconnect =====

impl<M, T> Reconnect<M, T>
where
    M: Service<T>,
{
    /// A service that connects to `target` through `make`, with the default
    /// settings of [`ReconnectLayer::new`](crate::ReconnectLayer::new). Use
    /// the layer to change them.
    pub fn new(make: M, target: T) -> Self {
        Self::with_config(make, target, Config::default())
    }

    #[track_caller]
    pub(crate) fn with_config(make: M, target: T, config: Config) -> Self {
        if let Err(err) = config.validate() {
            panic!("invalid redial configuration: {err}");
        }
        Self {
            make,
            target,
            machine: Machine::new(config),
        }
    }

    /// A watch on this service's connection state; it outlives the service.
    pub fn watch(&self) -> ConnectionWatch {
        self.machine.watch()
    }

    /// Starts the backoff schedule afresh and, if a retry is waiting, makes
    /// it due now: the next `poll_ready` dials. Use it when you learn the
    /// peer is back (gRPC's `ResetConnectBackoff`).
    ///
    /// The attempt count goes on: [`max_attempts`] counts attempts since the
    /// last healthy connection, whatever the schedule.
    ///
    /// [`max_attempts`]: crate::ReconnectLayer::max_attempts
    pub fn reset_backoff(&mut self) {
        self.machine.reset_backoff();
    }

    /// Drops the current connection, as if its `poll_ready` had failed (the
    /// `_set_connected(0)` of Perl's `Message::Passing::Role::ConnectionManager`):
    /// use it when you learn the connection is broken in a way redial cannot
    /// see. The watch shows it, and the next `poll_ready` reconnects. Does
    /// nothing when not connected.
    pub fn mark_disconnected(&mut self) {
        self.machine.lost(None);
    }

    /// Makes the next `call` one that sends a request a connection handed
    /// back: counted on the watch if it reaches the connection.
    pub(crate) fn call_again(&mut self) {
        self.machine.call_again();
    }

    /// The make service.
    pub fn get_ref(&self) -> &M {
        &self.make
    }

    /// The make service, mutably.
    pub fn get_mut(&mut self) -> &mut M {
        &mut self.make
    }

    /// The make service; the connection is dropped and the watch shows
    /// `Closed`.
    pub fn into_inner(self) -> M {
        self.make
    }

    /// The target this service connects to.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// For the `Shared` task, which polls with no request in hand: after an
    /// idle close `poll_ready` waits for [`resume`](Self::resume) rather
    /// than dialling, and the wait timeout is the handle's to apply, per
    /// request (returned).
    pub(crate) fn run_by_task(&mut self) -> Option<std::time::Duration> {
        self.machine.run_by_task()
    }

    /// Makes this service one connection of a pool: its updates refresh
    /// the pool's watch, and its first redials are spread apart from the
    /// other connections'.
    pub(crate) fn join_pool(
        &mut self,
        pool: &std::sync::Arc<crate::watch::Aggregate>,
        spread: crate::backoff::Spread,
    ) {
        self.machine.join_pool(pool, spread);
    }

    /// Idle after an idle close (or a loss while idle), until a request
    /// comes.
    pub(crate) fn is_dormant(&self) -> bool {
        self.machine.is_dormant()
    }

    /// A request has come: the next `poll_ready` may connect.
    pub(crate) fn resume(&mut self) {
        self.machine.resume();
    }
}

impl<M, T, S, Req> Service<Req> for Reconnect<M, T>
where
    M: Service<T, Response = S>,
    M::Error: Into<BoxError>,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    T: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(ready) = self.machine.poll_steady(cx) {
            return ready;
        }
        self.machine.poll_slow(cx, &mut self.make, &self.target)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.machine.call(req)
    }
}

impl<M, T> fmt::Debug for Reconnect<M, T>
where
    M: Service<T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.machine.fmt(f)
    }
}
