use std::{borrow::Cow, error::Error, fmt, sync::Arc, time::Duration};

use tower::{Layer, Service};

use crate::{
    config::Config, error::ConfigError, pool::PoolLayer, redact::Redacted, shared::SharedLayer,
    Backoff, Reconnect,
};

/// Builds [`Reconnect`] services: holds the target to connect to and the
/// settings.
///
/// Setters take and return the layer, so it chains inside
/// [`tower::ServiceBuilder`]. Settings are checked when a service is built;
/// call [`validate`](Self::validate) to get the error as a value instead.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use redial::{Backoff, ReconnectLayer};
///
/// let layer = ReconnectLayer::new("127.0.0.1:50051")
///     .connect_timeout(Duration::from_secs(5))
///     .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)))
///     .wait_for_ready(true)
///     .validate()
///     .expect("valid settings");
/// # let _ = layer;
/// ```
#[must_use]
#[derive(Clone)]
pub struct ReconnectLayer<T> {
    target: T,
    config: Config,
}

// ===== impl ReconnectLayer =====

impl ReconnectLayer<()> {
    /// The default connect timeout: 30 s, as in Perl's
    /// `Message::Passing::Role::ConnectionManager`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redial::ReconnectLayer;
    ///
    /// assert_eq!(ReconnectLayer::DEFAULT_CONNECT_TIMEOUT, Duration::from_secs(30));
    /// ```
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
}

impl<T> ReconnectLayer<T> {
    /// A layer that connects to `target`, with the defaults: 30 s connect
    /// timeout, [`Backoff::default()`], fail fast while disconnected, retry
    /// forever.
    pub fn new(target: T) -> Self {
        Self {
            target,
            config: Config::default(),
        }
    }

