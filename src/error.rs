//! Error types.
//!
//! Every error a [`Reconnect`](crate::Reconnect) returns is a
//! [`tower::BoxError`]; the failures that `redial` itself produces are the
//! small structs below, so a caller can tell them apart with
//! [`downcast_ref`](std::error::Error#method.downcast_ref) or `is::<…>()`:
//!
//! ```
//! use redial::error::Unavailable;
//!
//! fn is_retryable_later(err: &tower::BoxError) -> bool {
//!     err.is::<Unavailable>()
//! }
//! # let _ = is_retryable_later;
//! ```
//!
//! Each keeps its cause in [`source()`](std::error::Error::source), so the
//! whole chain (`connection unavailable` → `failed to connect` → `connection
//! refused`) can be printed by any error reporter. Errors returned by the
//! inner service's response futures are passed through unchanged.

use std::{error::Error, fmt, sync::Arc, time::Duration};

use tokio::time::Instant;

pub use crate::resend::Resend;

/// A cause shared between the watch, the state machine and the errors handed
/// to callers, so one failure is allocated once however often it is reported.
pub(crate) type Cause = Arc<dyn Error + Send + Sync + 'static>;

pub(crate) fn cause(err: impl Into<tower::BoxError>) -> Cause {
    Arc::from(err.into())
}

fn source_of(cause: &Option<Cause>) -> Option<&(dyn Error + 'static)> {
    cause.as_ref().map(|c| &**c as &(dyn Error + 'static))
}

/// A connect attempt did not finish within the connect timeout.
///
/// The timeout covers the whole attempt: waiting for the make service to be
/// ready and the whole make future (TCP, TLS, protocol handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimeout {
    timeout: Duration,
}

impl ConnectTimeout {
    pub(crate) const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The connect timeout that ran out.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect timed out after {:?}", self.timeout)
    }
}

impl Error for ConnectTimeout {}

/// The make service failed to connect: its `poll_ready` or its future
/// returned an error, kept in [`source()`](Error::source).
#[derive(Debug, Clone)]
pub struct ConnectFailed {
    source: Cause,
}

impl ConnectFailed {
    pub(crate) fn new(source: impl Into<tower::BoxError>) -> Self {
        Self {
            source: cause(source),
        }
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to connect")
    }
}

impl Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// A live connection went away.
///
/// Its [`source()`](Error::source) is the error the connection reported: the
/// inner service's `poll_ready` error, or a response error that the
/// configured [classifier](crate::ReconnectLayer::disconnect_on) called fatal.
/// It has no source when the owner called
/// [`mark_disconnected`](crate::Reconnect::mark_disconnected).
#[derive(Debug, Clone)]
pub struct ConnectionLost {
    source: Option<Cause>,
}

impl ConnectionLost {
    pub(crate) fn new(source: Option<Cause>) -> Self {
        Self { source }
    }
}

impl fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Some(_) => f.write_str("connection lost"),
            None => f.write_str("connection marked disconnected"),
        }
    }
}

impl Error for ConnectionLost {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        source_of(&self.source)
    }
}

/// The request was not sent: there is no connection right now and the
/// service fails fast (the default; see
/// [`wait_for_ready`](crate::ReconnectLayer::wait_for_ready)), or the
/// request waited [`wait_timeout`](crate::ReconnectLayer::wait_timeout) for
/// one ([`waited`](Unavailable::waited) says so).
///
/// It describes the state at the moment of the call (or of the end of the
/// wait): the last cause is in [`source()`](Error::source) and
/// [`retry_at`](Unavailable::retry_at) tells when the next attempt starts.
/// The request was never written to any connection, so it is always safe to
/// send again.
#[derive(Debug, Clone)]
pub struct Unavailable {
    cause: Option<Cause>,
    attempt: u32,
    retry_at: Option<Instant>,
    retry_in: Option<Duration>,
    waited: Option<Duration>,
}

impl Unavailable {
    pub(crate) fn new(cause: Option<Cause>, attempt: u32, retry_at: Option<Instant>) -> Self {
        let retry_in = retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        Self {
            cause,
            attempt,
            retry_at,
            retry_in,
            waited: None,
        }
    }

    /// The same error, for a request that waited `waited` for a connection.
    pub(crate) fn after_waiting(self, waited: Duration) -> Self {
        Self {
            waited: Some(waited),
            ..self
        }
    }

    /// The [`wait_timeout`](crate::ReconnectLayer::wait_timeout) that ran
    /// out, when the request waited for a connection that did not come;
    /// `None` when it failed fast.
    pub const fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// When the next connect attempt starts, or `None` when one is running
    /// at the moment of the call.
    pub const fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The number of the current connect attempt, counting from 1 since the
    /// last healthy connection: the one running when
    /// [`retry_at`](Self::retry_at) is `None`, else the last one, which
    /// failed. The cause in `source()` is always the latest failure.
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection unavailable")?;
        if let Some(waited) = self.waited {
            write!(f, " after waiting {waited:?}")?;
        }
        match self.retry_in {
            Some(d) => write!(f, ", next attempt in {d:.1?}"),
            None => f.write_str(", reconnecting now"),
        }
    }
}

