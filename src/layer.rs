use std::{borrow::Cow, error::Error, fmt, sync::Arc, time::Duration};

use tower::{Layer, Service};

use crate::{
    classify::Classifier, error::ConfigError, redact::Redacted, shared::SharedLayer, Backoff,
    Reconnect,
};

/// Settings shared by every service a layer builds.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) wait_for_ready: bool,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) classifier: Option<Arc<Classifier>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ConnectTimeoutNotPositive);
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::MaxAttemptsNotPositive);
        }
        self.backoff.validate()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            connect_timeout: ReconnectLayer::DEFAULT_CONNECT_TIMEOUT,
            backoff: Backoff::default(),
            wait_for_ready: false,
            max_attempts: None,
            classifier: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff", &self.backoff)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("max_attempts", &self.max_attempts)
            .field("disconnect_on", &self.classifier.is_some())
            .finish()
    }
}

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
        self.config.validate()?;
        Ok(self)
    }

    /// The target every service built by this layer connects to.
    pub fn target(&self) -> &T {
        &self.target
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