    /// Sets the bound on each connect attempt: waiting for the make service
    /// to be ready and its whole future (TCP, TLS, handshake). An attempt
    /// that runs out fails with [`ConnectTimeout`](crate::error::ConnectTimeout).
    ///
    /// # Choosing a connect timeout
    ///
    /// It caps how long a request waits for the first connection and how
    /// long a black-holed peer holds an attempt. Set it above the slowest
    /// healthy handshake you expect; gRPC uses 20 s, Perl's
    /// `ConnectionManager` 30 s.
    ///
    /// Must be greater than zero. Default is 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets the delay policy between attempts.
    ///
    /// Default is [`Backoff::default()`]: 2 s, ×1.6, up to 120 s, ±20 %.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Sets what a request does while the service is
    /// [`Disconnected`](crate::Phase::Disconnected): with `false`,
    /// `poll_ready` is ready and `call` fails at once with
    /// [`Unavailable`](crate::error::Unavailable), without dialling; with
    /// `true`, `poll_ready` stays `Pending` until connected (the mode to use
    /// under `tower::balance`, so a dead endpoint is skipped, not failed).
    ///
    /// Default is `false` (fail fast).
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.config.wait_for_ready = wait;
        self
    }

    /// Bounds how long a request waits for a connection: one that has
    /// waited `timeout` fails with [`Unavailable`](crate::error::Unavailable)
    /// and is never sent. The error's [`source()`](std::error::Error::source)
    /// is the last connect error, and its
    /// [`waited()`](crate::error::Unavailable::waited) is `timeout`.
    ///
    /// Requests wait while `Disconnected` in
    /// [wait-for-ready](Self::wait_for_ready) mode, which is what this is
    /// for: without it they wait for as long as the peer stays away. In
    /// either mode they also wait for the first attempt, for the reconnect
    /// after a healthy connection was lost and for the one after an
    /// [idle close](Self::idle_timeout); the connect timeout bounds those
    /// already, and this bounds them further when it is shorter. A timed-out
    /// wait answers as fail-fast mode does.
    ///
    /// - On [`Reconnect`](crate::Reconnect) the wait is `poll_ready`'s: it
    ///   starts at the first `Pending` while not connected and ends when
    ///   `poll_ready` answers. After `timeout`, `poll_ready` answers
    ///   `Ready(Ok)` and `call` fails with `Unavailable` without sending; the
    ///   next `poll_ready` starts a new wait. A connected connection's own
    ///   `Pending` (HTTP/1 busy with a request) is not a wait for a
    ///   connection and is not bounded.
    /// - On [`Shared`](crate::Shared) the wait is the request's time in the
    ///   queue, from `call` until the task hands it to the connection,
    ///   whatever it waits for there (a connection, or room on a busy one).
    ///   Its response future fails at `timeout` and the task drops the
    ///   request unsent. A request the connection handed back to be
    ///   [sent again](crate::error::Resend) is still within the same wait,
    ///   counted from `call`: queued again, it fails at `timeout` after the
    ///   call, or at once if that has passed, and is not sent a second time.
    ///
    /// Under `tower::balance`, leave it unset: a wait that ran out makes a
    /// dead endpoint ready, and the balancer would send to it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::{error::Error, io, time::Duration};
    /// use redial::{error::Unavailable, ReconnectLayer};
    /// use tower::{service_fn, util::BoxService, Layer, Service, ServiceExt};
    ///
    /// // A peer that refuses every dial.
    /// let make = service_fn(|_: ()| async {
    ///     Err::<BoxService<u32, u32, io::Error>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    /// });
    /// let mut svc = ReconnectLayer::new(())
    ///     .wait_for_ready(true)
    ///     .wait_timeout(Duration::from_secs(5))
    ///     .layer(make);
    /// let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    /// let unavailable = err.downcast_ref::<Unavailable>().unwrap();
    /// assert_eq!(unavailable.waited(), Some(Duration::from_secs(5)));
    /// assert!(unavailable.source().is_some()); // the refused dial
    /// # }
    /// ```
    ///
    /// Must be greater than zero. Default is none: a request waits as long
    /// as the service keeps trying.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.config.wait_timeout = Some(timeout);
        self
    }

    /// Closes the connection once no request has been in flight on it for
    /// `timeout`, and goes back to [`Idle`](crate::Phase::Idle): nothing
    /// dials until the next request, which connects as the first one did
    /// (it waits for the attempt, never fails because of the close).
    ///
    /// - **In flight** means from `call` until the response future resolves
    ///   or is dropped. For HTTP that is until the response head arrives. A
    ///   body still streaming after that is not lost: `redial::http`'s
    ///   connections let go of the connection without cutting it, and hyper
    ///   reads every body to its end before it closes the socket. Until
    ///   then the old socket stays open beside any new one, and a response
    ///   held unread keeps an HTTP/2 socket open. The idle clock starts when the
    ///   connection is made and again whenever the last request in flight
    ///   ends. A connection with a response pending is never closed for
    ///   idleness, however long the response takes.
    /// - **The deadline** is the moment the connection has been idle for
    ///   `timeout`. A request that comes at or after it does not get the old
    ///   connection: the connection is closed and the request waits for a
    ///   new one. A request that comes before it keeps the connection.
    /// - **Not a failure.** An idle close publishes `Idle`, not
    ///   `Disconnected`; it counts in
    ///   [`idle_closes`](crate::ConnectionState::idle_closes), not in
    ///   `disconnects`, leaves no `last_error`, and starts the backoff
    ///   schedule afresh.
    /// - **The server closes first.** A connection that the server closes
    ///   while nothing is in flight (its own idle timeout) is a loss,
    ///   counted in `disconnects` with the cause in `last_error`; with this
    ///   setting it also leaves the service `Idle`, so the next request
    ///   connects and nothing dials before it. A request waiting when it
    ///   happens (queued in a [`Shared`](crate::Shared) handle, or polling a
    ///   `Reconnect`) reconnects at once. Without this setting an eager
    ///   handle reconnects at once, as after any loss. A connection lost
    ///   with a request in flight, or before it proved itself, is handled as
    ///   without this setting.
    /// - **Who closes it.** A `Shared` handle's task closes it on time (its
    ///   timer wakes it), and after that waits for a request, as a
    ///   [`spawn_lazy`](crate::Reconnect::spawn_lazy) handle does. A plain
    ///   [`Reconnect`](crate::Reconnect) acts only in `poll_ready`, which
    ///   means a request wants to go: the first `poll_ready` at or after the
    ///   deadline closes the stale connection and connects anew in the same
    ///   call. Its timer wakes the task that drives it at the deadline; a
    ///   task that polls it with no request in hand would reconnect at
    ///   once, so for that use `Shared`, which waits for a request.
    ///
    /// Set it below the server's own idle timeout, so that redial closes
    /// first and never sends on a connection the server is closing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redial::ReconnectLayer;
    ///
    /// // The server closes connections idle for 60 s: close them at 50 s.
    /// let layer = ReconnectLayer::new("10.0.0.7:5432").idle_timeout(Duration::from_secs(50));
    /// # let _ = layer;
    /// ```
    ///
    /// It costs a request a reference count taken and given back and a
    /// clock read when it ends, and `poll_ready` a clock read; no
    /// allocation. Without it, nothing.
    ///
    /// Must be greater than zero. Default is none: a connection stays open
    /// however long it is idle.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Replaces a connection once it is `age` old (spread by ±10 % per
    /// connection, so that connections made together are not replaced
    /// together): a new connection is made first, while the old one goes on
    /// serving, and only once the new one is up does it take the requests;
    /// the old one is then let go, and what it has in flight finishes on it
    /// (`redial::http`'s connections close the socket after the last
    /// response). No request waits or fails for it.
    ///
    /// This is how a client keeps up with a service that scales out: a
    /// long-lived connection stays on the replica it was first given, while
    /// a new one is balanced afresh (by DNS, a load balancer, or a pool's
    /// discovery). gRPC servers force the same with `MaxConnectionAge`.
    ///
    /// - **Counted.** The watch stays `Connected` through it; a replacement
    ///   counts in `connects` and in
    ///   [`replaced`](crate::ConnectionState::replaced), never in
    ///   `disconnects`, and leaves no `last_error`.
    /// - **When the new connection cannot be made**, the old one is kept,
    ///   the failure is logged at warn level (at debug after the first in a
    ///   row), and the replacement is tried again on the backoff schedule,
    ///   counted from this attempt's start. Losing the old connection in
    ///   the meantime drops the replacement attempt and reconnects as any
    ///   loss does.
    /// - **Who acts.** A [`Shared`](crate::Shared) handle's task does, on
    ///   time. A plain [`Reconnect`](crate::Reconnect) acts in `poll_ready`,
    ///   as for any attempt: its timer wakes the task that drives it.
    /// - **With an idle timeout**, an idle close ends the connection and
    ///   any replacement under way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redial::ReconnectLayer;
    ///
    /// // Move to a fresh connection every 5 minutes or so.
    /// let layer = ReconnectLayer::new("10.0.0.7:443")
    ///     .max_connection_age(Duration::from_secs(300));
    /// # let _ = layer;
    /// ```
    ///
    /// Must be greater than zero. Default is none: a healthy connection is
    /// kept for as long as it lasts.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.config.max_connection_age = Some(age);
        self
    }

    /// Sets how many attempts in a row may fail before the service gives up
    /// and closes; `poll_ready` then returns
    /// [`GaveUp`](crate::error::GaveUp). The count starts afresh after a
    /// healthy connection.
    ///
    /// Must be at least 1. Default is unlimited.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = Some(attempts);
        self
    }

    /// Sets which response errors mean the connection is dead. When a
    /// response future fails with an error for which `fatal` returns `true`,
    /// the connection is dropped and the service reconnects, as if its
    /// `poll_ready` had failed. The error is still returned to the caller.
    ///
    /// ```
    /// use redial::ReconnectLayer;
    ///
    /// let layer = ReconnectLayer::new("db:5432")
    ///     .disconnect_on(|err| err.is::<std::io::Error>());
    /// # let _ = layer;
    /// ```
    ///
    /// Default is none: response errors never close the connection.
    pub fn disconnect_on<F>(mut self, fatal: F) -> Self
    where
        F: Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync + 'static,
    {
        self.config.classifier = Some(Arc::new(fatal));
        self
    }

    /// Sets the name this connection goes by in logs: every event redial logs
    /// for it carries `name = …`, so that a process with many connections
    /// can tell them apart. The target itself is never logged, since it may
    /// carry credentials and redial asks no `Debug` of it.
    ///
    /// ```
    /// use redial::ReconnectLayer;
    ///
    /// let layer = ReconnectLayer::new("10.0.0.7:5432").name("orders-db");
    /// # let _ = layer;
    /// ```
    ///
    /// Default is none: events carry no name.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Names the connection after its target, as the target's `Debug`
    /// prints it with any userinfo (`user:token@`) replaced by `***`: the
    /// way to see the target in logs without asking every target for
    /// `Debug`.
    ///
    /// ```
    /// use redial::ReconnectLayer;
    ///
    /// let layer = ReconnectLayer::new("https://app:s3cret@db.internal:5432").name_from_target();
    /// assert!(format!("{layer:?}").contains("https://***@db.internal:5432"));
    /// assert!(!format!("{layer:?}").contains("s3cret"));
    /// ```
    pub fn name_from_target(self) -> Self
    where
        T: fmt::Debug,
    {
        let name = format!("{:?}", Redacted(&self.target));
        // A string target's `Debug` quotes it; the name needs no quotes.
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(unquoted) => unquoted.to_owned(),
            None => name,
        };
        self.name(name)
    }

    /// Makes this layer build the clone-able, eager [`Shared`](crate::Shared)
    /// handle with a queue of `bound` requests, as
    /// [`Reconnect::spawn`](crate::Reconnect::spawn) does: the form to put in
    /// a [`tower::ServiceBuilder`], as `BufferLayer` is for `Buffer`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use std::convert::Infallible;
    /// use redial::ReconnectLayer;
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    ///
    /// let connector = service_fn(|_: ()| async {
    ///     Ok::<_, Infallible>(service_fn(|n: u32| async move { Ok::<_, Infallible>(n + 1) }))
    /// });
    /// let client = ServiceBuilder::new()
    ///     .layer(ReconnectLayer::new(()).shared(1024))
    ///     .service(connector);
    /// assert_eq!(client.clone().oneshot(1).await?, 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Building the service panics if `bound` is 0, if the settings are
    /// invalid, or outside a tokio runtime.
    pub fn shared<Req>(self, bound: usize) -> SharedLayer<T, Req> {
        SharedLayer::new(self, bound)
    }

    /// Makes this layer build a [`Pool`](crate::Pool) of `size` connections
    /// to the target, each a [`Shared`](crate::Shared) connection with these
    /// settings that reconnects on its own: a clone-able service that sends
    /// each request to one of the connections that are up, and one
    /// [`ConnectionWatch`](crate::ConnectionWatch) over all of them. The
    /// make service must be `Clone`: each connection gets a clone.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// use std::convert::Infallible;
    /// use redial::{Phase, ReconnectLayer};
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    ///
    /// let connector = service_fn(|_: ()| async {
    ///     Ok::<_, Infallible>(service_fn(|n: u32| async move { Ok::<_, Infallible>(n + 1) }))
    /// });
    /// let client = ServiceBuilder::new()
    ///     .layer(ReconnectLayer::new(()).pool(4).bound(256))
    ///     .service(connector);
    /// assert_eq!(client.clone().oneshot(1).await?, 2);
    ///
    /// // One watch over the four, and each one's own.
    /// assert_eq!(client.watch().phase(), Phase::Connected);
    /// assert_eq!(client.connections().len(), 4);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A `size` of 0 is refused (see [`PoolLayer::validate`](crate::PoolLayer::validate));
    /// building the service panics then, if the settings are invalid, or
    /// outside a tokio runtime.
    pub fn pool<Req>(self, size: usize) -> PoolLayer<T, Req> {
        PoolLayer::new(self, size)
    }

    /// Checks the settings, returning the layer or the first rule broken.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redial::{error::ConfigError, ReconnectLayer};
    ///
    /// let err = ReconnectLayer::new(()).connect_timeout(Duration::ZERO).validate().unwrap_err();
    /// assert_eq!(err, ConfigError::ConnectTimeoutNotPositive);
    /// assert_eq!(err.to_string(), "connect timeout must be greater than zero");
    /// ```
    pub fn validate(self) -> Result<Self, ConfigError> {
        self.check()?;
        Ok(self)
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.config.validate()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The target every service built by this layer connects to.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// These settings, for another target.
    pub(crate) fn retarget<U>(&self, target: U) -> ReconnectLayer<U> {
        ReconnectLayer {
            target,
            config: self.config.clone(),
        }
    }

    #[track_caller]
    pub(crate) fn build<M: Service<T>>(&self, make: M) -> Reconnect<M, T>
    where
        T: Clone,
    {
        Reconnect::with_config(make, self.target.clone(), self.config.clone())
    }
}

impl<M: Service<T>, T: Clone> Layer<M> for ReconnectLayer<T> {
    type Service = Reconnect<M, T>;

    /// # Panics
    ///
    /// If the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    fn layer(&self, make: M) -> Self::Service {
        self.build(make)
    }
}

impl<T: fmt::Debug> fmt::Debug for ReconnectLayer<T> {
    /// Shows the target with any userinfo (`user:token@`) replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectLayer")
            .field("target", &Redacted(&self.target))
            .field("config", &self.config)
            .finish()
    }
}
