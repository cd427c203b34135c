use std::{error::Error, fmt, sync::Arc, time::Duration};

use tower::{Layer, Service};

use crate::{error::ConfigError, Backoff, Reconnect};

pub(crate) type Classifier = dyn Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync;

/// Settings shared by every service a layer builds.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) wait_for_ready: bool,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) classifier: Option<Arc<Classifier>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ZeroConnectTimeout);
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::ZeroMaxAttempts);
        }
        self.backoff.validate()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: ReconnectLayer::<()>::DEFAULT_CONNECT_TIMEOUT,
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

impl<T> ReconnectLayer<T> {
    /// The default connect timeout, the seed's: 30 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// healthy handshake you expect; gRPC uses 20 s, the seed 30 s.
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

    /// Checks the settings, returning the layer or the first rule broken.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redial::{error::ConfigError, ReconnectLayer};
    ///
    /// let err = ReconnectLayer::new(()).connect_timeout(Duration::ZERO).validate().unwrap_err();
    /// assert_eq!(err, ConfigError::ZeroConnectTimeout);
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
}

impl<M: Service<T>, T: Clone> Layer<M> for ReconnectLayer<T> {
    type Service = Reconnect<M, T>;

    /// # Panics
    ///
    /// If the settings are invalid (see [`validate`](Self::validate)).
    #[track_caller]
    fn layer(&self, make: M) -> Self::Service {
        Reconnect::with_config(make, self.target.clone(), self.config.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for ReconnectLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectLayer")
            .field("target", &self.target)
            .field("config", &self.config)
            .finish()
    }
}