impl Error for Unavailable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        source_of(&self.cause)
    }
}

/// The service stopped reconnecting: `max_attempts` attempts in a row failed,
/// or the backoff schedule ran out of delays.
///
/// This is what `poll_ready` returns once the service gave up; like every
/// `poll_ready` error in tower it is final. The last cause is in
/// [`source()`](Error::source).
#[derive(Debug, Clone)]
pub struct GaveUp {
    attempts: u32,
    cause: Option<Cause>,
}

impl GaveUp {
    pub(crate) fn new(attempts: u32, cause: Option<Cause>) -> Self {
        Self { attempts, cause }
    }

    /// How many connect attempts were made in a row before giving up.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gave up reconnecting after {} attempts", self.attempts)
    }
}

impl Error for GaveUp {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        source_of(&self.cause)
    }
}

/// The connection is closed for good: the service was dropped or gave up.
///
/// [`ConnectionWatch::connected`](crate::ConnectionWatch::connected) returns
/// it instead of waiting forever. When the service gave up, the [`GaveUp`]
/// error is the [`source()`](Error::source).
#[derive(Debug, Clone)]
pub struct Closed {
    cause: Option<Cause>,
}

impl Closed {
    pub(crate) fn new(cause: Option<Cause>) -> Self {
        Self { cause }
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed")
    }
}

impl Error for Closed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        source_of(&self.cause)
    }
}

/// `call` was made without a preceding `poll_ready` that returned
/// `Ready(Ok(()))`.
///
/// tower's contract requires readiness before each call; `Reconnect` answers
/// a breach with this error instead of panicking, as `tower::buffer` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady(());

impl NotReady {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call made before poll_ready returned Ready(Ok(()))")
    }
}

impl Error for NotReady {}

/// A configuration that `redial` refuses, found when the configuration is
/// built rather than in the middle of an outage.
///
/// Returned by [`ReconnectLayer::validate`](crate::ReconnectLayer::validate),
/// [`PoolLayer::validate`](crate::PoolLayer::validate)
/// and [`Backoff::validate`](crate::Backoff::validate); building a service
/// from an invalid configuration panics with the same message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The connect timeout is zero, so no attempt could ever succeed.
    ConnectTimeoutNotPositive,
    /// `max_attempts` is zero, so the service could never connect.
    MaxAttemptsNotPositive,
    /// A backoff delay (the constant delay or the initial one) is zero,
    /// which would redial in a loop.
    DelayNotPositive,
    /// The backoff's initial delay is longer than its maximum delay.
    InitialAboveMax {
        /// The initial delay given.
        initial: Duration,
        /// The maximum delay given.
        max: Duration,
    },
    /// The backoff multiplier is below 1.0 or not a finite number.
    MultiplierBelowOne(f64),
    /// The backoff jitter is outside `0.0..=1.0`.
    JitterOutOfRange(f64),
    /// The idle timeout is zero, which would close every connection as soon
    /// as it is made.
    IdleTimeoutNotPositive,
    /// The wait timeout is zero, which would fail every request that has to
    /// wait for a connection at once.
    WaitTimeoutNotPositive,
    /// The maximum connection age is zero, which would replace every
    /// connection as soon as it is made.
    MaxConnectionAgeNotPositive,
    /// A [pool](crate::ReconnectLayer::pool) of no connections, which
    /// could serve no request.
    PoolSizeNotPositive,
    /// A queue bound of zero, which would hold no request.
    QueueBoundNotPositive,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectTimeoutNotPositive => {
                f.write_str("connect timeout must be greater than zero")
            }
            Self::MaxAttemptsNotPositive => f.write_str("max_attempts must be at least 1"),
            Self::DelayNotPositive => {
                f.write_str("backoff delay must be greater than zero (zero would redial in a loop)")
            }
            Self::InitialAboveMax { initial, max } => write!(
                f,
                "backoff initial delay ({initial:?}) must not exceed its max delay ({max:?})"
            ),
            Self::MultiplierBelowOne(m) => {
                write!(
                    f,
                    "backoff multiplier must be a finite number >= 1.0, got {m}"
                )
            }
            Self::JitterOutOfRange(j) => {
                write!(f, "backoff jitter must be within 0.0..=1.0, got {j}")
            }
            Self::IdleTimeoutNotPositive => f.write_str("idle timeout must be greater than zero"),
            Self::WaitTimeoutNotPositive => f.write_str("wait timeout must be greater than zero"),
            Self::MaxConnectionAgeNotPositive => {
                f.write_str("maximum connection age must be greater than zero")
            }
            Self::PoolSizeNotPositive => f.write_str("a pool must have at least 1 connection"),
            Self::QueueBoundNotPositive => f.write_str("the queue bound must be at least 1"),
        }
    }
}

impl Error for ConfigError {}
